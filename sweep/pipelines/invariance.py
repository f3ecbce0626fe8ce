"""Unit invariance on Ray Data: each distinct top image decoded once, its units scored in an actor pool."""

from __future__ import annotations

import pandas as pd

from sweep.core.errors import SweepError
from sweep.experiments.invariance import InvarianceScanner
from sweep.models.anatomy import anatomy_of
from sweep.pipelines.images import gpus_per_actor, prepared_images


def run_invariance(model: str, units: pd.DataFrame, site: str, listing, weights: str = "pretrained",
                   actors: int = 1, seed: int = 0, storage_options: dict | None = None) -> pd.DataFrame:
    """Unit invariance on Ray Data: decode each distinct top image once, score its units in an actor."""
    anatomy = anatomy_of(model)
    wanted = set(units["image_id"])
    records = [r for r in listing.records if r["image_id"] in wanted]
    missing = wanted - {r["image_id"] for r in records}
    if missing:
        raise SweepError(f"{len(missing)} top image(s) are not in the given images, e.g. {sorted(missing)[0]!r}")
    ds = prepared_images(records, anatomy.preprocess.input_size, storage_options=storage_options,
                         preprocess=anatomy.preprocess)
    ds = ds.map_batches(InvarianceScanner, fn_constructor_args=(anatomy.entry.key, weights, site, units, seed),
                        batch_size=4, batch_format="numpy", concurrency=actors, num_gpus=gpus_per_actor(),
                        num_cpus=0.5)
    frame = pd.concat(list(ds.iter_batches(batch_format="pandas")), ignore_index=True)
    return frame.sort_values(["layer", "feature"]).reset_index(drop=True)
