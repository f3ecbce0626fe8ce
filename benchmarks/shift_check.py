"""Shift robustness of saved images at a shift of your choosing, whatever jitter made them.

`benchmarks/demo_quality.py` judges an image's shift robustness with its recipe's own jitter, so an
image made with `--jitter 0` reads 1.00 by construction. This re-judges the PNGs `demo_quality.py
--images` saved (IMAGES/LABEL/L<layer>-f<feature>.png) under seeded circular shifts of up to
--max-shift pixels, at the unit's `mlp` site (post-GELU), the same way `sweep/work/quality.py` does.

    .venv/bin/python benchmarks/shift_check.py --images /tmp/bench/images --label pixel-mlp_pre-jitter0-60 \\
        --max-shift 32 --csv benchmarks/results/2026-12-07-jitter0-shift32-cpu.csv
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.csv_rows import append_rows  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo/dinov2-vits14")
    parser.add_argument("--images", required=True, help="the folder demo_quality.py --images wrote")
    parser.add_argument("--label", required=True, help="its sub-folder (a demo_quality.py --label)")
    parser.add_argument("--max-shift", type=int, default=32, help="largest shift in pixels (default 32, the paper's)")
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--site", default="mlp")
    parser.add_argument("--csv", help="append one row per image here")
    args = parser.parse_args(argv)

    from sweep.method.measures import SHIFT_SEED_OFFSET
    from sweep.models.anatomy import anatomy_of
    from sweep.models.build import build
    from sweep.work.quality import shift_ratio
    from sweep.work.tuning import unit_activations

    anatomy = anatomy_of(args.model)
    net = build(anatomy.entry, "pretrained")
    folder = os.path.join(args.images, args.label)
    rows = []
    for name in sorted(os.listdir(folder)):
        m = re.fullmatch(r"L(\d+)-f(\d+)\.png", name)
        if not m:
            continue
        layer, feature = int(m.group(1)), int(m.group(2))
        with Image.open(os.path.join(folder, name)) as img:
            image = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
        clean = float(unit_activations(net, anatomy, layer, args.site, [feature], image[None])[0, 0])
        ratio = shift_ratio(net, anatomy, layer, args.site, feature, image, clean, args.max_shift, args.draws,
                            feature + SHIFT_SEED_OFFSET)
        rows.append({"label": args.label, "model": anatomy.entry.key, "layer": layer, "feature": feature,
                     "site": args.site, "clean": clean, "max_shift": args.max_shift, "draws": args.draws,
                     "shift_ratio": ratio})
        print(f"block {layer:2d} unit {feature:4d}: clean {clean:7.3f}, mean over shifts up to {args.max_shift} px "
              f"{ratio * clean:7.3f} (ratio {ratio:.2f})", flush=True)
    if args.csv:
        append_rows(args.csv, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
