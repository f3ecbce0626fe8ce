"""The paper's figures from a results root: progression, ViT-vs-CLIP comparison, contact sheets (PNG).

    .venv/bin/python analysis/figures.py progression --results R --model B_16_imagenet1k --out fig/progression.png
    .venv/bin/python analysis/figures.py compare --results R --models B_16 ViT-B/16 --layers 2 6 10 --out fig/vit_clip.png
    .venv/bin/python analysis/figures.py sheets --results R --model B_16_imagenet1k --out fig/sheets
"""

import argparse
import os

from sweep.cli import guarded
from sweep.models.anatomy import anatomy_of
from sweep.store.results import Results
from sweep.views.figures import comparison, contact_sheet, progression


def run(args) -> int:
    results = Results(args.results)
    if args.figure == "sheets":
        os.makedirs(args.out, exist_ok=True)
        key = anatomy_of(args.model).entry.key
        layers = args.layers or sorted(set(results.features(model=key, columns=["layer"])["layer"]))
        for layer in layers:
            path = os.path.join(args.out, f"{key.replace('/', '__')}-layer{layer}.png")
            contact_sheet(results, key, int(layer)).save(path)
            print(path)
        return 0
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if args.figure == "progression":
        image = progression(results, anatomy_of(args.model).entry.key, args.layers)
    else:
        image = comparison(results, [anatomy_of(m).entry.key for m in args.models], args.layers)
    image.save(args.out)
    print(args.out)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("figure", choices=["progression", "compare", "sheets"])
    p.add_argument("--results", required=True)
    p.add_argument("--out", required=True, help="PNG path (a folder for sheets)")
    p.add_argument("--model", help="for progression and sheets")
    p.add_argument("--models", nargs="+", help="for compare: e.g. a ViT and a CLIP")
    p.add_argument("--layers", type=int, nargs="+", help="default: every visualized layer (compare: required)")
    return guarded("figures.py", run, p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
