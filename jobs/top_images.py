"""Top natural images for every (layer, feature) of a model: one Ray Data pass over a dataset.

    python jobs/top_images.py --model B_16_imagenet1k --val /data/imagenet/val \
        --val-solution /data/LOC_val_solution.csv --split val --k 10 --out results/atlas
    python jobs/top_images.py --model dev/vit-micro --weights random --images some/folder --split folder --out r

Writes <out>/top_images/split=<split>/model=<m>/part-00000.parquet: (layer, feature, rank, image_id,
activation), next to the sweep's visualizations so the atlas can show them side by side.
"""

import argparse
import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from sweep.cli import (  # noqa: E402
    ADDRESS_HELP,
    MODEL_HELP,
    add_image_source,
    add_model_arg,
    address_arg,
    check_options,
    connect_ray,
    gather,
    guarded,
    image_listing,
    setup_logging,
)
from sweep.core.validation import Count, parse  # noqa: E402
from sweep.experiments.top_images import TopImagesConfig
from sweep.pipelines.top_images import check_top_images, scan_top_images  # noqa: E402

#: Where each option lands in TopImagesConfig (field path -> argparse dest).
FIELDS = {"model": "model", "model_args": "model_arg", "taps": "tap", "out": "out", "split": "split", "k": "k",
          "layers": "layers", "site": "site",
          "weights": "weights", "batch_size": "batch_size", "actors": "actors"}


def run(args) -> int:
    data, flags = gather(args, FIELDS)
    config = parse(TopImagesConfig, data, flags=flags)
    check_options(args, {"limit": Count | None})
    listing = image_listing(args)
    checked = check_top_images(config)  # model, layers, weights, root: one line, before Ray starts
    connect_ray(args.address)
    rows = scan_top_images(config, listing, checked)
    print(f"{len(rows)} rows: top-{args.k} images of {rows.groupby(['layer', 'feature']).ngroups} units "
          f"over {len(listing.records)} images; in {args.out}/top_images")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="top_images.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help=MODEL_HELP)
    add_model_arg(p)
    p.add_argument("--out", required=True)
    add_image_source(p)
    p.add_argument("--split", default="val", help="name of this dataset in the output (val, train, ...)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--layers", nargs="+", help="block indices or names (default: all)")
    p.add_argument("--site", help="mlp | q | k | v | attn_out | channel | output (default: the model's)")
    p.add_argument("--weights", default="pretrained")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--actors", type=int, help="scanner actors (default 1)")
    p.add_argument("--limit", type=int)
    p.add_argument("--address", type=address_arg, help=ADDRESS_HELP)
    args = p.parse_args(argv)
    setup_logging("INFO")
    return guarded("top_images.py", run, args)


if __name__ == "__main__":
    raise SystemExit(main())
