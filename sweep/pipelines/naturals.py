"""Natural images for a model's visualized units without a dataset: the photos the project ships and
their crops (150 images) as the split `photos`: each unit's top images (with thumbnails) and its
activation maps on its best few, so that the demo's first atlas shows, beside each visualization,
the natural images that drive the unit most and where in them (Microscope's layout).

Both steps skip what the root already holds, so the demo's command stays resumable.
"""

from __future__ import annotations

import logging
import posixpath

from sweep.data.imagenet import Listing
from sweep.experiments.matching import photo_probe
from sweep.experiments.top_images import TopImagesConfig
from sweep.models.anatomy import anatomy_of
from sweep.pipelines.activation_maps import map_table_part, run_activation_maps
from sweep.pipelines.top_images import check_top_images, scan_top_images
from sweep.store.layout import TOP_IMAGES
from sweep.store.outputs import open_root
from sweep.store.results import Results

log = logging.getLogger(__name__)

SPLIT = "photos"


def photo_naturals(out: str, model: str, units: dict[int, list[int]], weights: str = "pretrained", k: int = 5,
                   maps_per_unit: int = 3, storage_options: dict | None = None, records: list[dict] | None = None,
                   split: str = SPLIT) -> dict:
    """Top `k` of the shipped photos and crops (or of `records`, named `split`) for every unit of the
    layers in `units` ({layer: [features]}, the visualized ones), and activation maps of those features
    on their `maps_per_unit` best images. Returns {"top_rows": n or None when already there, "maps": n new}."""
    anatomy = anatomy_of(model)
    key = anatomy.entry.key
    fs, root = open_root(out, storage_options)
    config = TopImagesConfig(model=key, out=out, split=split, k=k, layers=tuple(sorted(units)), site="mlp",
                             weights=weights, batch_size=16, storage_options=storage_options or {})
    checked = check_top_images(config)
    records = photo_probe(fs, root) if records is None else records
    top_part = posixpath.join(root, TOP_IMAGES.part("part-00000.parquet", split=split, model=key))
    top_rows = None
    if fs.exists(top_part):
        log.info("%s: top %s images already there, kept", key, split)
    else:
        top_rows = len(scan_top_images(config, Listing(records=records), checked))
    tops = Results(out, storage_options).top_images(split=split, model=key)
    by_id = {r["image_id"]: r for r in records}
    made = 0
    for layer, features in sorted(units.items()):
        mine = tops[(tops["layer"] == layer) & tops["feature"].isin(features) & (tops["rank"] < maps_per_unit)]
        ids = sorted(set(mine["image_id"]) & set(by_id))
        if not ids:
            continue
        listing = Listing(records=[by_id[i] for i in ids])
        if fs.exists(posixpath.join(root, map_table_part(key, layer, "mlp", features, ids))):
            continue
        frame = run_activation_maps(key, layer, list(features), listing, out, site="mlp", weights=weights,
                                    storage_options=storage_options)
        made += int((frame["status"] == "ok").sum())
    return {"top_rows": top_rows, "maps": made}
