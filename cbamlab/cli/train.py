"""`cbamlab train`: train one model from a YAML preset and `--set` overrides into a run directory."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ..config import dump_config, load_config
from ..engine import fit
from ..runs import CONFIG
from ..errors import ConfigError

DESCRIPTION = """Train one model. Without --config the quick digits preset runs (resnet20_cbam, under a minute on
2 CPU cores). --set section.key=value overrides any config value (type-checked), e.g.
--set optim.lr=0.05 --set train.epochs=30. --resume continues --out RUN_DIR from its last checkpoint.
Under torchrun (torchrun --nproc-per-node K -m cbamlab train --out RUN_DIR ...) it trains data-parallel:
train.batch_size is the global batch, split among the K processes; train.sync_bn=true syncs BatchNorm."""


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model (default: the quick digits preset)",
                              description=DESCRIPTION, epilog="docs: docs/train.md")
    p.add_argument("--config", "-c", metavar="FILE", help="YAML preset (see configs/)")
    p.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. optim.lr=0.05 (repeatable)")
    p.add_argument("--out", "-o", metavar="RUN_DIR", help="run directory (default: runs/<model>-<dataset>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR from checkpoints/last")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and the final line")
    p.set_defaults(func=run)


def _default_out(cfg) -> Path:
    base = Path("runs") / f"{cfg.model.name}-{cfg.data.name}-s{cfg.seed}"
    out, i = base, 1
    while out.exists() and any(out.iterdir()):
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    return out


def run(args) -> int:
    overrides = list(args.overrides) + (["train.progress=false"] if args.quiet else [])
    if args.resume and not args.out:
        raise ConfigError("--resume needs --out RUN_DIR")
    saved = Path(args.out or ".") / CONFIG
    if args.resume and args.config is None and saved.is_file():
        cfg = load_config(saved, overrides)  # the run's own config
    else:
        cfg = load_config(args.config, overrides)
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not args.out:
            raise ConfigError("under torchrun pass --out RUN_DIR (every rank must name the same folder)")
        if os.environ.get("RANK", "0") != "0":  # rank 0 tells the story; the others only warn
            logging.getLogger().setLevel(logging.WARNING)
    out = Path(args.out) if args.out else _default_out(cfg)
    s = fit(cfg, out, resume=args.resume)
    if os.environ.get("RANK", "0") != "0":
        return 0
    budget = s.get("time_budget")
    epochs = (f"{budget['epochs_trained']} of {s['epochs']} epochs in a {budget['minutes']:g}-minute budget" if budget
              else f"{s['epochs']} epochs")
    print(f"{s['model']} on {s['dataset']}: {s['split']} top-1 {100 * s['top1']:.2f} %  top-5 {100 * s['top5']:.2f} %"
          f"  ({epochs}, {s['wall_time_s']:.1f} s, {s['train_images_per_s']:.0f} img/s)  run: {out}")
    return 0
