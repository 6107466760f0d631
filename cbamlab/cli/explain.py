"""`cbamlab explain`: Grad-CAM beside CBAM's own attention maps, and whether the maps are faithful."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CbamlabError

DESCRIPTION = """Show where trained models look and measure whether it matters. RUN is a `cbamlab train` run
directory, or a `cbamlab compare` folder: there each SE/CBAM variant is paired with its plain twin of the same
seed (--seed, default the smallest). --against RUN2 pairs any two run directories (differences are RUN - RUN2).
--all-seeds explains every seed of a compare folder on the same images (each into OUT/seed<k>/) and writes
explain_seeds.md/.html: each map's faithfulness per variant across training seeds, and each variant paired by
seed with its plain twin (interval, t-test and sign-flip p): an answer about the architecture, not one model.

For each image and model: the top-3 predictions, Grad-CAM and Grad-CAM++ of the true class at the last stage,
and for CBAM models the spatial attention map of every stage; for SE/CBAM the channel attention per stage.
Across the images: deletion and insertion AUC (RISE, Petsiuk et al. 2018) of every map beside a random pixel
order, paired differences between models, and the class-specificity of the channel attention.

Writes into --out (default RUN/explain): explain.html (self-contained), explain.md with figures/, scores.csv
(one row per image and model) and maps.npz (the maps at input resolution, probabilities, curves).
Never trains."""


def register(subparsers) -> None:
    p = subparsers.add_parser("explain", help="Grad-CAM and CBAM attention maps side by side, with faithfulness",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="docs: docs/explain.md")
    p.add_argument("run", metavar="RUN", help="a run directory, or a compare folder (pairs variants with their "
                   "plain twins)")
    p.add_argument("--against", metavar="RUN2", help="a second run directory to pair RUN with (RUN - RUN2)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", nargs="+", metavar="PATH", help="PNG/JPEG files or folders of them (a folder "
                     "named after a class gives its images that true class)")
    src.add_argument("--split", default="test", choices=("test", "val", "train"),
                     help="draw the images from this split of the run's dataset (default: test)")
    p.add_argument("--n", type=int, default=64, metavar="N", help="images drawn from the split, stratified by "
                   "class with a fixed seed (default: 64)")
    p.add_argument("--classes", nargs="+", metavar="NAME", help="only images of these classes")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, metavar="K", help="in a compare folder: the runs of this training seed "
                       "(default: the smallest)")
    seeds.add_argument("--all-seeds", action="store_true", help="in a compare folder: every training seed, paired "
                       "across seeds (OUT/seed<k>/ and OUT/explain_seeds.md)")
    p.add_argument("--image-seed", type=int, default=0, metavar="S",
                   help="seed of the image draw, the random-order baseline and tie-breaking (default: 0)")
    p.add_argument("--steps", type=int, default=32, metavar="S",
                   help="steps of the deletion/insertion curves (default: 32)")
    p.add_argument("--checkpoint", choices=("last", "best"), default="last")
    p.add_argument("--figure-images", type=int, default=8, metavar="K",
                   help="images shown in the side-by-side figure (default: 8)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--out", metavar="DIR", help="output folder (default: RUN/explain)")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    p.set_defaults(func=run)


def run(args) -> int:
    # grad-cam (with OpenCV) and matplotlib load only when the command runs, so other commands start fast
    from ..explain import explain_run, explain_seeds
    from ..report.explain import write_explain_report
    from ..report.explain_seeds import collect, paired, sentence, write_seeds_report

    for name in ("steps", "figure_images"):
        if getattr(args, name) < 1:
            raise CbamlabError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    out = Path(args.out) if args.out else Path(args.run) / "explain"
    if args.all_seeds:
        if args.against:
            raise CbamlabError("--all-seeds explains the seeds of a compare folder; --against pairs two run "
                               "directories: use one of them")
        done = explain_seeds(args.run, out=out, images=args.images, split=args.split, n=args.n,
                             classes=args.classes, checkpoint=args.checkpoint, steps=args.steps,
                             image_seed=args.image_seed, device=args.device)
        for seed in done:
            write_explain_report(out / f"seed{seed}", args.figure_images)
        md, page = write_seeds_report(out)
        for row in paired(collect(out)):
            print(f"- {sentence(row)}")
        print(f"explain across seeds: {page} and {md}")
        return 0
    expl = explain_run(args.run, args.against, images=args.images, split=args.split, n=args.n, classes=args.classes,
                       seed=args.seed, checkpoint=args.checkpoint, steps=args.steps, image_seed=args.image_seed,
                       device=args.device, out=out)
    md, page = write_explain_report(out, args.figure_images)
    for label, r in expl.results.items():
        known = expl.images.labels >= 0
        acc = f"top-1 {100 * (r.prob.argmax(1) == expl.images.labels)[known].mean():.1f} % on " \
              f"{int(known.sum())} labelled images; " if known.any() else ""
        print(f"{label}: {acc}Grad-CAM deletion AUC {r.auc('deletion', 'gradcam').mean():.3f} "
              f"(random {r.auc('deletion', 'random').mean():.3f}), insertion AUC "
              f"{r.auc('insertion', 'gradcam').mean():.3f} (random {r.auc('insertion', 'random').mean():.3f})")
    print(f"explain: {page} and {md}")
    return 0
