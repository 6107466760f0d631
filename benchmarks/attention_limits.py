"""Why CBAM still costs what it costs here, and how little it could cost: the profile and the memory-pass floor.

For one size of `bench_attention.py` in one mode (default: resnet20 and resnet18 in the mode `cbamlab train`
picks), this measures, interleaved in one process:

1. **Each CBAM input shape's primitives** against one element-wise pass over the same map (`x * y`: two reads
   and a write): the pools over H, W (average; maximum with its arg-max), the pools over channels (maximum with
   its arg-max; mean), the two broadcast scalings, and the fast CBAM's own forward + backward at that shape.
   Every primitive that takes many element-wise passes' time is a place where the kernels, not the math, set
   the cost.
2. **The floors**: the memory-pass floor: the math needs about `TOUCHES` full-size reads or writes of the map per CBAM
   (forward: the H, W pools read F, the channel pools read F again (G = F * Mc is not stored), the output
   reads F and writes; backward: dMs reads dout and F, dMc reads them again, dF reads them and writes). At one
   element-wise pass per 3 touches, the floor of a model is its plain step plus that time for every CBAM
   block; the table puts the floor's step ratio beside the measured one. And the fixed cost: the fast CBAM's
   forward + backward on a batch of 2 (its operator calls, Python and dispatch, with almost no data),
   which with the channel max kernel and the passes is the floor of an unfused (eager) CBAM.
3. **The operator profile** of one training step, CBAM net minus plain net (torch.profiler, self CPU time per
   operator name), largest differences first.

    python benchmarks/attention_limits.py [--only resnet20,resnet18] [--mode bf16_channels_last]
        [--repeats 7] [--threads N] [--out DIR]

Run it alone on an idle machine, as bench_attention.py.
"""
from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from bench_attention import MODES, SIZES, Case, header as bench_header, load_average  # same folder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cbamlab._io import write_text  # noqa: E402
from cbamlab.models.attention import CBAM  # noqa: E402

TOUCHES = 11  # full-size reads + writes the CBAM math needs, forward (4) + backward (7); see the docstring


