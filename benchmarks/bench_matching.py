"""Time and peak memory of the matching job (jobs/matching.py) for N models, measured, and extrapolated.

Runs both stages on this machine's own local Ray (a GPU where there is one: `run_gpu.sh` part matching) over --images synthetic probe images (noise PNGs at
224 px: timing needs no content) with random weights and every block of each model, and records per
stage the wall time, the achieved TFLOP/s by the job's own arithmetic (`matching_cost`), the
driver's peak RSS and the pair tasks' peak RSS. Then extrapolates with the measured rates: the
same models at --extrapolate images, and the paper preset's 47 models at that many, on this CPU.
Appends one row per run to --csv.

    .venv/bin/python benchmarks/bench_matching.py --count 2 8 --images 1000 \\
        --csv benchmarks/results/2026-12-07-matching-cost-cpu.csv
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.csv_rows import append_rows  # noqa: E402

#: The paper preset's smallest models (7,680 to 11,520 units each), so that 8 of them over 1,000
#: images run in minutes on a 2-core CPU; the rates measured on them extrapolate by FLOPs.
SMALL = ["pit_ti_224.in1k", "pit_ti_distilled_224.in1k", "convit_tiny.fb_in1k",
         "deit_tiny_distilled_patch16_224.fb_in1k", "coat_lite_tiny.in1k", "coat_lite_mini.in1k",
         "pit_xs_224.in1k", "pit_xs_distilled_224.in1k"]


def noise_folder(folder: Path, count: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = folder / f"noise{i:05d}.png"
        if not path.exists():
            Image.fromarray((rng.random((224, 224, 3)) * 255).astype(np.uint8)).save(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, nargs="+", default=[2, 8], help="models per run (the first N of --models)")
    parser.add_argument("--models", nargs="+", default=SMALL)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--extrapolate", type=int, default=50_000, help="probe images to extrapolate to")
    parser.add_argument("--pair-memory-gb", type=float, default=2.0)
    parser.add_argument("--csv")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from sweep.data.imagenet import image_folder
    from sweep.experiments.matching import MatchConfig, matching_cost, probe_hash
    from sweep.pipelines.matching import check_matching, keyed, run_matching, scan_profiles
    from sweep.work.plan import PRESETS

    work = Path(tempfile.mkdtemp(prefix="bench-matching-"))
    noise_folder(work / "probe", args.images)
    records = image_folder(str(work / "probe")).records
    phash = probe_hash(records)
    paper = check_matching(MatchConfig(tuple(PRESETS["paper"]()["models"]), str(work / "paper"), weights=("random",)),
                           check=False)
    import torch

    threads = os.cpu_count() or 1
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    ray.init(address="local", num_cpus=threads, include_dashboard=False, log_to_driver=False)  # its own Ray
    rows = []
    try:
        for count in args.count:
            config = MatchConfig(tuple(args.models[:count]), str(work / f"root-{count}"), weights=("random",),
                                 pair_memory_gb=args.pair_memory_gb,
                                 pair_cpus=1.0 if device != "cpu" else float(threads))
            models = keyed(config, check_matching(config), records, phash)
            cost = matching_cost(models, len(records), config.k, config.chunk, config.pair_memory_gb * 1e9)
            began = time.perf_counter()
            for model in models:
                scan_profiles(config, model, records, phash)
            scan_s = time.perf_counter() - began
            began = time.perf_counter()
            summary = run_matching(config, records, phash, models)  # profiles there: pairs only
            pair_s = time.perf_counter() - began
            scan_rate, pair_rate = cost["scan_tflop"] / scan_s, cost["pair_tflop"] / pair_s
            big = matching_cost(models, args.extrapolate, config.k, config.chunk, config.pair_memory_gb * 1e9)
            whole = matching_cost(paper, args.extrapolate, config.k, config.chunk, config.pair_memory_gb * 1e9)
            row = {"date": dt.date.today().isoformat(), "models": count, "units": cost["units"],
                   "pairs": cost["pairs"], "images": len(records), "scan_s": round(scan_s, 1),
                   "pair_s": round(pair_s, 1), "scan_tflops": round(scan_rate, 4), "pair_tflops": round(pair_rate, 4),
                   "driver_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                   "pair_peak_rss_mib": round(max(m["peak_rss_mib"] for m in summary["made"])),
                   "pair_memory_gb": args.pair_memory_gb, "profile_gb": round(cost["profile_bytes"] / 1e9, 3),
                   "extrapolate_images": args.extrapolate,
                   "these_models_hours": round((big["scan_tflop"] / scan_rate + big["pair_tflop"] / pair_rate) / 3600, 1),
                   "paper_47_hours": round((whole["scan_tflop"] / scan_rate + whole["pair_tflop"] / pair_rate) / 3600),
                   "paper_47_tflop": round(whole["scan_tflop"] + whole["pair_tflop"]),
                   "host": platform.node(), "device": device, "threads": threads,
                   "pair_gpu_peak_mib": max((m["gpu_peak_mib"] or 0) for m in summary["made"]) or None}
            rows.append(row)
            print(f"{count} models ({cost['units']:,} units, {cost['pairs']} pairs) over {len(records)} images: scan "
                  f"{scan_s:.0f} s ({scan_rate * 1e3:.0f} GFLOP/s), pairs {pair_s:.0f} s ({pair_rate * 1e3:.0f} GFLOP/s); "
                  f"peak RSS driver {row['driver_peak_rss_mib']} MiB, pair task {row['pair_peak_rss_mib']} MiB; "
                  f"at {args.extrapolate:,} images: these {row['these_models_hours']} h, the paper's 47 "
                  f"{row['paper_47_hours']:,} h on this machine ({device})", flush=True)
    finally:
        ray.shutdown()
    if args.csv:
        append_rows(args.csv, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
