"""Ablation pipeline throughput vs the bare model forward on the same decoded images.

Makes N JPEGs (with boxes) in a temporary ImageNet layout, then measures in one run:
  bare:     the classifier's forward on the already decoded, masked, resized images (batches of B);
  pipeline: the whole Ray Data job (list, decode, mask, resize, classify, write Parquet) on local Ray.
Both count images x conditions. Prints images/s of each and the ratio.

    .venv/bin/python benchmarks/bench_ablation.py --model MobileNetV2 --images 96
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from sweep.data.imagenet import imagenet_synsets, train_with_boxes  # noqa: E402
from sweep.experiments.ablations import Classifier, prepare_batch, registry_model  # noqa: E402
from sweep.experiments.conditions import MASK_CONDITIONS  # noqa: E402
from sweep.pipelines.ablations import AblationConfig, DataSpec, run_ablation  # noqa: E402


def make_dataset(root: str, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        wnid = imagenet_synsets()[i % 10]
        os.makedirs(f"{root}/train/{wnid}", exist_ok=True)
        os.makedirs(f"{root}/boxes/{wnid}", exist_ok=True)
        img = (rng.random((375, 500, 3)) * 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        with open(f"{root}/train/{wnid}/{wnid}_{i}.JPEG", "wb") as fh:
            fh.write(buf.getvalue())
        with open(f"{root}/boxes/{wnid}/{wnid}_{i}.xml", "w") as fh:
            fh.write(f"<annotation><object><name>{wnid}</name><bndbox><xmin>100</xmin><ymin>80</ymin>"
                     f"<xmax>380</xmax><ymax>300</ymax></bndbox></object></annotation>")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="MobileNetV2")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    spec = registry_model(args.model, "random")
    with tempfile.TemporaryDirectory() as tmp:
        make_dataset(tmp, args.images)
        listing = train_with_boxes(f"{tmp}/train", f"{tmp}/boxes")
        recs = listing.records
        size = 224
        decoded = prepare_batch({k: [r[k] for r in recs] for k in ("image_id", "path", "label", "boxes")},
                                "foreground_background", MASK_CONDITIONS, size)
        classifier = Classifier(spec)
        n = len(decoded["label"])
        classifier({k: v[:2] for k, v in decoded.items()})  # warm-up
        t0 = time.perf_counter()
        for i in range(0, n, args.batch_size):
            classifier({k: v[i:i + args.batch_size] for k, v in decoded.items()})
        bare = n / (time.perf_counter() - t0)

        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        cfg = AblationConfig("foreground_background", f"{tmp}/out", DataSpec("train_boxes", f"{tmp}/train",
                             boxes=f"{tmp}/boxes"), batch_size=args.batch_size)
        t0 = time.perf_counter()
        run_ablation(cfg, [spec])
        pipe = n / (time.perf_counter() - t0)
        ray.shutdown()
    print(f"{args.model}: {len(recs)} images x {len(MASK_CONDITIONS)} conditions = {n} classified, "
          f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print(f"bare forward on decoded images: {bare:8.1f} images/s")
    print(f"Ray Data pipeline (end to end): {pipe:8.1f} images/s  ratio {pipe / bare:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
