"""The paper's foreground/background table from ablation results, with the published numbers alongside.

    .venv/bin/python analysis/fb_table.py --results results/ablations-run --out analysis/out

Reads `<results>/ablations/experiment=foreground_background` (any fsspec URL) and writes
fb_table.md, fb_table.csv and fb_table.tex: original top-5, foreground and background normalized
(100 x top5(masked) / top5(original)), each with the paper's value and the difference.
"""

import argparse
import json
import os

from sweep.cli import guarded
from sweep.views.reports import fb_table, read_ablation_rows, to_latex, to_markdown


def run(args) -> int:
    opts = json.loads(args.storage_options) if args.storage_options else None
    table = fb_table(read_ablation_rows(args.results, "foreground_background", opts))
    os.makedirs(args.out, exist_ok=True)
    md = to_markdown(table)
    with open(os.path.join(args.out, "fb_table.md"), "w") as fh:
        fh.write(md + "\n")
    table.to_csv(os.path.join(args.out, "fb_table.csv"))
    with open(os.path.join(args.out, "fb_table.tex"), "w") as fh:
        fh.write(to_latex(table) + "\n")
    print(md)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", required=True, help="results root of the ablation job")
    parser.add_argument("--out", default="analysis/out", help="folder for the .md, .csv and .tex files")
    parser.add_argument("--storage-options", default=None, help="JSON storage options for fsspec")
    args = parser.parse_args(argv)
    return guarded("fb_table.py", run, args)


if __name__ == "__main__":
    raise SystemExit(main())
