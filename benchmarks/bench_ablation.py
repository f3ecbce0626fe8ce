"""Ablation pipeline throughput against the bare classifier, measured fairly in one run.

Makes N JPEGs (with boxes) in a temporary ImageNet layout, then measures, counting images x conditions:
  bare:forward         the classifier on already decoded, masked, resized images (batches of B), in
                       this process with as many torch threads as a pipeline actor gets;
  bare:decode+forward  the same, plus reading, decoding, masking and resizing each batch first (one
                       process, the same threads): decoding counted on the bare side too;
  pipeline             the whole Ray Data job (list, decode, mask, resize, classify, write Parquet)
                       on local Ray, run on N and on 2N images: steady_images_s = N / (t_2N - t_N)
                       is its rate once running, startup_s = t_N - N / steady the fixed cost
                       (starting actors, building the model, the first blocks) reported apart.
The ratios compare the pipeline's steady rate with each bare rate; the GPU target (issue 16) is
>= 0.80 of bare:forward. On a 2-core CPU decode tasks and the classifier share the cores, so
the CPU ratio says little about a GPU node.

    .venv/bin/python benchmarks/bench_ablation.py --model MobileNetV2 --images 48 --csv benchmarks/results/x.csv
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import ray  # noqa: E402

from benchmarks.csv_rows import append_rows  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from sweep.data.imagenet import imagenet_synsets, train_with_boxes  # noqa: E402
from sweep.experiments.ablations import Classifier, prepare_batch, registry_model  # noqa: E402
from sweep.experiments.conditions import MASK_CONDITIONS  # noqa: E402
from sweep.pipelines.ablations import AblationConfig, DataSpec, gpus_per_actor, run_ablation  # noqa: E402


def make_dataset(root: str, start: int, n: int) -> None:
    """n 500x375 JPEGs with one box each, numbered from `start` (so a second call adds images)."""
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        wnid = imagenet_synsets()[i % 10]
        os.makedirs(f"{root}/train/{wnid}", exist_ok=True)
        os.makedirs(f"{root}/boxes/{wnid}", exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray((rng.random((375, 500, 3)) * 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        with open(f"{root}/train/{wnid}/{wnid}_{i}.JPEG", "wb") as fh:
            fh.write(buf.getvalue())
        with open(f"{root}/boxes/{wnid}/{wnid}_{i}.xml", "w") as fh:
            fh.write(f"<annotation><object><name>{wnid}</name><bndbox><xmin>100</xmin><ymin>80</ymin>"
                     f"<xmax>380</xmax><ymax>300</ymax></bndbox></object></annotation>")


@ray.remote
def _actor_threads() -> int:
    return torch.get_num_threads()


def columns(recs: list[dict]) -> dict:
    return {k: [r[k] for r in recs] for k in ("image_id", "path", "label", "boxes")}


def bare_rates(spec, recs: list[dict], size: int, batch: int) -> tuple[float, float]:
    """(forward-only, decode+forward) images x conditions per second, in this process."""
    classifier = Classifier(spec)
    decoded = prepare_batch(columns(recs), "foreground_background", MASK_CONDITIONS, size)
    n = len(decoded["label"])
    classifier({k: v[:2] for k, v in decoded.items()})  # warm-up (first call allocates, may tune kernels)

    def sync():
        if classifier.device.type != "cpu":
            torch.accelerator.synchronize(classifier.device)

    sync()
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        classifier({k: v[i:i + batch] for k, v in decoded.items()})
    sync()
    forward = n / (time.perf_counter() - t0)
    per_batch = max(1, batch // len(MASK_CONDITIONS))  # records per batch: batch rows after the conditions
    t0 = time.perf_counter()
    for i in range(0, len(recs), per_batch):
        classifier(prepare_batch(columns(recs[i:i + per_batch]), "foreground_background", MASK_CONDITIONS, size))
    sync()
    return forward, n / (time.perf_counter() - t0)


def pipeline_seconds(spec, root: str, out: str, batch: int) -> float:
    cfg = AblationConfig("foreground_background", out, DataSpec("train_boxes", f"{root}/train", boxes=f"{root}/boxes"),
                         batch_size=batch)
    t0 = time.perf_counter()
    run_ablation(cfg, [spec], force=True)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="MobileNetV2", help="a zoo classifier (ImageNet-1k head)")
    parser.add_argument("--weights", default="random", help="random (default) or pretrained")
    parser.add_argument("--images", type=int, default=48, help="N: the pipeline also runs on 2N")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--csv", help="append one row to this CSV (e.g. benchmarks/results/<date>-ablation-cpu.csv)")
    args = parser.parse_args(argv)
    spec = registry_model(args.model, args.weights)
    from sweep.models.anatomy import anatomy_of

    size = anatomy_of(args.model).preprocess.input_size
    conds = len(MASK_CONDITIONS)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        cfg = AblationConfig("foreground_background", "unused", DataSpec("train_boxes", "unused", boxes="unused"))
        threads = ray.get(_actor_threads.options(num_cpus=cfg.actor_cpus, num_gpus=gpus_per_actor()).remote())
        with tempfile.TemporaryDirectory() as tmp:
            make_dataset(tmp, 0, args.images)
            t_n = pipeline_seconds(spec, tmp, f"{tmp}/out", args.batch_size)
            make_dataset(tmp, args.images, args.images)
            t_2n = pipeline_seconds(spec, tmp, f"{tmp}/out", args.batch_size)
            recs = train_with_boxes(f"{tmp}/train", f"{tmp}/boxes").records
            own = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                forward, decode_forward = bare_rates(spec, recs, size, args.batch_size)
            finally:
                torch.set_num_threads(own)
    finally:
        ray.shutdown()
    steady = args.images * conds / max(t_2n - t_n, 1e-9)
    startup = t_n - args.images * conds / steady
    row = {"date": dt.date.today().isoformat(), "host": platform.node(), "model": args.model,
           "weights": args.weights, "device": "cuda" if torch.cuda.is_available() else "cpu",
           "cpus": os.cpu_count(), "actor_threads": threads, "batch_size": args.batch_size,
           "images": args.images, "conditions": conds, "pipeline_s_n": round(t_n, 3), "pipeline_s_2n": round(t_2n, 3),
           "pipeline_steady_images_s": round(steady, 2), "pipeline_startup_s": round(startup, 2),
           "bare_forward_images_s": round(forward, 2), "bare_decode_forward_images_s": round(decode_forward, 2),
           "ratio_vs_bare_forward": round(steady / forward, 3),
           "ratio_vs_bare_decode_forward": round(steady / decode_forward, 3)}
    print(f"{args.model} ({args.weights}): {args.images} and {2 * args.images} images x {conds} conditions, "
          f"{os.cpu_count()} cores, {threads} torch thread(s) per actor and in the bare runs")
    print(f"bare forward on decoded images:    {forward:8.1f} images/s")
    print(f"bare decode + forward:             {decode_forward:8.1f} images/s")
    print(f"Ray Data pipeline, steady state:   {steady:8.1f} images/s  (start-up {startup:.1f} s apart)")
    print(f"ratio vs bare forward {steady / forward:.2f}, vs bare decode + forward {steady / decode_forward:.2f}")
    if args.csv:
        append_rows(args.csv, [row])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
