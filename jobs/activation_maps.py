"""Activation maps of (layer, feature)s on a folder of images: per-patch arrays and PNG overlays.

    python jobs/activation_maps.py --model B_16_imagenet1k --layer 6 --feature 17 42 --images some/folder --out r

Writes <out>/activation_maps/files/model=<m>/layer=<l>/<site>-<f>/<image>.npy and .png (patch tokens only,
on the model's patch grid; min-max normalised in the overlay) and one Parquet with every map, from a Ray
Data job: decode as tasks, maps in an actor pool. The table: <out>/activation_maps/table (pandas-readable).
"""

import argparse
import os
from typing import Annotated

from pydantic import Field

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

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
from sweep.core.validation import Count, NonNegativeInt, Text  # noqa: E402
from sweep.data.imagenet import image_folder  # noqa: E402
from sweep.pipelines.activation_maps import check_activation_maps, run_activation_maps  # noqa: E402


def run(args) -> int:
    model = model_name(args)
    check_options(args, {"layer": Text, "feature": Annotated[list[NonNegativeInt], Field(min_length=1)],
                         "out": Text, "site": Text | None, "weights": Text, "actors": Count, "limit": Count | None})
    listing = image_folder(args.images, limit=args.limit)
    check_activation_maps(model, args.layer, args.feature, args.out, site=args.site, weights=args.weights)
    connect_ray(args.address)
    frame = run_activation_maps(model, args.layer, args.feature, listing, args.out, site=args.site,
                                weights=args.weights, actors=args.actors)
    written = int((frame["status"] == "ok").sum())
    print(f"{written} activation map(s) in {args.out}/activation_maps "
          f"({int((frame['status'] != 'ok').sum())} unreadable image row(s))")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="activation_maps.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help=MODEL_HELP)
    add_model_arg(p)
    p.add_argument("--layer", required=True)
    p.add_argument("--feature", type=int, nargs="+", required=True)
    p.add_argument("--images", required=True, help="a folder of images (recursive)")
    p.add_argument("--out", required=True)
    p.add_argument("--site", help="mlp | q | k | v | attn_out | channel | output (default: the model's)")
    p.add_argument("--weights", default="pretrained")
    p.add_argument("--actors", type=int, default=1)
    p.add_argument("--address", type=address_arg, help=ADDRESS_HELP)
    p.add_argument("--limit", type=int)
    args = p.parse_args(argv)
    setup_logging("INFO")
    return guarded("activation_maps.py", run, args)


if __name__ == "__main__":
    raise SystemExit(main())
