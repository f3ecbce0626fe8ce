"""Unit invariance: each unit's top image under 18 rotations and 16 shifts (run jobs/top_images.py first).

    python jobs/unit_invariance.py --model B_16_imagenet1k --results results/atlas --split val \
        --val /data/imagenet/val --val-solution /data/LOC_val_solution.csv

Reads the rank-0 rows of <results>/top_images/split=<split>/model=<m>, writes
<results>/invariance/split=<split>/model=<m>/part-00000.parquet (before/after activations and ratios per
unit; a Ray Data job: decode as tasks, scoring in an actor pool) and prints the per-layer means next to
the paper's ViT-B/16 numbers.
"""

import argparse
import os
import posixpath

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pandas as pd  # noqa: E402

from sweep.cli import (  # noqa: E402
    ADDRESS_HELP,
    MODEL_HELP,
    add_model_arg,
    address_arg,
    check_options,
    connect_ray,
    guarded,
    model_name,
    setup_logging,
)
from sweep.core.errors import SweepError  # noqa: E402
from sweep.core.validation import Count, Seed, Text  # noqa: E402
from sweep.data.imagenet import image_folder  # noqa: E402
from sweep.experiments.invariance import per_layer
from sweep.models.anatomy import anatomy_of  # noqa: E402
from sweep.pipelines.ablations import DataSpec  # noqa: E402
from sweep.pipelines.invariance import run_invariance  # noqa: E402
from sweep.store.layout import INVARIANCE, TOP_IMAGES  # noqa: E402
from sweep.store.outputs import atomic_write, check_writable, frame_parquet_bytes, open_root  # noqa: E402
from sweep.views.reports import PAPER_INVARIANCE_B16, paper_name  # noqa: E402


def run(args) -> int:
    model = model_name(args)
    check_options(args, {"results": Text, "split": Text, "features_per_layer": Count | None,
                         "weights": Text, "actors": Count, "seed": Seed})
    anatomy = anatomy_of(model)
    key = anatomy.entry.key
    top_path = f"{args.results.rstrip('/')}/{TOP_IMAGES.folder(split=args.split, model=key)}"
    try:
        top = pd.read_parquet(top_path)
    except (FileNotFoundError, OSError):
        raise SweepError(f"no top images under {top_path}; run jobs/top_images.py first") from None
    units = top[top["rank"] == 0]
    if args.layers:
        units = units[units["layer"].isin([anatomy.block(l).index for l in args.layers])]
    if args.features_per_layer:
        units = units[units["feature"] < args.features_per_layer]
    site = str(units["site"].iloc[0])
    if args.images:
        listing = image_folder(args.images)
    else:
        listing = DataSpec("val_solution", args.val, solution=args.val_solution).listing("frequency")
    fs, root = open_root(args.results)
    check_writable(fs, root, args.results)  # a missing bucket or unwritable root: before any work
    connect_ray(args.address)
    frame = run_invariance(key, units[["layer", "feature", "image_id"]], site, listing, weights=args.weights,
                           actors=args.actors, seed=args.seed)
    atomic_write(fs, posixpath.join(root, INVARIANCE.part("part-00000.parquet", split=args.split, model=key)),
                 frame_parquet_bytes(frame, None))
    table = per_layer(frame)
    if paper_name(key) == "ViT-B16":
        for col in ("rotation", "shift"):
            table[f"{col}_paper"] = [PAPER_INVARIANCE_B16[col][int(l)] if int(l) < 12 else None for l in table["layer"]]
    print(table.round(3).to_string(index=False))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="unit_invariance.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help=MODEL_HELP)
    add_model_arg(p)
    p.add_argument("--results", required=True, help="results root holding top_images/ (and receiving invariance/)")
    p.add_argument("--split", default="val")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="the image folder the top images came from")
    src.add_argument("--val", help="ILSVRC2012 val folder (with --val-solution)")
    p.add_argument("--val-solution")
    p.add_argument("--layers", nargs="+")
    p.add_argument("--features-per-layer", type=int, help="only features below this index (the paper: 11)")
    p.add_argument("--weights", default="pretrained")
    p.add_argument("--actors", type=int, default=1)
    p.add_argument("--address", type=address_arg, help=ADDRESS_HELP)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    setup_logging("INFO")
    return guarded("unit_invariance.py", run, args)


if __name__ == "__main__":
    raise SystemExit(main())
