"""Activation maps of (layer, feature)s on a folder of images: per-patch arrays and PNG overlays.

    python jobs/activation_maps.py --model B_16_imagenet1k --layer 6 --feature 17 42 --images some/folder --out r

Writes <out>/activation_maps/model=<m>/layer=<l>/<site>-<f>/<image>.npy and .png (patch tokens only,
on the model's patch grid; min-max normalised in the overlay). Runs in one process (small work).
"""

import argparse

import numpy as np
import torch

from sweep.activation_maps import activation_maps, save_map
from sweep.batch import resolve_device
from sweep.cli import guarded, setup_logging
from sweep.conditions import resize_center_crop
from sweep.ablations import decode
from sweep.data.imagenet import image_folder
from sweep.models.anatomy import anatomy_of
from sweep.models.build import build


def run(args) -> int:
    anatomy = anatomy_of(args.model)
    block = anatomy.block(args.layer)
    site = args.site or anatomy.default_site
    anatomy.check_features(block, site, args.feature)
    listing = image_folder(args.images, limit=args.limit)
    device = resolve_device(args.device)
    net = build(anatomy.entry, args.weights, device)
    size = anatomy.preprocess.input_size
    written = 0
    for rec in listing.records:
        try:
            image = resize_center_crop(decode(rec["path"]), size)
        except Exception as exc:  # one unreadable image does not stop the others
            print(f"skipped {rec['path']}: {exc}")
            continue
        x = torch.as_tensor(image, device=device).permute(2, 0, 1)[None]
        for f in args.feature:
            amap = activation_maps(net, anatomy, block, site, f, x)[0].numpy()
            save_map(args.out, anatomy.entry.key, block.index, site, f, rec["image_id"], np.asarray(image), amap)
            written += 1
    print(f"{written} activation map(s) in {args.out}/activation_maps")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="activation_maps.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--layer", required=True)
    p.add_argument("--feature", type=int, nargs="+", required=True)
    p.add_argument("--images", required=True, help="a folder of images (recursive)")
    p.add_argument("--out", required=True)
    p.add_argument("--site")
    p.add_argument("--weights", default="pretrained")
    p.add_argument("--device")
    p.add_argument("--limit", type=int)
    args = p.parse_args(argv)
    setup_logging("INFO")
    return guarded("activation_maps.py", run, args)


if __name__ == "__main__":
    raise SystemExit(main())
