"""Methods x depth: a contact sheet of the images `benchmarks/demo_quality.py --images DIR` saved, and
the per-block table of its CSV (benchmarks/method_table.py's: units visualized per block, the medians).

    .venv/bin/python benchmarks/contact_sheet.py --images /tmp/bench/images \\
        --labels pixel-mlp-60 pixel-mlp_pre-60 --csv benchmarks/results/2026-12-07-method-depth-cpu.csv \\
        --out benchmarks/results/2026-12-07-method-depth-cpu.png

One row per method (label), one column per block; each cell holds the block's units stacked, a
green frame where the unit's image beats every photo switched on, red where it does not.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.method_table import markdown  # noqa: E402

THUMB = 96
PAD = 4


def sheet(images: str, labels: list[str], frame: pd.DataFrame | None) -> Image.Image:
    units: dict[str, dict[int, list[tuple[int, str]]]] = {}
    for label in labels:
        found = defaultdict(list)
        for name in sorted(os.listdir(os.path.join(images, label))):
            m = re.fullmatch(r"L(\d+)-f(\d+)\.png", name)
            if m:
                found[int(m.group(1))].append((int(m.group(2)), os.path.join(images, label, name)))
        units[label] = found
    layers = sorted({layer for found in units.values() for layer in found})
    per_cell = max(len(v) for found in units.values() for v in found.values())
    won = {} if frame is None else {(r.label, int(r.layer), int(r.feature)): bool(r.beats_photos)
                                    for r in frame.itertuples()}
    left, top = 150, 24
    width = left + len(layers) * (THUMB + PAD)
    height = top + len(labels) * (per_cell * (THUMB + PAD) + 3 * PAD)
    out = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(out)
    for c, layer in enumerate(layers):
        draw.text((left + c * (THUMB + PAD) + 4, 6), f"block {layer}", fill="black")
    for r, label in enumerate(labels):
        y0 = top + r * (per_cell * (THUMB + PAD) + 3 * PAD)
        draw.text((4, y0 + 4), label, fill="black")
        for c, layer in enumerate(layers):
            for k, (feature, path) in enumerate(sorted(units[label].get(layer, []))):
                x, y = left + c * (THUMB + PAD), y0 + k * (THUMB + PAD)
                with Image.open(path) as img:
                    out.paste(img.convert("RGB").resize((THUMB - 4, THUMB - 4)), (x + 2, y + 2))
                verdict = won.get((label, layer, feature))
                if verdict is not None:
                    draw.rectangle((x, y, x + THUMB - 1, y + THUMB - 1), outline="green" if verdict else "red", width=2)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, help="the folder demo_quality.py --images wrote")
    parser.add_argument("--labels", nargs="+", required=True, help="methods (sub-folders), one row each, in order")
    parser.add_argument("--csv", help="demo_quality.py's CSV: frames the cells and prints the table")
    parser.add_argument("--out", required=True, help="the contact sheet PNG")
    args = parser.parse_args(argv)
    frame = pd.read_csv(args.csv) if args.csv else None
    sheet(args.images, args.labels, frame).save(args.out)
    print(f"wrote {args.out}")
    if frame is not None:
        print(markdown(pd.concat([frame[frame["label"] == label] for label in args.labels], ignore_index=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
