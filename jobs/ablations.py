"""ImageNet ablations on Ray Data: foreground/background, frequency, and token experiments.

    python jobs/ablations.py --experiment foreground_background --train /data/imagenet/train \
        --boxes /data/imagenet/boxes --out s3://BUCKET/ablations
    python jobs/ablations.py --experiment frequency --val /data/imagenet/val \
        --val-solution /data/LOC_val_solution.csv --models B_16_imagenet1k ResNet-50 --out results/freq

    python jobs/ablations.py --experiment tokens --val /data/imagenet/val \
        --val-solution /data/LOC_val_solution.csv --out results/tokens     # CLS, pooling, positions

Per-image rows go to <out>/ablations/experiment=<e>/model=<m>/; a finished model is skipped on a
re-run. Then: analysis/fb_table.py, analysis/frequency_plot.py, analysis/token_tables.py.
"""

import argparse
import logging
import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from sweep.cli import (  # noqa: E402
    ADDRESS_HELP,
    MODEL_HELP,
    add_model_arg,
    address_arg,
    connect_ray,
    gather,
    guarded,
    setup_logging,
)
from sweep.core.errors import SweepError  # noqa: E402
from sweep.core.validation import parse  # noqa: E402
from sweep.experiments.ablations import EXPERIMENTS, PAPER_MODELS  # noqa: E402
from sweep.pipelines.ablations import AblationConfig, check_ablation, run_ablation  # noqa: E402

log = logging.getLogger("ablations")
TOKEN_MODELS = ("B_16_imagenet1k", "B_32_imagenet1k")


#: Where each option lands in AblationConfig (field path -> argparse dest).
FIELDS = {"experiment": "experiment", "out": "out", "models": "models", "model_args": "model_arg",
          "conditions": "conditions",
          "weights": "weights", "batch_size": "batch_size", "actors": "actors", "data.limit": "limit",
          "data.boxes": "boxes", "data.solution": "val_solution", "data.ground_truth": "val_ground_truth",
          "data.meta": "val_meta"}


def run(args) -> int:
    data, flags = gather(args, FIELDS)
    kind = "train_boxes" if args.train else "val_solution" if args.val_solution else "val_devkit"
    data.setdefault("data", {}).update(kind=kind, root=args.train or args.val)
    flags["data.root"] = "--train" if args.train else "--val"
    data.setdefault("models", TOKEN_MODELS if args.experiment == "tokens" else PAPER_MODELS)
    if args.train and not args.boxes:
        raise SweepError("--train needs --boxes (the CSV of the training images' boxes)")
    config = parse(AblationConfig, data, flags=flags)
    checked = check_ablation(config)  # conditions, models, weights, root, images: before Ray starts
    connect_ray(args.address)
    results = run_ablation(config, force=args.force, checked=checked)
    for model, summary in results.items():
        conds = ", ".join(f"{c} top-1 {v['top1']:.2f} top-5 {v['top5']:.2f}" for c, v in summary["conditions"].items())
        print(f"{model}: {summary['ok_rows']} rows, {summary['corrupt_images']} corrupt image(s), "
              f"{len(summary['listing_problems'])} listing problem(s); {conds}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="ablations.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", required=True, choices=list(EXPERIMENTS))
    p.add_argument("--out", required=True, help="results root (path or fsspec URL)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--train", help="ILSVRC2012 train folder (the paper's subset: images with own-class boxes)")
    src.add_argument("--val", help="ILSVRC2012 val folder")
    p.add_argument("--boxes", help="box annotation folder (<wnid>/<image>.xml), with --train")
    p.add_argument("--val-solution", help="LOC_val_solution.csv (labels and boxes), with --val")
    p.add_argument("--val-ground-truth", help="devkit ILSVRC2012_validation_ground_truth.txt, with --val")
    p.add_argument("--val-meta", help="devkit meta.mat, with --val-ground-truth")
    p.add_argument("--models", nargs="+", help="classifiers (default: the paper's 8; for tokens its 2 ViTs): "
                   + MODEL_HELP)
    add_model_arg(p, taps=False)
    p.add_argument("--conditions", nargs="+", help="subset of the experiment's conditions, a frequency grid, "
                   "or token variants (intact, cls_isolated_after:L, pool:mean_patches, pos:zero, shuffle:32, ...)")
    p.add_argument("--weights", default="pretrained")
    p.add_argument("--limit", type=int, help="only the first N images (to try things out)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--actors", type=int, help="classifier actors (default: one per GPU, else 1)")
    p.add_argument("--address", type=address_arg, help=ADDRESS_HELP)
    p.add_argument("--force", action="store_true", help="redo models that are already done")
    args = p.parse_args(argv)
    setup_logging("INFO")
    return guarded("ablations.py", run, args)


if __name__ == "__main__":
    raise SystemExit(main())
