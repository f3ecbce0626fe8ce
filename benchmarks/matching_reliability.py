"""Split-half reliability of cross-model unit matching on the trained demo model.

Matches `demo/dinov2-vits14` at its 224 px against the same weights at another input size (default
168 px: other patch grid, other interpolated position embeddings, every image seen at another
scale) over the same probe images, and counts, per block, how many units find their own
counterpart (the same block and unit) as their first match in the other: the method's
reliability, since a unit can have no truer match than itself. Prints the table and appends it to
--csv.

    .venv/bin/python benchmarks/matching_reliability.py --out /tmp/match-demo \\
        --csv benchmarks/results/2026-12-07-matching-reliability-cpu.csv
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.csv_rows import append_rows  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo/dinov2-vits14")
    parser.add_argument("--other-size", type=int, default=168, help="the second copy's input size (default 168)")
    parser.add_argument("--out", required=True, help="results root for the matches")
    parser.add_argument("--images", help="probe image folder (default: the shipped photos and their crops)")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--csv", help="append the per-block rows here")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    import importlib.util

    from sweep.store.results import Results

    spec = importlib.util.spec_from_file_location("job_matching", Path(__file__).resolve().parents[1] / "jobs" / "matching.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)

    other = f"{args.model}[img_size={args.other_size}]"
    ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False,
             log_to_driver=False)  # its own Ray, never a foreign one
    try:
        began = time.perf_counter()
        argv = ["--model", args.model, other, "--weights", "pretrained", "--out", args.out, "--k", str(args.k),
                "--min-models", "2", "--show", "0"]
        if args.images:
            argv += ["--images", args.images] + (["--limit", str(args.limit)] if args.limit else [])
        code = job.main(argv)
        wall = time.perf_counter() - began
    finally:
        ray.shutdown()
    if code:
        return code
    rows = Results(args.out).matches(model=args.model, other=other)
    first = rows[rows["rank"] == 0]
    own = rows[(rows["layer_b"] == rows["layer_a"]) & (rows["unit_b"] == rows["unit_a"])]
    table = []
    for layer, mine in first.groupby("layer_a"):
        found = (mine["layer_b"] == layer) & (mine["unit_b"] == mine["unit_a"])
        in_top = own[own["layer_a"] == layer]
        table.append({"date": dt.date.today().isoformat(), "model": args.model, "other": other, "layer": int(layer),
                      "units": len(mine), "own_first": int(found.sum()), "own_first_fraction": round(found.mean(), 4),
                      "own_in_top_k": len(in_top), "k": args.k, "mutual": int(mine["mutual"].sum()),
                      "median_first_score": round(float(mine["score"].median()), 4),
                      "median_own_score": round(float(in_top["score"].median()), 4) if len(in_top) else None,
                      "images": int(rows["images"].iloc[0]), "wall_s": round(wall, 1), "host": platform.node(),
                      "device": "cpu", "threads": os.cpu_count()})
        print(f"block {layer:2d}: {found.sum():4d}/{len(mine)} units find their own counterpart first "
              f"({found.mean():.0%}); {len(in_top)} within the top {args.k}; median first score "
              f"{mine['score'].median():.3f}")
    total = sum(r["own_first"] for r in table)
    units = sum(r["units"] for r in table)
    print(f"all blocks: {total}/{units} ({total / units:.1%}) first; {rows['images'].iloc[0]} probe images; {wall:.0f} s")
    if args.csv:
        append_rows(args.csv, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