def _median_ms(fn, repeats: int, inner: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return 1000 * statistics.median(times)


def cbam_shapes(case: Case) -> collections.Counter:
    """{(B, C, H, W): number of CBAM modules that see that input} in one forward of the case's batch."""
    shapes = collections.Counter()
    hooks = [m.register_forward_pre_hook(lambda _m, args: shapes.update([tuple(args[0].shape)]))
             for m in case.model.modules() if isinstance(m, CBAM)]
    with torch.no_grad(), case._autocast():
        case.model(case.x)
    for h in hooks:
        h.remove()
    return shapes


def primitives(shape, case: Case, cbam: CBAM, repeats: int) -> dict:
    """Milliseconds of each primitive on a map of `shape` in the case's layout and dtype."""
    fmt = torch.channels_last if case.channels_last else torch.contiguous_format
    dtype = case.dtype or torch.float32
    x = torch.randn(shape).to(dtype).contiguous(memory_format=fmt)
    y = torch.randn(shape).to(dtype).contiguous(memory_format=fmt)
    mc = torch.rand(shape[0], shape[1], 1, 1, dtype=dtype)
    ms = torch.rand(shape[0], 1, *shape[2:], dtype=dtype)
    def fwd_bwd(batch):
        xg = x[:batch].detach().clone(memory_format=fmt).requires_grad_()
        dout = torch.randn_like(xg)

        def run():
            with case._autocast():
                out = cbam(xg)
            out.backward(dout)
        return run

    cases = {
        "pass (x * y)": lambda: x * y,
        "HW avg pool": lambda: F.adaptive_avg_pool2d(x, 1),
        "HW max pool + index": lambda: F.adaptive_max_pool2d(x, 1, return_indices=True),
        "channel max + index": lambda: x.max(dim=1, keepdim=True),
        "channel mean": lambda: x.mean(dim=1, keepdim=True),
        "x * Mc": lambda: x * mc,
        "x * Ms": lambda: x * ms,
        "fast CBAM fwd+bwd": fwd_bwd(shape[0]),
        "the same at batch 2": fwd_bwd(2),
    }
    for fn in cases.values():
        fn()  # warm
    times = {k: [] for k in cases}
    for _ in range(repeats):  # interleaved
        for k, fn in cases.items():
            times[k].append(_median_ms(fn, 1))
    return {k: statistics.median(v) for k, v in times.items()}


def operator_profile(plain: Case, cbam: Case, steps: int, top: int) -> list[tuple[str, float, float]]:
    """[(operator, plain ms/step, CBAM ms/step)] by the largest CBAM-minus-plain self CPU time."""
    per_op = []
    for case in (plain, cbam):
        case.model.train()
        for _ in range(2):
            case.step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                case.step()
        per_op.append({e.key: e.self_cpu_time_total / 1000 / steps for e in prof.key_averages()})
    names = set(per_op[0]) | set(per_op[1])
    rows = [(n, per_op[0].get(n, 0.0), per_op[1].get(n, 0.0)) for n in names]
    rows.sort(key=lambda r: r[2] - r[1], reverse=True)
    return rows[:top]


def run_size(size: str, args) -> list[str]:
    device = torch.device("cpu")
    plain, fast = Case(size, args.mode, "plain", args, device), Case(size, args.mode, "cbam_fast", args, device)
    for case in (plain, fast):
        for _ in range(2):
            case.step()
    for _ in range(args.repeats):
        for case in (plain, fast):
            case.time_training(args.steps)
    plain_ms = 1000 * statistics.median(plain.train_s)
    fast_ms = 1000 * statistics.median(fast.train_s)
    shapes = cbam_shapes(fast)
    cbam = next(m for m in fast.model.modules() if isinstance(m, CBAM))  # a module to time at each shape
    lines = [f"## {size}, {args.mode}", "",
             f"Training step: plain {plain_ms:.1f} ms, CBAM (fast) {fast_ms:.1f} ms: x{fast_ms / plain_ms:.2f} "
             f"(median of {args.repeats} interleaved repeats of {args.steps} steps).", "",
             "Milliseconds per call (one training batch); in brackets: element-wise passes' worth.", "",
             "| CBAM input (B, C, H, W) | blocks | pass (x * y) | HW avg pool | HW max + index | channel max + index "
             "| channel mean | x * Mc | x * Ms | fast CBAM fwd+bwd | the same at batch 2 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    floor_ms = fixed_ms = max_ms = 0.0
    for shape, count in sorted(shapes.items(), key=lambda kv: -kv[0][2]):
        t = primitives(shape, fast, cbam.__class__(shape[1]).train(), args.repeats)
        p = t["pass (x * y)"]
        floor_ms += count * TOUCHES / 3 * p
        fixed_ms += count * t["the same at batch 2"]
        max_ms += count * t["channel max + index"]
        cells = " | ".join(f"{v:.2f} ({v / p:.1f})" for k, v in t.items() if k != "pass (x * y)")
        lines.append(f"| {tuple(shape)} | {count} | {p:.2f} | {cells} |")
    lines += ["", f"Memory-pass floor ({TOUCHES} touches per CBAM at the measured pass speed): "
              f"{floor_ms:.1f} ms per step over the plain net's, a step ratio of **x{(plain_ms + floor_ms) / plain_ms:.2f}** "
              f"against the measured **x{fast_ms / plain_ms:.2f}**.", "",
              f"Fixed cost (the fast CBAM's operators at batch 2, where the map is tiny): {fixed_ms:.1f} ms per step, "
              f"x{(plain_ms + fixed_ms) / plain_ms:.2f} on its own; with the channel max kernel ({max_ms:.1f} ms) and "
              f"the memory passes: x{(plain_ms + fixed_ms + max_ms + floor_ms) / plain_ms:.2f}. What eager PyTorch "
              "cannot go below without fusing the CBAM into fewer kernels.", "",
              f"Operator profile, self CPU ms per training step ({args.profile_steps} steps profiled), largest "
              "CBAM-minus-plain first:", "", "| operator | plain | CBAM (fast) | difference |", "|---|---:|---:|---:|"]
    for name, a, b in operator_profile(plain, fast, args.profile_steps, args.top):
        lines.append(f"| `{name}` | {a:.2f} | {b:.2f} | {b - a:+.2f} |")
    return lines + [""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="resnet20,resnet18", help=f"sizes, comma-separated ({', '.join(SIZES)})")
    p.add_argument("--mode", default="bf16_channels_last", choices=list(MODES))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--steps", type=int, default=3, help="training steps per timed repeat")
    p.add_argument("--profile-steps", type=int, default=5)
    p.add_argument("--top", type=int, default=12, help="operators in the profile table")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="1 repeat, 1 step, 1 profiled step (smoke tests)")
    p.add_argument("--batch", type=int, default=0, help="override every size's batch (smoke tests)")
    p.add_argument("--image-size", type=int, default=0, help="override every size's H and W (smoke tests)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for attention_limits.md")
    args = p.parse_args(argv)
    sizes = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown or not sizes:
        p.error(f"unknown size {', '.join(unknown) or '(none given)'}; known: {', '.join(SIZES)}")
    if args.quick:
        args.repeats, args.steps, args.profile_steps = 1, 1, 1
    args.latency_iters = 0  # what bench_attention's Case reads
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = load_average()
    device_line = bench_header(args, torch.device("cpu"), load_before)[2]  # device, threads, versions, time
    lines = ["# Attention cost: the profile and the memory-pass floor", "", device_line,
             f"Load average (1 min) {load_before} at the start.", ""]
    for size in sizes:
        lines += run_size(size, args)
        print(f"{size}: done", file=sys.stderr)
    lines.append(f"Load average (1 min) at the end: {load_average()}.")
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    write_text(out / "attention_limits.md", text)
    print(text)
    print(f"written: {out / 'attention_limits.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
