"""Unit invariance: each unit's top image under 18 rotations and 16 shifts (run jobs/top_images.py first).

    python jobs/unit_invariance.py --model B_16_imagenet1k --results results/atlas --split val \
        --val /data/imagenet/val --val-solution /data/LOC_val_solution.csv

Reads the rank-0 rows of <results>/top_images/split=<split>/model=<m>, writes
<results>/invariance/split=<split>/model=<m>/part-00000.parquet (before/after activations and ratios per
unit) and prints the per-layer means next to the paper's ViT-B/16 numbers.
"""

import argparse
import posixpath

import pandas as pd
import torch

from sweep.ablation_pipeline import DataSpec
from sweep.ablations import decode
from sweep.batch import resolve_device
from sweep.cli import guarded, setup_logging
from sweep.conditions import resize_center_crop
from sweep.data.imagenet import image_folder
from sweep.errors import SweepError
from sweep.invariance import per_layer, unit_invariance
from sweep.models.anatomy import anatomy_of
from sweep.models.build import build
from sweep.outputs import atomic_write, frame_parquet_bytes, open_root, partition_value
from sweep.reports import PAPER_INVARIANCE_B16, paper_name


def run(args) -> int:
    anatomy = anatomy_of(args.model)
    key = anatomy.entry.key
    top_path = f"{args.results.rstrip('/')}/top_images/split={partition_value(args.split)}/model={partition_value(key)}"
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
    paths = {r["image_id"]: r["path"] for r in listing.records}
    size = anatomy.preprocess.input_size
    images = {i: torch.as_tensor(resize_center_crop(decode(paths[i]), size)).permute(2, 0, 1)
              for i in sorted(set(units["image_id"]))}
    net = build(anatomy.entry, args.weights, resolve_device(args.device))
    frame = unit_invariance(net, anatomy, site, units, images, seed=args.seed)
    fs, root = open_root(args.results)
    atomic_write(fs, posixpath.join(root, f"invariance/split={partition_value(args.split)}/"
                                          f"model={partition_value(key)}/part-00000.parquet"),
                 frame_parquet_bytes(frame, None))
    table = per_layer(frame)
    if paper_name(key) == "ViT-B16":
        for col in ("rotation", "shift"):
            table[f"{col}_paper"] = [PAPER_INVARIANCE_B16[col][int(l)] if int(l) < 12 else None for l in table["layer"]]
    print(table.round(3).to_string(index=False))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="unit_invariance.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--results", required=True, help="results root holding top_images/ (and receiving invariance/)")
    p.add_argument("--split", default="val")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="the image folder the top images came from")
    src.add_argument("--val", help="ILSVRC2012 val folder (with --val-solution)")
    p.add_argument("--val-solution")
    p.add_argument("--layers", nargs="+")
    p.add_argument("--features-per-layer", type=int, help="only features below this index (the paper: 11)")
    p.add_argument("--weights", default="pretrained")
    p.add_argument("--device")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    setup_logging("INFO")
    return guarded("unit_invariance.py", run, args)


if __name__ == "__main__":
    raise SystemExit(main())
