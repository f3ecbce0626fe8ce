"""Scheduling overhead of the Ray layer: the same batches through `run_sweep` vs `BatchRunner` directly.

Both runs do the same (model, layer, feature) batches with the same recipe on random weights:
  direct: one process calls BatchRunner.run on every batch in turn (torch uses all cores);
  ray:    run_sweep on local Ray with N CPU workers (torch in each worker uses its CPU share).
Printed: wall seconds of each (Ray's with and without starting Ray), and the ratios.

    .venv/bin/python benchmarks/bench_ray_overhead.py                 # 2 CPU workers
    .venv/bin/python benchmarks/bench_ray_overhead.py --model deit_tiny_distilled_patch16_224 \
        --layers 0 5 11 --features 4 --steps 10
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray  # noqa: E402

from sweep.pipelines.feature_sweep import run_sweep  # noqa: E402
from sweep.work.batch import BatchRunner  # noqa: E402
from sweep.work.plan import SweepConfig, expand  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dev/vit-micro")
    parser.add_argument("--layers", type=int, nargs="+", help="block indices (default: all)")
    parser.add_argument("--features", type=int, default=8, help="features per layer (default 8)")
    parser.add_argument("--per-batch", type=int, default=2, help="features per batch (default 2)")
    parser.add_argument("--steps", type=int, default=40, help="recipe steps (default 40)")
    parser.add_argument("--workers", type=int, default=2, help="Ray CPU workers (default 2)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        def config(out):
            return SweepConfig.from_dict({
                "out": out, "models": [args.model], "weights": "random", "layers": args.layers,
                "features": {"mode": "first", "count": args.features}, "features_per_batch": args.per_batch,
                "recipe": {"steps": args.steps, "jitter": 4},
                "resources": {"num_gpus": 0, "num_cpus": os.cpu_count() / args.workers, "workers": args.workers}})

        direct_cfg = config(f"{tmp}/direct")
        tasks = expand(direct_cfg)
        runner = BatchRunner(direct_cfg.out)
        t0 = time.perf_counter()
        for task in tasks:
            runner.run(task.batch)
        direct = time.perf_counter() - t0

        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        t1 = time.perf_counter()
        report = run_sweep(config(f"{tmp}/ray"), progress=False)
        t2 = time.perf_counter()
        ray.shutdown()
        assert report.done == sum(len(t.batch.features) for t in tasks)

    n = sum(len(t.batch.features) for t in tasks)
    print(f"{len(tasks)} batches, {n} features of {args.model}, {args.steps} steps, {os.cpu_count()} cores")
    print(f"direct (one process):          {direct:7.2f} s")
    print(f"ray, {args.workers} workers (sweep only):   {t2 - t1:7.2f} s  ratio {(t2 - t1) / direct:.2f}x direct")
    print(f"ray, incl. ray.init:           {t2 - t0:7.2f} s  ratio {(t2 - t0) / direct:.2f}x direct")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
