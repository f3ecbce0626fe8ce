"""The shared front of every Ray Data job over images: records -> decoded, conditioned, resized rows."""

from __future__ import annotations

import numpy as np
import ray

from sweep.experiments.ablations import prepare_batch
from sweep.models.sources import Preprocess


def prepared_images(records: list[dict], size: int, experiment: str = "frequency",
                    conditions: tuple[str, ...] = ("original",), storage_options: dict | None = None,
                    preprocess: Preprocess | None = None):
    """A Ray Dataset with one row per (image, condition): image_id, label, condition, status, error, image.

    With `preprocess` (the natural-image jobs) images are resized as the model's own evaluation does
    (short side to input / crop_pct with its interpolation, centre crop); without it (the paper's
    ablations) as the paper did, Resize(size) + CenterCrop(size), bilinear.

    Decoding runs in tasks with half a CPU each, so that actor pools downstream keep CPUs (a pool
    that holds every CPU starves the decode tasks and hangs).
    """
    rows = [{**{k: r[k] for k in ("image_id", "path", "label", "boxes")}, "box_error": r.get("box_error", "")}
            for r in records]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // 8, 200)))
    own = {} if preprocess is None else {"size": preprocess.input_size, "resize": preprocess.resize_size,
                                         "interpolation": preprocess.interpolation}
    return ds.map_batches(prepare_batch, batch_size=8, num_cpus=0.5, fn_kwargs={
        "experiment": experiment, "conditions": conditions, "size": size, "storage_options": storage_options, **own})


def gpus_per_actor() -> float:
    """One GPU per actor where the cluster has GPUs, else CPU actors."""
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def stacked(column: np.ndarray) -> np.ndarray:
    """A column of per-image vectors as one (B, n) array (Ray Data gives an object array of rows
    when it could not make a tensor column)."""
    return np.array(np.stack(column) if column.dtype == object else column)
