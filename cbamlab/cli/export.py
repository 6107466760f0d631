"""`cbamlab export`: a run's model as ONNX, TorchScript or torch.export (.pt2), checked against its own outputs."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..inference.export import SUFFIX, export_model
from ..inference.predict import load_run
from ..errors import CbamlabError

DESCRIPTION = """Export the model of a run directory to ONNX (run with onnxruntime), traced TorchScript or
torch.export's .pt2 (load it with torch.export.load(FILE).module()), each with a dynamic batch size. The export is
loaded back and compared with the PyTorch model on random inputs at two batch sizes other than the traced one."""


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a run's model to ONNX, TorchScript or torch.export (.pt2)",
                              description=DESCRIPTION, epilog="docs: docs/train.md#evaluate-predict-export")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a run directory made by `cbamlab train`")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript", "pt2"))
    p.add_argument("--out", "-o", metavar="FILE", help="default: RUN_DIR/export/model.onnx, model.pt or model.pt2")
    p.add_argument("--checkpoint", choices=("last", "best"), default="last")
    p.add_argument("--atol", type=_tolerance, default=1e-4,
                   help="largest allowed output difference, a finite number >= 0 (default 1e-4)")
    p.add_argument("-q", "--quiet", action="store_true", help="no log lines")
    p.set_defaults(func=run)


def _tolerance(text: str) -> float:
    """--atol: a finite number >= 0 (with nan or a negative one no export could ever pass the check)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def run(args) -> int:
    loaded = load_run(args.run, args.checkpoint)
    out = Path(args.out) if args.out else Path(args.run) / "export" / f"model{SUFFIX[args.format]}"
    if out.is_dir():
        raise CbamlabError(f"--out {out} is a folder; give the file to write, e.g. {out / f'model{SUFFIX[args.format]}'}")
    d = loaded.data
    diff = export_model(loaded.model, (d["in_chans"], *d["image_size"]), out, args.format, atol=args.atol)
    print(f"wrote {out} ({args.format}); max |difference| vs PyTorch {diff:.2e} (<= {args.atol:g})")
    return 0
