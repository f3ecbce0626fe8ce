"""Top natural images per feature on Ray Data: decode and resize as tasks, scan in an actor pool, fold
the batches into a bounded top-k state on the driver, write one Parquet part per (split, model)."""

from __future__ import annotations

import logging
import posixpath

import pandas as pd
import ray
import torch

from sweep.core.errors import SweepError
from sweep.data.imagenet import Listing
from sweep.experiments.top_images import TopImagesConfig, top_rows, unit_table, write_thumbs
from sweep.experiments.topk import TopK
from sweep.models.build import check_weights
from sweep.pipelines.images import scan_activations
from sweep.store.layout import TOP_IMAGES, TOP_SCHEMA
from sweep.store.outputs import atomic_write, check_writable, frame_parquet_bytes, open_root

log = logging.getLogger(__name__)


def check_top_images(config: TopImagesConfig):
    """Everything checked before Ray starts (the job calls it first): the model and its arguments,
    the layers and their site, the weights, a writable root. Returns `unit_table(config)`."""
    anatomy, blocks, site, units = unit_table(config)
    for b in blocks:
        b.site(site)
    check_weights(anatomy.entry, config.weights)
    fs, root = open_root(config.out, config.storage_options)
    check_writable(fs, root, config.out)  # a missing bucket or unwritable root: before any work
    return anatomy, blocks, site, units


def scan_top_images(config: TopImagesConfig, listing: Listing, checked: tuple | None = None) -> pd.DataFrame:
    """Run the scan over `listing`; write and return the top-k rows. `checked`: the result of
    `check_top_images` when the caller ran it (else it is run here)."""
    anatomy, blocks, site, units = checked or check_top_images(config)
    fs, root = open_root(config.out, config.storage_options)
    records = listing.records
    state = TopK(len(units), config.k)
    seen = skipped = 0
    for positions, batch_acts in scan_activations(records, anatomy, config.weights, [b.index for b in blocks], site,
                                              config.batch_size, config.actors, config.actor_cpus,
                                              config.storage_options):
        acts = torch.from_numpy(batch_acts)
        ok = ~torch.isnan(acts).any(dim=1)
        skipped += int((~ok).sum())
        ids = torch.from_numpy(positions)
        state.update(acts[ok], ids[ok])
        seen += len(ids)
    if seen != len(records):
        raise SweepError(f"scanned {seen} images, expected {len(records)}")
    rows = top_rows(state, units, site, records)
    path = posixpath.join(root, TOP_IMAGES.part("part-00000.parquet", split=config.split, model=anatomy.entry.key))
    atomic_write(fs, path, frame_parquet_bytes(rows, TOP_SCHEMA))
    log.info("%s: top-%d of %d units over %d images (%d unreadable) -> %s", anatomy.entry.key, config.k,
             len(units), seen, skipped, path)
    by_id = {r["image_id"]: r for r in records}
    thumbs = [by_id[i] for i in sorted(set(rows["image_id"]))]
    if thumbs:  # a small picture of each distinct top image, made in tasks, for the atlas
        made = ray.data.from_items([{"image_id": r["image_id"], "path": r["path"]} for r in thumbs],
                                   override_num_blocks=max(1, min(len(thumbs) // 16, 200)))
        made = made.map_batches(write_thumbs, batch_size=16, num_cpus=0.5, fn_kwargs={
            "root": config.out, "split": config.split, "storage_options": config.storage_options}).to_pandas()
        for status in made.loc[~made["status"].isin(["written", "present"]), "status"].drop_duplicates():
            log.warning("top image thumbnail not made: %s", status)
        log.info("%s: %d top image thumbnail(s) written, %d already present", anatomy.entry.key,
                 int((made["status"] == "written").sum()), int((made["status"] == "present").sum()))
    return rows
