"""The method benchmark's table: per method (a `demo_quality.py` label) and block, from its per-unit CSV.

For each method and block: units, how many beat every photo (switched on, above each of the 15
photos), how many the image switched off, and the medians of the percentile among the photos and
their crops, shift and scale robustness, plausibility and seconds per unit. Prints a Markdown table
of the visualized fraction per block and one of the medians per method; --summary writes the
per-(method, block) numbers as a CSV. --promote stores the best one- or two-range choice of the
methods over depth (sweep/method/by_depth.py) as the model family's `--recipe best`, with provenance,
as `sweep tune --promote` stores lr and TV.

    .venv/bin/python benchmarks/method_table.py --csv benchmarks/results/2026-12-07-methods-cpu.csv \\
        --summary benchmarks/results/2026-12-07-methods-summary-cpu.csv --promote
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MEDIANS = {"percentile": "median percentile", "shift_ratio": "shift", "scale_ratio": "scale",
           "plausibility": "plausibility", "seconds_per_unit": "s/unit"}


def flags(rows: pd.DataFrame) -> pd.DataFrame:
    """`visualized` and `off` as booleans, read back from a CSV's True/False text; `off` is NA where
    the rows predate the switched-on check."""
    truth = lambda c: rows[c].astype(str).str.lower() == "true"  # noqa: E731
    off = ~truth("switched_on") if "switched_on" in rows else pd.Series(pd.NA, index=rows.index, dtype="boolean")
    return rows.assign(visualized=truth("beats_photos"), off=off)


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (label, layer): units, visualized, switched off and the medians of MEDIANS."""
    present = {c: (c, "median") for c in MEDIANS if c in rows}
    return (flags(rows).groupby(["label", "layer"], sort=False)
            .agg(units=("feature", "size"), visualized=("visualized", "sum"), switched_off=("off", "sum"), **present)
            .reset_index())


def markdown(rows: pd.DataFrame) -> str:
    """Two Markdown tables: visualized / units per method and block, then per method its totals and
    the medians over all its units."""
    table = summary(rows)
    layers = sorted(table["layer"].unique())
    lines = ["| method | " + " | ".join(f"block {b}" if i == 0 else str(b) for i, b in enumerate(layers))
             + " | all |", "|" + " --- |" * (len(layers) + 2)]
    for label, part in table.groupby("label", sort=False):
        cells = {int(r.layer): f"{int(r.visualized)}/{int(r.units)}" for r in part.itertuples()}
        won, n = int(part["visualized"].sum()), int(part["units"].sum())
        lines.append(f"| {label} | " + " | ".join(cells.get(int(b), "") for b in layers)
                     + f" | {won}/{n} ({won / n:.0%}) |")
    medians = [k for k in MEDIANS if k in rows]
    lines += ["", "| method | visualized | switched off | " + " | ".join(MEDIANS[k] for k in medians) + " |",
              "|" + " --- |" * (3 + len(medians))]
    for label, part in flags(rows).groupby("label", sort=False):
        off = "?" if part["off"].isna().all() else str(int(part["off"].sum()))
        meds = [f"{part[k].median():.0f}" if k == "seconds_per_unit" else f"{part[k].median():.2f}" for k in medians]
        lines.append(f"| {label} | {int(part['visualized'].sum())}/{len(part)} | {off} | " + " | ".join(meds) + " |")
    return "\n".join(lines)


