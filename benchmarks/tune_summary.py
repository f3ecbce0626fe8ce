"""One line per trial of a `sweep tune` run: its scores and the fraction of units it visualized.

A unit counts as visualized when its image's clean activation beats the unit's best reference image
(with `--reference` a folder of natural photos: every photo).
Prints the table, best combined score first, and writes it as CSV.

    .venv/bin/python benchmarks/tune_summary.py --results results/tune --model demo/dinov2-vits14 \\
        --csv benchmarks/results/2026-12-06-tune-dinov2-cpu.csv
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd


def summary(trials: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, t in trials.iterrows():
        layers = np.asarray(t.unit_layer)
        beats = np.asarray(t.unit_act_final, dtype=float) > np.asarray(t.unit_reference_act, dtype=float)
        row = {"lr": t.lr, "tv": t.tv, "steps": t.steps, "combined": round(float(t.combined), 4),
               "relative_activation": round(float(t.relative_activation), 4),
               "robustness": round(float(t.robustness), 4), "units": len(beats),
               "visualized": int(beats.sum()), "fraction_visualized": round(float(beats.mean()), 4)}
        for layer in sorted(set(layers.tolist())):
            mine = beats[layers == layer]
            row[f"visualized_block_{layer}"] = f"{int(mine.sum())}/{len(mine)}"
        row["act_final"] = " ".join(f"{a:.3f}" for a in t.unit_act_final)
        row["best_reference_act"] = " ".join(f"{a:.3f}" for a in t.unit_reference_act)
        row.update({"reference": t.reference, "grid": t.grid, "device": t.device, "wall_s": round(float(t.wall_s)),
                    "trial": t.trial})
        rows.append(row)
    return pd.DataFrame(rows).sort_values("combined", ascending=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", required=True, help="the results root of the tuning run")
    parser.add_argument("--model", required=True)
    parser.add_argument("--csv", help="write the table here")
    args = parser.parse_args(argv)
    from sweep.models.anatomy import anatomy_of
    from sweep.store.results import Results

    trials = Results(args.results).tuning(model=anatomy_of(args.model).entry.key)
    table = summary(trials[trials.status == "ok"])
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.drop(columns=["trial", "reference", "grid", "act_final", "best_reference_act"]).to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
