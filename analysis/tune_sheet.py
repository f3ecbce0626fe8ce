"""The lr x TV grid of a `sweep tune` run as a contact sheet (rows lr, columns TV) with scores.

Each cell is one unit's image for that trial, captioned a=relative activation, r=robustness,
c=combined score; a CSV beside it holds the combined score (mean over the trial's units) per lr x TV.

    .venv/bin/python analysis/tune_sheet.py --results R --model vit_base_patch16_224 --out fig/tune.png
    .venv/bin/python analysis/tune_sheet.py --results R --model ViT-B/16 --unit 11:5 --out fig/tune-L11f5.png
"""

import argparse
import os

from sweep.cli import guarded
from sweep.core.errors import SweepError
from sweep.models.anatomy import anatomy_of
from sweep.store.results import Results
from sweep.views.figures import tuning_sheet


def parse_unit(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    layer, sep, feature = text.partition(":")
    try:
        return int(layer), int(feature)
    except ValueError:
        raise SweepError(f"bad unit {text!r}; expected LAYER:FEATURE, e.g. 11:5") from None


def run(args) -> int:
    results = Results(args.results)
    sheet, table = tuning_sheet(results, anatomy_of(args.model).entry.key, parse_unit(args.unit), args.cell)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    sheet.save(args.out)
    csv = os.path.splitext(args.out)[0] + ".csv"
    table.to_csv(csv)
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"{args.out}\n{csv}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--results", required=True, help="results root (path or fsspec URL)")
    p.add_argument("--model", required=True, help="registry key or alias")
    p.add_argument("--unit", help="LAYER:FEATURE of the image shown per cell (default: the first unit)")
    p.add_argument("--cell", type=int, default=128, help="cell size in pixels (default 128)")
    p.add_argument("--out", required=True, help="PNG path; the score table is written beside it as .csv")
    return guarded("tune_sheet", run, p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
