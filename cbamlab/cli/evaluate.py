"""`cbamlab eval`: top-1/top-5 of a finished run (`--run`) or of a weights file (`--weights --model`)."""
from __future__ import annotations

from ..config import TTA, config_to_dict, load_config
from ..data import load_dataset
from ..inference.predict import evaluate_config, load_run, load_weights_file
from ..errors import ConfigError

DESCRIPTION = """Evaluate a trained model on the test split (else the validation split) and print top-1/top-5.
--run RUN_DIR uses the run's config and weights (the EMA weights when it trained with train.ema, and its
eval.tta): its top-1 equals summary.json's. --weights FILE --model NAME
evaluates a safetensors file on --data (default digits) with the default config otherwise."""


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="top-1/top-5 of a run or a weights file", description=DESCRIPTION,
                              epilog="docs: docs/train.md#evaluate-predict-export")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="RUN_DIR", help="a run directory made by `cbamlab train`")
    src.add_argument("--weights", metavar="FILE", help="a .safetensors weights file (needs --model)")
    p.add_argument("--checkpoint", choices=("last", "best"), default="last", help="with --run (default: last)")
    p.add_argument("--model", metavar="NAME", help="with --weights: the registered model name")
    p.add_argument("--data", metavar="NAME", help="dataset (default: the run's, else digits)")
    p.add_argument("--root", metavar="DIR", help="dataset root folder")
    p.add_argument("--image-size", type=int, metavar="N", help="resize images to N x N")
    p.add_argument("--split", choices=("test", "val"), help="default: test, else val")
    p.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (e.g. data.val_fraction=0.1)")
    p.add_argument("--tta", choices=TTA, help="test-time augmentation: hflip averages the softmax "
                   "of each image and its mirror image, hflip_translate also of both shifted by one pixel "
                   "(airbench's six views) (default: the run's eval.tta, else none)")
    p.add_argument("--per-class", action="store_true", help="also print per-class accuracy")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the result line")
    p.set_defaults(func=run)


def run(args) -> int:
    sets = [f"data.{k}={v}" for k, v in (("name", args.data), ("root", args.root),
                                         ("image_size", args.image_size)) if v is not None]
    sets += [f"eval.tta={args.tta}"] if args.tta else []
    if args.run:
        if args.model:
            raise ConfigError("--model goes with --weights; a run directory knows its model")
        loaded = load_run(args.run, args.checkpoint)
        cfg, model = loaded.cfg, loaded.model
        if sets or args.overrides:
            cfg = load_config(config_to_dict(cfg), sets + args.overrides)
        source = f"{args.run} ({args.checkpoint})"
    else:
        if not args.model:
            raise ConfigError("--weights needs --model NAME")
        cfg = load_config(None, [f"model.name={args.model}"] + sets + args.overrides)
        info = load_dataset(cfg.data.name, cfg.data.root, image_size=cfg.data.image_size, include_test=False).info
        model = load_weights_file(args.weights, cfg.model, info.num_classes, info.in_chans)
        source = args.weights
    r = evaluate_config(model, cfg, args.split)
    print(f"{source}: {cfg.data.name} {r['split']} (n={r['n']})  top1={r['top1']:.6f}  top5={r['top5']:.6f}  "
          f"loss={r['loss']:.4f}")
    if args.per_class:
        for name, acc in zip(r["classes"], r["per_class_accuracy"]):
            print(f"  {name:>20s}  {'-' if acc is None else f'{acc:.4f}'}")
    return 0
