"""`cbamlab summary MODEL`: parameters, MACs and a per-stage table; `cbamlab summary --list` lists the models."""
from __future__ import annotations

import json
import sys

from ..errors import CbamlabError
from ..models import count_params, create_model, list_models, model_info, stage_table
from ..models.profile import COUNTED_OPS, parse_input_size

_FAMILY_DEFAULTS = {"imagenet": ((3, 224, 224), 1000), "cifar": ((3, 32, 32), 10), "he2016": ((3, 32, 32), 10)}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "summary", help="parameters, MACs and per-stage shapes of a model; --list shows the models",
        description="Build MODEL and print its parameter count, its multiply-accumulates for one image (counted "
                    "with torch's FLOP counter: convolutions and linear layers; MACs = FLOPs / 2) and a table of "
                    "output shape, parameters and MACs per stage. With --list, print the registered model names.",
        epilog="docs: docs/models.md")
    p.add_argument("model", nargs="?", metavar="MODEL", help="a registered name, e.g. resnet50_cbam")
    p.add_argument("--list", nargs="?", const="*", default=None, metavar="PATTERN",
                   help="list the registered models matching a shell pattern (default: all), e.g. '*_cbam'")
    p.add_argument("--input-size", default=None, metavar="CxHxW",
                   help="input size for one image (default 3x224x224 for ImageNet-stem models, 3x32x32 for the "
                        "CIFAR ones); C sets the model's input channels")
    p.add_argument("--num-classes", type=int, default=None, metavar="N",
                   help="classes of the classifier (default 1000 for ImageNet-stem models, 10 for the CIFAR ones)")
    p.add_argument("--reduction", type=int, default=16, help="attention MLP reduction ratio (default 16)")
    p.add_argument("--kernel-size", type=int, default=7, help="CBAM spatial kernel size (default 7)")
    p.add_argument("--arrangement", default="channel_first",
                   help="CBAM arrangement: channel_first (default), spatial_first, parallel")
    p.add_argument("--shortcut", default=None, help="A (zero-padding) or B (projection); default: the model's own")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.list is not None:
        names = list_models(args.list)
        if not names:
            raise CbamlabError(f"no model matches '{args.list}'")
        for name in names:
            info = model_info(name)
            print(f"{name:<22} base {info.base:<16} attention {info.attn:<5} family {info.family}")
        return 0
    if not args.model:
        raise CbamlabError("summary needs a MODEL name (or --list to see them)")
    info = model_info(args.model)
    default_size, default_classes = _FAMILY_DEFAULTS.get(info.family, ((3, 224, 224), 1000))
    c, h, w = parse_input_size(args.input_size) if args.input_size else default_size
    num_classes = default_classes if args.num_classes is None else args.num_classes
    model = create_model(args.model, num_classes=num_classes, in_chans=c, reduction=args.reduction,
                         kernel_size=args.kernel_size, arrangement=args.arrangement, shortcut=args.shortcut)
    model = model.to("meta")  # shapes, counts and MACs only: no tensor memory, so any --input-size can be summarised
    rows = stage_table(model, (c, h, w))
    params = count_params(model)
    attn_params = sum(p.numel() for n, p in model.named_parameters() if ".attn." in n)
    macs = sum(r.macs for r in rows)
    if args.json:
        json.dump({"model": args.model, "base": info.base, "attention": info.attn, "input_size": [c, h, w],
                   "num_classes": num_classes, "params": params, "attention_params": attn_params, "macs": macs,
                   "macs_counted": COUNTED_OPS,
                   "stages": [{"name": r.name, "output_shape": list(r.output_shape), "params": r.params,
                               "macs": r.macs} for r in rows]}, sys.stdout, indent=2)
        print()
        return 0
    print(f"{args.model}: base {info.base}, attention {info.attn}, input {c}x{h}x{w}, {num_classes} classes")
    print(f"parameters  {params:,} ({params / 1e6:.2f} M; attention {attn_params:,})")
    print(f"MACs        {macs:,} ({macs / 1e9:.3f} G; convolutions and linear layers, FLOPs / 2)")
    print()
    print(f"{'stage':<8} {'output':>14} {'params':>12} {'MACs':>15}")
    for r in rows:
        shape = "x".join(str(d) for d in r.output_shape)
        print(f"{r.name:<8} {shape:>14} {r.params:>12,} {r.macs:>15,}")
    return 0
