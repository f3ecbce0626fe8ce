"""The ablations rehearsed at ImageNet's size: a synthetic val set, the real Ray Data job, a micro classifier.

    python benchmarks/rehearse.py --ablations 5000 25000 50000 --csv ...

`make_val` writes N small JPEGs in ImageNet's val layout (ILSVRC2012_val_NNNNNNNN.JPEG, flat) with a
LOC_val_solution.csv giving each a class and one box, the layout `jobs/ablations.py --val
--val-solution` reads; a size below N lists the first n images in a CSV of its own. Each run is a
process of its own joined to a Ray head the rehearsal started (so its peak memory is the driver's);
the classifier is `dev/vit-micro` (random weights, 32 px): the job's cost, not the model's, is what
is measured. `stage_bare` times the same classifier on already decoded batches in one process with
the actor's torch threads, for the throughput ratio.
"""

from __future__ import annotations

import io
import os
import time

import numpy as np
from PIL import Image

MODEL = "dev/vit-micro"
W, H = 64, 48


def image_id(i: int) -> str:
    return f"ILSVRC2012_val_{i:08d}"


def make_val(root: str, n: int, seed: int = 0) -> None:
    """n JPEGs (smooth colour fields with noise), numbered from 1; images already there are kept."""
    os.makedirs(f"{root}/val", exist_ok=True)
    rng = np.random.default_rng(seed)
    xx = np.mgrid[0:H, 0:W][1]
    for i in range(1, n + 1):
        path = f"{root}/val/{image_id(i)}.JPEG"
        if os.path.exists(path):
            continue
        base = rng.random(3) * 255
        img = (base + 40 * np.sin(xx[..., None] / (3 + i % 7)) + rng.normal(0, 8, (H, W, 3))).clip(0, 255)
        buf = io.BytesIO()
        Image.fromarray(img.astype(np.uint8)).save(buf, format="JPEG", quality=85)
        with open(path, "wb") as fh:
            fh.write(buf.getvalue())


def solution(root: str, n: int) -> str:
    """A LOC_val_solution.csv of the first n images: class i % 1000, box (8, 6)-(48, 40)."""
    from sweep.data.imagenet import imagenet_synsets

    wnids = imagenet_synsets()
    path = f"{root}/LOC_val_solution-{n}.csv"
    if not os.path.exists(path):
        lines = ["ImageId,PredictionString"] + [f"{image_id(i)},{wnids[i % 1000]} 8 6 48 40" for i in range(1, n + 1)]
        with open(path + ".tmp", "w") as fh:
            fh.write("\n".join(lines) + "\n")
        os.replace(path + ".tmp", path)
    return path


def config(experiment: str, root: str, n: int, out: str, conditions=None, batch_size: int = 256) -> dict:
    return {"experiment": experiment, "out": out, "models": [MODEL], "weights": "random",
            "conditions": conditions, "batch_size": batch_size, "actors": 1,
            "rows_per_part": 20_000,  # parts written along the way: a job killed halfway leaves some behind
            "data": {"kind": "val_solution", "root": f"{root}/val", "solution": solution(root, n)}}


def stage_ablation(spec: dict) -> dict:
    """run_ablation on the head at spec["ray"]; checks every image's rows exactly once."""
    import ray

    from sweep.core.validation import parse
    from sweep.pipelines.ablations import AblationConfig, run_ablation
    from sweep.store.results import Results

    cfg = parse(AblationConfig, spec["config"])
    ray.init(address=spec["ray"], log_to_driver=False)
    try:
        started = time.perf_counter()
        summary = run_ablation(cfg, force=spec.get("force", False))[MODEL]
        wall = time.perf_counter() - started
    finally:
        ray.shutdown()
    rows = Results(cfg.out).ablations(cfg.experiment, model=MODEL, columns=["image_id", "condition", "status"])
    n, conds = spec["images"], len(summary["conditions"])
    keys = set(zip(rows["image_id"], rows["condition"]))
    return {"job_wall_s": round(wall, 2), "rows": len(rows), "conditions": conds,
            "exactly_once": len(rows) == len(keys) == n * conds, "ok_rows": int((rows["status"] == "ok").sum())}


def stage_bare(spec: dict) -> dict:
    """The classifier alone on decoded batches (images x conditions per second), the actor's threads."""
    import torch

    from sweep.data.imagenet import val_from_solution
    from sweep.experiments.ablations import Classifier, conditions_of, prepare_batch, registry_model

    cfg = spec["config"]
    conds = conditions_of(cfg["experiment"], cfg["conditions"])
    torch.set_num_threads(spec.get("threads", 1))
    recs = val_from_solution(cfg["data"]["root"], cfg["data"]["solution"], limit=spec["images"]).records
    cols = {k: [r[k] for r in recs] for k in ("image_id", "path", "label", "boxes")}
    classifier = Classifier(registry_model(MODEL, "random"))
    started = time.perf_counter()
    decoded = prepare_batch(cols, cfg["experiment"], conds, 32)
    decode_s = time.perf_counter() - started
    batch = cfg["batch_size"]
    n = len(decoded["label"])
    classifier({k: v[:2] for k, v in decoded.items()})
    started = time.perf_counter()
    for i in range(0, n, batch):
        classifier({k: v[i:i + batch] for k, v in decoded.items()})
    forward_s = time.perf_counter() - started
    return {"bare_rows": n, "bare_forward_rows_s": round(n / forward_s, 1),
            "bare_decode_forward_rows_s": round(n / (forward_s + decode_s), 1)}

