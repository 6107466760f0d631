"""`cbamlab compare`: train variants x seeds (x datasets) under one recipe, paired by seed, then report."""
from __future__ import annotations

from ..experiments.compare import load_compare_config, run_compare
from ..experiments.compare_shard import parse_shard
from ..report import tables
from ..report.render import markdown_table
from ..report.writer import write_report

DEFAULT_OUT = "runs/compare"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="compare model variants over several seeds (e.g. ResNet vs +SE vs +CBAM) and report",
        description="Train every variant with every seed (and dataset) under one shared recipe, paired by seed: "
                    "same data order, augmentation and shared initial weights. Finished runs are reused and "
                    "unfinished ones resumed, so an interrupted comparison continues where it stopped. Writes "
                    "report.md and report.html into --out. Without --config: resnet20 vs resnet20_se vs "
                    "resnet20_cbam on the embedded digits, 3 seeds, the quick digits recipe. --shard I/N trains "
                    "one share of the runs, so several machines (a Slurm job array) fill one study; --workers K "
                    "trains K runs at once on this machine.",
        epilog="docs: docs/compare.md")
    p.add_argument("--config", metavar="FILE", help="YAML recipe with a top-level compare: section "
                   "(variants, seeds, datasets, only); default: the built-in digits comparison")
    p.add_argument("--out", metavar="DIR", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override a recipe key (optim.lr=0.05) or the compare section (compare.seeds=5, "
                        "compare.variants=[resnet20,resnet20_cbam], or compare.only=[resnet20,kernel3] to train "
                        "only those labels of the variant list now); repeatable")
    p.add_argument("--shard", metavar="I/N", help="train only share I of N of the runs (0-based: I in 0..N-1), e.g. "
                   "--shard $SLURM_ARRAY_TASK_ID/4 in a job array --array=0-3; every shard gets the same --config, "
                   "--set and --out (a shared folder); the last one to finish writes the report")
    p.add_argument("--workers", metavar="K", type=int, default=1,
                   help="train K runs at once on this machine, each with cores/K threads (default: 1)")
    p.add_argument("--no-report", action="store_true", help="train only; write the report later with cbamlab report")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    p.set_defaults(func=run)


def run(args) -> int:
    shard = parse_shard(args.shard)
    cfg, spec = load_compare_config(args.config, args.overrides)
    result = run_compare(cfg, spec.variants, spec.seeds, args.out, spec.datasets, shard=shard, workers=args.workers)
    busy = f", {len(result.busy)} left to other processes" if result.busy else ""
    print(f"{f'shard {shard[0]}/{shard[1]}: ' if shard else ''}{len(result.trained)} runs trained, "
          f"{len(result.reused)} reused{busy}, in {result.out_dir}")
    if not result.complete and not args.no_report:
        print(f"the study is not complete yet; when every shard has finished, cbamlab report {result.out_dir} "
              "writes the report")
    elif not args.no_report:
        report = write_report(result.out_dir)
        for c in report.comparisons:
            print(f"\n{c.title}\n")
            print(markdown_table(*tables.table(c.rows)))
            for line in c.sentences:
                print(f"- {line}")
        print(f"\nreport: {report.markdown} and {report.html}")
    return 0