def promote(rows: pd.DataFrame, csv: list[str], path: str | None = None) -> tuple[list, str]:
    """Choose the methods by depth from one model's rows (every method on every block) and store
    them as its family's; returns the methods and the file written."""
    from sweep.core.errors import SweepError
    from sweep.method.by_depth import DepthMethod, describe, promote_methods, split_by_depth
    from sweep.models.anatomy import anatomy_of

    missing = {"model", "param", "site", "lr", "tv", "steps", "percentile"} - set(rows)
    if missing:
        raise SweepError(f"--promote: the rows lack {', '.join(sorted(missing))} (demo_quality.py writes them)")
    models = sorted(rows["model"].unique())
    if len(models) != 1:
        raise SweepError(f"--promote: the rows must be of one model, not {', '.join(models)}")
    anatomy = anatomy_of(models[0])
    blocks = len(anatomy.blocks)
    table = summary(rows)
    scores, recipe = {}, {}
    for label, part in table.groupby("label", sort=False):
        if sorted(part["layer"]) != list(range(blocks)):
            raise SweepError(f"--promote: method {label} was not measured on every block of {models[0]} (0-{blocks - 1})")
        mine = rows[rows["label"] == label]
        settings = mine[["param", "site", "lr", "tv"]].drop_duplicates()
        if len(settings) != 1:
            raise SweepError(f"--promote: method {label} mixes settings ({len(settings)} of param, site, lr, tv)")
        recipe[label] = settings.iloc[0]
        part = part.set_index("layer").sort_index()
        scores[label] = list(zip(part["visualized"].astype(float), part["percentile"].astype(float)))
    split = split_by_depth(scores)
    methods = [DepthMethod(start / blocks, str(recipe[label]["param"]), str(recipe[label]["site"]),
                           float(recipe[label]["lr"]), float(recipe[label]["tv"])) for start, label in split]
    won = sum(scores[label][b][0] for i, (start, label) in enumerate(split)
              for b in range(start, split[i + 1][0] if i + 1 < len(split) else blocks))
    units = int(table["units"].sum() / len(scores))
    provenance = {"model": models[0], "benchmark": ", ".join(csv), "methods": ", ".join(scores),
                  "chosen": ", ".join(f"{label} from block {start}" for start, label in split),
                  "visualized": f"{int(won)}/{units}", "steps": int(rows["steps"].max()),
                  "units_per_block": int(units / blocks), "judge": "sweep/work/quality.py (beats every photo, switched on)"}
    written = promote_methods(anatomy.entry.family, methods, provenance, path)
    print(f"promoted {anatomy.entry.family} --recipe best: {describe(methods)} ({int(won)}/{units} units "
          f"visualized on {models[0]}) -> {written}")
    return methods, str(written)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", nargs="+", required=True, help="demo_quality.py's per-unit CSV(s)")
    parser.add_argument("--labels", nargs="+", help="only these methods, in this order (default: all, as found)")
    parser.add_argument("--summary", help="write the per-(method, block) numbers here as a CSV")
    parser.add_argument("--promote", action="store_true",
                        help="store the best methods by depth as the model family's --recipe best")
    parser.add_argument("--registry-file", help="where --promote writes (default: sweep/method/tuned_recipes.json)")
    args = parser.parse_args(argv)
    try:
        rows = pd.concat([pd.read_csv(path) for path in args.csv], ignore_index=True)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        print(f"error: --csv: {exc}", file=sys.stderr)
        return 2
    missing = {"label", "layer", "feature", "beats_photos", "switched_on"} - set(rows)
    if missing:
        print(f"error: --csv: not demo_quality.py rows (missing {', '.join(sorted(missing))})", file=sys.stderr)
        return 2
    if args.labels:
        unknown = sorted(set(args.labels) - set(rows["label"]))
        if unknown:
            print(f"error: --labels: {', '.join(unknown)} not in the CSV; allowed: "
                  f"{', '.join(dict.fromkeys(rows['label']))}", file=sys.stderr)
            return 2
        rows = pd.concat([rows[rows["label"] == label] for label in args.labels], ignore_index=True)
    print(markdown(rows))
    if args.summary:
        summary(rows).to_csv(args.summary, index=False, float_format="%.4g")
    if args.promote:
        from sweep.core.errors import SweepError

        try:
            promote(rows, args.csv, args.registry_file)
        except SweepError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
