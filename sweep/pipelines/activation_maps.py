"""Activation maps for a folder of images on Ray Data; unreadable images are logged, never fatal."""

from __future__ import annotations

import logging
import posixpath

import numpy as np
import pandas as pd

from sweep.experiments.activation_maps import MapMaker
from sweep.method.recipe import config_hash
from sweep.models.anatomy import anatomy_of
from sweep.models.build import check_weights
from sweep.pipelines.images import gpus_per_actor, prepared_images
from sweep.store.layout import MAP_TABLE
from sweep.store.outputs import atomic_write, check_writable, frame_parquet_bytes, open_root

log = logging.getLogger(__name__)


def check_activation_maps(model: str, layer, features: list[int], out: str, site: str | None = None,
                          weights: str = "pretrained", storage_options: dict | None = None):
    """Everything checked before Ray starts (the job calls it first): the model, the layer, its site
    and features, the weights, a writable root. Returns (anatomy, block, site)."""
    anatomy = anatomy_of(model)
    block = anatomy.block(layer)
    site = site or anatomy.default_site
    anatomy.check_features(block, site, features)
    check_weights(anatomy.entry, weights)
    check_writable(*open_root(out, storage_options), out)  # a missing bucket or unwritable root: before any work
    return anatomy, block, site


def map_table_part(model_key: str, layer: int, site: str, features: list[int], image_ids: list[str]) -> str:
    """The root-relative Parquet part a map run writes: named by its features and images, so a caller
    can tell whether that very run is already there."""
    name = config_hash({"features": list(features), "images": list(image_ids)})
    return MAP_TABLE.part(f"part-{site}-{name}.parquet", model=model_key, layer=layer)


def run_activation_maps(model: str, layer, features: list[int], listing, out: str, site: str | None = None,
                        weights: str = "pretrained", actors: int = 1, storage_options: dict | None = None):
    """Maps for every image of `listing` on Ray Data; also writes one Parquet of all maps (row-major grids)."""
    anatomy, block, site = check_activation_maps(model, layer, features, out, site, weights, storage_options)
    ds = prepared_images(listing.records, anatomy.preprocess.input_size, storage_options=storage_options,
                         preprocess=anatomy.preprocess)
    ds = ds.map_batches(MapMaker, fn_constructor_args=(anatomy.entry.key, weights, block.index, site, list(features),
                                                       out, storage_options),
                        batch_size=8, concurrency=actors, num_gpus=gpus_per_actor(), num_cpus=0.5)
    frame = pd.concat([b for b in ds.iter_batches(batch_format="pandas")], ignore_index=True)
    for error in frame.loc[frame["status"] != "ok", "error"].drop_duplicates():
        log.warning("image skipped: %s", error)
    frame.insert(1, "layer", block.index)
    frame.insert(2, "site", site)
    frame["values"] = frame["values"].map(lambda v: np.asarray(v, np.float32).tolist())
    fs, root = open_root(out, storage_options)
    part = map_table_part(anatomy.entry.key, block.index, site, features, [r["image_id"] for r in listing.records])
    atomic_write(fs, posixpath.join(root, part),
                 frame_parquet_bytes(frame.drop(columns=["layer"])))  # layer lives in the partition path
    return frame
