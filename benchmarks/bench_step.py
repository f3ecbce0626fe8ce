"""Time one visualization step: F features batched in one pass vs one feature at a time.

Both modes run the same engine (`sweep.render.render`) with the paper's recipe on random weights;
the only difference is how many features share a forward/backward pass. A "step" is one
iteration of the loop for all F features (F x copies augmented images, forward + input gradient
+ Adam). The first iteration of each run is warm-up and is not counted.

    .venv/bin/python benchmarks/bench_step.py                      # vit_tiny and vit_small, CPU
    .venv/bin/python benchmarks/bench_step.py --models vit_tiny_patch16_224 --features 16 --iters 4
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import statistics
import time

import torch

from sweep.models.anatomy import anatomy_of
from sweep.models.build import build
from sweep.recipe import Recipe
from sweep.render import render, seeds_for
from sweep.batch import resolve_device


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def step_times(net, anatomy, block, features, recipe, device, per_pass=None) -> list[float]:
    """Wall seconds of each loop iteration after the first (warm-up)."""
    stamps = []

    def tick(_):
        if device.type != "cpu":
            torch.accelerator.synchronize()
        stamps.append(time.perf_counter())

    start = time.perf_counter()
    render(net, anatomy, block, anatomy.default_site, features, recipe, seeds_for(features), device,
           progress=tick, features_per_pass=per_pass)
    stamps.insert(0, start)
    return [b - a for a, b in zip(stamps, stamps[1:])][1:]


def bench_model(name: str, n_features: int, iters: int, layer: int | None, device,
                per_pass: int | None) -> dict:
    anatomy = anatomy_of(name)
    net = build(anatomy.entry, "random", device)
    block = anatomy.block(layer if layer is not None else -1)
    recipe = Recipe(steps=iters)  # iters + 1 iterations; the first is warm-up
    features = list(range(n_features))
    single = sum(statistics.median(step_times(net, anatomy, block, [f], recipe, device)) for f in features)
    one_pass = statistics.median(step_times(net, anatomy, block, features, recipe, device))
    row = {"model": anatomy.entry.key, "layer": block.index, "features": n_features,
           "copies": recipe.copies, "image_size": anatomy.preprocess.input_size,
           "one_at_a_time_step_s": round(single, 4), "batched_one_pass_step_s": round(one_pass, 4),
           "speedup_one_pass": round(single / one_pass, 3),
           "features_per_pass": per_pass or "", "batched_chunked_step_s": "", "speedup_chunked": ""}
    if per_pass:
        chunked = statistics.median(step_times(net, anatomy, block, features, recipe, device, per_pass))
        row.update(batched_chunked_step_s=round(chunked, 4), speedup_chunked=round(single / chunked, 3))
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["vit_tiny_patch16_224", "vit_small_patch16_224"])
    parser.add_argument("--features", type=int, default=16, help="features per batch (default 16)")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per run (default 3)")
    parser.add_argument("--layer", type=int, help="block index (default: the last block, full depth)")
    parser.add_argument("--device", help="default: the accelerator if any, else cpu")
    parser.add_argument("--per-pass", type=int, default=2,
                        help="also time the batch split into passes of this many features (default 2; 0: skip)")
    parser.add_argument("--csv", help="append results to this CSV (e.g. benchmarks/results/step.csv)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"device: {device} ({name}), torch threads: {torch.get_num_threads()}, cores: {os.cpu_count()}")
    rows = []
    for model in args.models:
        row = bench_model(model, args.features, args.iters, args.layer, device, args.per_pass or None)
        rows.append(row)
        line = (f"{row['model']} layer {row['layer']}, {args.features} features x {row['copies']} copies: "
                f"one at a time {row['one_at_a_time_step_s']:.3f} s/step | batched, one pass "
                f"{row['batched_one_pass_step_s']:.3f} s/step = {row['speedup_one_pass']:.2f}x")
        if row["features_per_pass"]:
            line += (f" | batched, {row['features_per_pass']} features per pass "
                     f"{row['batched_chunked_step_s']:.3f} s/step = {row['speedup_chunked']:.2f}x")
        print(line)
    if args.csv:
        new = not os.path.exists(args.csv)
        with open(args.csv, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["date", "device", *rows[0]])
            if new:
                writer.writeheader()
            for row in rows:
                writer.writerow({"date": dt.date.today().isoformat(), "device": f"{device} {name}", **row})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
