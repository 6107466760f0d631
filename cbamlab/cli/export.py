"""`cbamlab export`: a run's model as ONNX or TorchScript, checked against the model's own outputs."""
from __future__ import annotations

DESCRIPTION = """Export the model of a run directory to ONNX (checked with onnxruntime) or TorchScript (checked by
reloading it), comparing outputs with the PyTorch model on random inputs."""


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a run's model to ONNX or TorchScript", description=DESCRIPTION)
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a run directory made by `cbamlab train`")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    p.add_argument("--out", "-o", metavar="FILE", help="default: RUN_DIR/export/model.onnx or model.pt")
    p.add_argument("--checkpoint", choices=("last", "best"), default="last")
    p.add_argument("--atol", type=float, default=1e-4, help="largest allowed output difference (default 1e-4)")
    p.add_argument("-q", "--quiet", action="store_true", help="no log lines")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..engine.export import export_model
    from ..engine.predict import load_run

    loaded = load_run(args.run, args.checkpoint)
    suffix = ".onnx" if args.format == "onnx" else ".pt"
    out = Path(args.out) if args.out else Path(args.run) / "export" / f"model{suffix}"
    d = loaded.data
    diff = export_model(loaded.model, (d["in_chans"], *d["image_size"]), out, args.format, atol=args.atol)
    print(f"wrote {out} ({args.format}); max |difference| vs PyTorch {diff:.2e} (<= {args.atol:g})")
    return 0
