"""One visualization job: a model, a layer, a site and some features -> PNGs and Parquet rows."""

from __future__ import annotations

import logging
import posixpath
from dataclasses import field
from typing import Annotated

import pandas as pd
from pydantic import Field
from tqdm.auto import tqdm

from sweep.core.errors import SweepError
from sweep.core.validation import Count, Layer, NonNegativeInt, Seed, Text, config_dataclass
from sweep.method.by_depth import pick_method
from sweep.method.engine import Engine
from sweep.method.objective import objective_for
from sweep.method.recipe import Recipe
from sweep.models.anatomy import anatomy_of
from sweep.models.build import Weights
from sweep.models.names import ModelArg, TapPath, with_args
from sweep.store.layout import FEATURES
from sweep.store.outputs import check_writable
from sweep.store.index import drop_triples, read_index
from sweep.work.batch import Batch, BatchRunner, batch_hash, check_batch

log = logging.getLogger(__name__)


@config_dataclass
class VisualizeJob:
    """What to visualize. site None means the model's default (mlp, or channel for CNNs); a
    feature listed twice is computed once."""

    model: Text
    layer: Layer
    features: Annotated[tuple[NonNegativeInt, ...], Field(min_length=1)]
    model_args: tuple[ModelArg, ...] = ()  # key=value constructor arguments (sweep.models.names)
    taps: tuple[TapPath, ...] = ()  # explicit modules to read, in place of the inferred blocks
    site: Text | None = None
    weights: Weights = "pretrained"
    base_seed: Seed = 0
    device: Text | None = None
    recipe: Recipe = field(default_factory=Recipe)
    batch_size: Count = 16
    engine: Engine = field(default_factory=Engine)

    def __post_init__(self):
        object.__setattr__(self, "features", tuple(dict.fromkeys(self.features)))
        object.__setattr__(self, "model", with_args(self.model, self.model_args, self.taps))
        object.__setattr__(self, "model_args", ())  # now part of the model's name
        object.__setattr__(self, "taps", ())

    def batches(self) -> list[Batch]:
        """The job as validated batches of at most batch_size features."""
        anatomy = anatomy_of(self.model)
        block = anatomy.block(self.layer)
        site, recipe = pick_method(self.recipe, self.site, anatomy, block)  # recipe best: the block's method
        block.site(site)
        features = tuple(objective_for(recipe, block, site).check(anatomy, block, site, self.features))
        out = [Batch(anatomy.entry.key, block.index, site, features[i:i + self.batch_size], self.weights,
                     self.base_seed, recipe) for i in range(0, len(features), self.batch_size)]
        for b in out:
            check_batch(b)
        return out


def run_visualize(job: VisualizeJob, out: str, storage_options: dict | None = None,
                  progress: bool = False, force: bool = False) -> list[dict]:
    """Validate the job, then render and write it batch by batch; returns the rows written.

    A root may hold these features already (a sweep's, or an earlier visualize): made the same way,
    they are replaced; made with another recipe, weights or seed, the job is refused before any
    work unless `force`, so a shared root never mixes images that are not comparable.
    """
    batches = job.batches()
    runner = BatchRunner(out, storage_options, job.device, job.engine)
    check_writable(runner.fs, runner.root, out)  # a missing bucket or unwritable root: before any work
    runner.network(batches[0].model, job.weights)  # bad weights fail here, before any work
    stored = _stored_rows(runner, batches, out, force)
    iterations = batches[0].recipe.iterations
    log.info("%s layer %d site %s: %d features in %d batch(es) on %s", batches[0].model, batches[0].layer,
             batches[0].site, len(job.features), len(batches), runner.device)
    rows: list[dict] = []
    with tqdm(total=len(batches) * iterations, disable=not progress, unit="step",
              desc=f"{batches[0].model} L{batches[0].layer}") as bar:
        for batch in batches:
            _drop_replaced(runner, batch, stored)
            result = runner.run(batch, progress=bar.update)
            for feature, error in result["failed"].items():
                log.warning("feature %d failed: %s", feature, error)
            rows.extend(result["rows"])
    for row in rows:
        row["model"] = batches[0].model
    return rows


def _stored_rows(runner: BatchRunner, batches: list[Batch], out: str, force: bool) -> pd.DataFrame:
    """The rows the root already holds for the job's features; refuses (one line) when any was made
    with a different visualization hash, unless force."""
    first = batches[0]
    index = read_index(runner.fs, runner.root, model=first.model)
    wanted = {f for b in batches for f in b.features}
    stored = index[(index["layer"] == first.layer) & (index["site"] == first.site) & index["feature"].isin(wanted)]
    other = stored[stored["config_hash"] != batch_hash(first)]
    if len(other) and not force:
        f = int(other["feature"].min())
        raise SweepError(f"{len(other)} of these feature(s) already exist under {out!r} with a different recipe, "
                         f"weights or seed (e.g. {first.model} layer {first.layer} {first.site} {f}); use another "
                         "--out, or --force to replace them")
    return stored


def _drop_replaced(runner: BatchRunner, batch: Batch, stored: pd.DataFrame) -> None:
    """Remove the stored rows this batch will replace, from every part but the one it writes (which
    it overwrites whole), so no feature is listed twice; done just before the batch, so a run that
    stops early leaves its remaining features as they were."""
    own = posixpath.join(runner.root, FEATURES.part(batch.part_name, model=batch.model))
    rows = stored[stored["feature"].isin(batch.features) & (stored["part"] != own)]
    if len(rows):
        drop_triples(runner.fs, rows, {(batch.model, batch.layer, batch.site, int(f)) for f in rows["feature"]})
