"""The shared front of every Ray Data job over images: records -> decoded, conditioned, resized rows."""

from __future__ import annotations

import logging

import numpy as np
import ray

from sweep.experiments.ablations import prepare_batch
from sweep.models.sources import Preprocess

log = logging.getLogger(__name__)


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


def scan_activations(records: list[dict], anatomy, weights: str, layers: list[int], site: str, batch_size: int,
                     actors: int | None, actor_cpus: float, storage_options: dict | None = None, what: str = ""):
    """Every image's patch-mean activations of every unit of `layers` (concatenated), one forward per
    image in an actor pool (`ActivationScanner`): yields, batch by batch in the order Ray Data returns
    them, (the images' indices in `records`, (B, units) float32 with a NaN row for each unreadable
    image, logged once). The top-images and matching jobs both read units this way."""
    from sweep.core.errors import SweepError
    from sweep.experiments.top_images import ActivationScanner

    index = {str(r["image_id"]): i for i, r in enumerate(records)}
    if len(index) != len(records):
        raise SweepError(f"{what}image ids are not unique in this listing")
    ds = prepared_images(records, anatomy.preprocess.input_size, storage_options=storage_options,
                         preprocess=anatomy.preprocess)
    ds = ds.map_batches(ActivationScanner, fn_constructor_args=(anatomy.entry.key, weights, list(layers), site),
                        batch_size=batch_size, concurrency=actors or 1, num_gpus=gpus_per_actor(), num_cpus=actor_cpus)
    for batch in ds.iter_batches(batch_format="numpy", batch_size=batch_size):
        acts = stacked(batch["acts"])
        for error in np.asarray(batch["error"])[np.isnan(acts).any(axis=1)]:
            log.warning("image skipped: %s", error)
        yield np.array([index[str(i)] for i in batch["image_id"]], dtype=np.int64), acts
