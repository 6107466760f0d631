"""What the native CBAM costs against what it must cost: the memory-pass floor and the profile.

For sizes of `bench_attention.py` in one mode (default: resnet20 and resnet18 in the mode `cbamlab train` picks
here), this measures, interleaved in one process:

1. **Each CBAM input shape**: one element-wise pass over the map (`x * y`: two reads and a write), the native
   CBAM's forward + backward at that shape and at batch 2 (where the map is tiny: the fixed cost of its two
   operator calls, Python and dispatch), and the reference's forward + backward for comparison, each also in
   element-wise passes' worth.
2. **The memory-pass floor**: the math needs about `TOUCHES` full-size reads or writes of the map per CBAM
   (forward: the H, W pools read F, the channel pools read F again (G = F * Mc is not stored), the output
   reads F and writes; backward: dMs reads dout and F, dMc reads them again, dF reads them and writes). At one
   element-wise pass per 3 touches, the floor of a model is its plain step plus that time for every CBAM
   block; the table puts the floor's step ratio beside the native CBAM's measured one.
3. **The operator profile** of one training step, native CBAM net minus plain net (torch.profiler, self CPU
   time per operator name), largest differences first: what else than the two CBAM operators the CBAM costs.

    python benchmarks/attention_limits.py [--only resnet20,resnet18] [--mode default]
        [--repeats 7] [--threads N] [--quick] [--out DIR]

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
from torch.profiler import ProfilerActivity, profile

from bench_attention import MODES, SIZES, Case, default_mode  # same folder
from bench_report import load_average, machine_lines

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cbamlab._io import write_text  # noqa: E402
from cbamlab.models import native  # noqa: E402
from cbamlab.models.attention import CBAM  # noqa: E402

TOUCHES = 11  # full-size reads + writes the CBAM math needs, forward (4) + backward (7); see the docstring
COLUMNS = ("pass (x * y)", "native fwd+bwd", "native at batch 2", "reference fwd+bwd")


def _median_ms(fn, repeats: int, inner: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return 1000 * statistics.median(times)


def cbam_inputs(case: Case) -> tuple[collections.Counter, dict]:
    """{(B, C, H, W): number of CBAM modules that see that input} in one forward of the case's batch, and
    {(B, C, H, W): (dtype, memory format)} of those inputs."""
    shapes, kinds = collections.Counter(), {}

    def seen(_module, args):
        x = args[0]
        shapes.update([tuple(x.shape)])
        cl = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        kinds[tuple(x.shape)] = (x.dtype, torch.channels_last if cl else torch.contiguous_format)

    hooks = [m.register_forward_pre_hook(seen) for m in case.model.modules() if isinstance(m, CBAM)]
    with torch.no_grad(), case._autocast():
        case.model(case.x)
    for h in hooks:
        h.remove()
    return shapes, kinds


def per_shape(shape, kind, case: Case, repeats: int) -> dict:
    """Milliseconds of each column on a map of `shape` in the dtype and layout the net's CBAM sees there."""
    dtype, fmt = kind
    x = torch.randn(shape).to(dtype).contiguous(memory_format=fmt)
    y = torch.randn(shape).to(dtype).contiguous(memory_format=fmt)
    native_cbam = CBAM(shape[1], attn_impl="native").train()
    reference = CBAM(shape[1], attn_impl="reference").train()
    reference.load_state_dict(native_cbam.state_dict())

    def fwd_bwd(cbam, batch):
        xg = x[:batch].detach().clone(memory_format=fmt).requires_grad_()
        dout = torch.randn_like(xg)

        def run():
            with case._autocast():
                out = cbam(xg)
            out.backward(dout)
        return run

    fns = dict(zip(COLUMNS, (lambda: x * y, fwd_bwd(native_cbam, shape[0]), fwd_bwd(native_cbam, 2),
                             fwd_bwd(reference, shape[0]))))
    for fn in fns.values():
        fn()  # warm
    times = {k: [] for k in fns}
    for _ in range(repeats):  # interleaved
        for k, fn in fns.items():
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
    plain, cbam = (Case(size, args.mode, v, args, device) for v in ("plain", "cbam_native"))
    for case in (plain, cbam):
        case.warm(2)
    for _ in range(args.repeats):
        for case in (plain, cbam):
            case.time_training(args.steps)
    plain_ms = 1000 * statistics.median(plain.train_s)
    cbam_ms = 1000 * statistics.median(cbam.train_s)
    shapes, kinds = cbam_inputs(cbam)
    lines = [f"## {size}, {args.mode}", "",
             f"Training step: plain {plain_ms:.1f} ms, CBAM (native) {cbam_ms:.1f} ms: x{cbam_ms / plain_ms:.2f} "
             f"(median of {args.repeats} interleaved repeats of {args.steps} steps).", "",
             "Milliseconds per call (one training batch); in brackets: element-wise passes' worth; the floor is "
             f"{TOUCHES} touches (= {TOUCHES / 3:.1f} passes).", "",
             f"| CBAM input (B, C, H, W) | blocks | dtype, layout | {' | '.join(COLUMNS)} | native / floor |",
             "|---|---:|---|" + "---:|" * (len(COLUMNS) + 1)]
    floor_ms = fixed_ms = 0.0
    for shape, count in sorted(shapes.items(), key=lambda kv: -kv[0][2]):
        t = per_shape(shape, kinds[shape], cbam, args.repeats)
        p = t[COLUMNS[0]]
        floor_ms += count * TOUCHES / 3 * p
        fixed_ms += count * t["native at batch 2"]
        dtype, fmt = kinds[shape]
        cells = " | ".join(f"{t[k]:.2f} ({t[k] / p:.1f})" for k in COLUMNS[1:])
        lines.append(f"| {tuple(shape)} | {count} | {str(dtype).removeprefix('torch.')}, "
                     f"{'channels_last' if fmt == torch.channels_last else 'NCHW'} | {p:.2f} | {cells} | "
                     f"x{t['native fwd+bwd'] / (TOUCHES / 3 * p):.1f} |")
    lines += ["", f"Memory-pass floor ({TOUCHES} touches per CBAM at the measured pass speed): "
              f"{floor_ms:.1f} ms per step over the plain net's, a step ratio of "
              f"**x{(plain_ms + floor_ms) / plain_ms:.2f}** against the measured **x{cbam_ms / plain_ms:.2f}**.", "",
              f"Fixed cost (the native CBAM at batch 2, where the map is tiny): {fixed_ms:.1f} ms per step, "
              f"x{(plain_ms + fixed_ms) / plain_ms:.2f} on its own; with the memory passes: "
              f"x{(plain_ms + fixed_ms + floor_ms) / plain_ms:.2f}.", "",
              f"Operator profile, self CPU ms per training step ({args.profile_steps} steps profiled), largest "
              "CBAM-minus-plain first:", "", "| operator | plain | CBAM (native) | difference |",
              "|---|---:|---:|---:|"]
    for name, a, b in operator_profile(plain, cbam, args.profile_steps, args.top):
        lines.append(f"| `{name}` | {a:.2f} | {b:.2f} | {b - a:+.2f} |")
    return lines + [""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="resnet20,resnet18", help=f"sizes, comma-separated ({', '.join(SIZES)})")
    p.add_argument("--mode", default="default", choices=[*MODES, "default"],
                   help="default: the mode `cbamlab train` picks here")
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
    args.latency_iters, args.compile_backend = 0, "inductor"  # what bench_attention's Case reads
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    default, reason = default_mode(device)
    if args.mode == "default":
        args.mode = default
    loaded = native.load()
    if not loaded.ok:
        print(f"error: the native CBAM operator is not available here: {loaded.reason}", file=sys.stderr)
        return 1
    load_before = load_average()
    lines = ["# Native CBAM cost: the memory-pass floor and the profile", "",
             *machine_lines(device, load_before)[:2], f"`cbamlab train` picks `{default}` here ({reason}).", ""]
    for size in sizes:
        lines += run_size(size, args)
        print(f"{size}: done", file=sys.stderr)
    lines.append(f"Load average (1 min) {load_before} at the start, {load_average()} at the end.")
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    write_text(out / "attention_limits.md", text)
    print(text)
    print(f"written: {out / 'attention_limits.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
