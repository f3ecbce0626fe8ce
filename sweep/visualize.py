"""One visualization job: a model, a layer, a site and some features -> PNGs and Parquet rows."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from sweep.batch import Batch, BatchRunner, check_batch
from sweep.engine import Engine
from sweep.errors import SweepError
from sweep.models.anatomy import anatomy_of
from sweep.recipe import Recipe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VisualizeJob:
    """What to visualize. site None means the model's default (mlp, or channel for CNNs)."""

    model: str
    layer: int | str
    features: tuple[int, ...]
    site: str | None = None
    weights: str = "pretrained"
    base_seed: int = 0
    device: str | None = None
    recipe: Recipe = field(default_factory=Recipe)
    batch_size: int = 16
    engine: Engine = field(default_factory=Engine)

    def __post_init__(self):
        if not self.features:
            raise SweepError("no features given; pass at least one feature index")
        if self.batch_size < 1:
            raise SweepError(f"bad batch size {self.batch_size}: must be >= 1")

    def batches(self) -> list[Batch]:
        """The job as validated batches of at most batch_size features."""
        anatomy = anatomy_of(self.model)
        block = anatomy.block(self.layer)
        site = self.site or anatomy.default_site
        block.site(site)
        features = tuple(anatomy.check_features(block, site, self.features))
        out = [Batch(anatomy.entry.key, block.index, site, features[i:i + self.batch_size], self.weights,
                     self.base_seed, self.recipe) for i in range(0, len(features), self.batch_size)]
        for b in out:
            check_batch(b)
        return out


def run_visualize(job: VisualizeJob, out: str, storage_options: dict | None = None,
                  progress: bool = False) -> list[dict]:
    """Validate the job, then render and write it batch by batch; returns the rows written."""
    batches = job.batches()
    runner = BatchRunner(out, storage_options, job.device, job.engine)
    runner.network(batches[0].model, job.weights)  # bad weights fail here, before any work
    iterations = batches[0].recipe.iterations
    log.info("%s layer %d site %s: %d features in %d batch(es) on %s", batches[0].model, batches[0].layer,
             batches[0].site, len(job.features), len(batches), runner.device)
    rows: list[dict] = []
    with tqdm(total=len(batches) * iterations, disable=not progress, unit="step",
              desc=f"{batches[0].model} L{batches[0].layer}") as bar:
        for batch in batches:
            result = runner.run(batch, progress=bar.update)
            for feature, error in result["failed"].items():
                log.warning("feature %d failed: %s", feature, error)
            rows.extend(result["rows"])
    for row in rows:
        row["model"] = batches[0].model
    return rows
