"""Run one batch of features end to end: load the model (once), render, write PNGs and a Parquet part.

This is the unit of work of both `sweep visualize` and the distributed sweep; it knows nothing
about Ray. A batch is committed by its Parquet part, written after its PNGs, so no row ever points
at a missing image; the part's name derives from what it holds, so running a batch again replaces
the part instead of duplicating rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import platform
import posixpath
from dataclasses import dataclass, field
from typing import Callable

import torch

import sweep
from sweep.core.devices import resolve_device
from sweep.core.errors import SweepError
from sweep.method.engine import Engine
from sweep.method.objective import objective_for
from sweep.method.recipe import Recipe, config_hash
from sweep.method.measures import Plausibility, measure
from sweep.method.render import ModelInput, Rendered, render, seeds_for
from sweep.method.tuned import resolve_recipe
from sweep.models.anatomy import Anatomy, Block, anatomy_of
from sweep.models.build import RANDOM_WEIGHTS_SEED, build
from sweep.store.layout import FEATURES, attribution_relpath, image_relpath, start_relpath
from sweep.store.outputs import atomic_write, open_root, parquet_bytes, png_bytes

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Batch:
    """Features of one (model, layer, site) optimized together, and the config that made them."""

    model: str
    layer: int
    site: str
    features: tuple[int, ...]
    weights: str = "pretrained"
    base_seed: int = 0
    recipe: Recipe = field(default_factory=Recipe)

    @property
    def part_name(self) -> str:
        return f"part-{config_hash({'batch': dataclasses.asdict(self)})}.parquet"


def library_versions() -> dict[str, str]:
    import open_clip
    import timm
    import torchvision

    return {"sweep": sweep.__version__, "torch": torch.__version__, "timm": timm.__version__,
            "open_clip": open_clip.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version()}


def weights_label(weights: str, tag: str | None) -> str:
    if weights == "pretrained":
        return f"pretrained:{tag}"
    if weights == "random":
        return f"random:{RANDOM_WEIGHTS_SEED}"
    return weights


def visualization_hash(model: str, weights: str, layer: int, site: str, base_seed: int,
                       recipe: Recipe) -> str:
    """Identifies how a (model, layer, site) was visualized; equal hashes mean comparable images."""
    return config_hash({"model": model, "weights": weights, "layer": layer, "site": site,
                        "base_seed": base_seed, "recipe": recipe.identity()})


def check_batch(batch: Batch) -> tuple[Anatomy, str, Recipe, str]:
    """Validate a batch against the zoo; returns its anatomy, site, model-resolved recipe and where
    that recipe's defaults came from (see `resolve_recipe`)."""
    anatomy = anatomy_of(batch.model)
    block = anatomy.block(batch.layer)
    block.site(batch.site)
    recipe, source = resolve_recipe(batch.recipe, anatomy.entry, anatomy.preprocess.input_size)
    objective_for(recipe, block, batch.site).check(anatomy, block, batch.site, batch.features)
    return anatomy, batch.site, recipe, source


def batch_hash(batch: Batch) -> str:
    """The visualization hash the rows of this batch get (see `visualization_hash`)."""
    anatomy, site, recipe, _ = check_batch(batch)
    return visualization_hash(anatomy.entry.key, weights_label(batch.weights, anatomy.entry.tag),
                              anatomy.block(batch.layer).index, site, batch.base_seed, recipe)


def _row_base(batch: Batch, anatomy: Anatomy, recipe: Recipe, source: str, weights: str) -> dict:
    block = anatomy.block(batch.layer)
    cols = {**{k: v for k, v in recipe.identity().items() if k != "log_every"}, "param": recipe.param,
            "objective": recipe.objective, "negative": recipe.negative, "method": recipe.method,
            "diversity": recipe.diversity}
    return {"weights": weights, "layer": block.index, "layer_name": block.name, "site": batch.site,
            "base_seed": batch.base_seed, **cols, "tv_coef": recipe.tv_coef, "recipe_source": source,
            "config_hash": visualization_hash(anatomy.entry.key, weights, block.index, batch.site,
                                              batch.base_seed, recipe)}


def failure_rows(batch: Batch, errors: dict[int, str]) -> list[dict]:
    """Rows that record features which could not be visualized, with the reason."""
    anatomy, _, recipe, source = check_batch(batch)
    base = _row_base(batch, anatomy, recipe, source, weights_label(batch.weights, anatomy.entry.tag))
    now = dt.datetime.now(dt.timezone.utc)
    seeds = dict(zip(batch.features, seeds_for(batch.features, batch.base_seed)))
    return [{**base, "feature": f, "seed": seeds[f], "status": "failed", "error": err, "created_at": now}
            for f, err in sorted(errors.items())]


def measured_columns(measured, i: int) -> dict:
    """Row i's measures (sweep.method.measures), null where nothing was measured (a stand-in's rows)."""
    if measured is None:
        return {}
    return {"shift_robustness": float(measured.shift_robustness[i]),
            "scale_robustness": float(measured.scale_robustness[i]),
            "plausibility": None if measured.plausibility is None else float(measured.plausibility[i]),
            "plausibility_reference": measured.plausibility_reference}


class BatchRunner:
    """Renders batches and writes their outputs; keeps the last model loaded between batches.

    `KIND` names what computes the images; it is written into every run's manifest, so a root made
    by anything but the real engine (the benchmarks' rehearsal stand-in) says so.
    """

    KIND = "engine"

    def __init__(self, out: str, storage_options: dict | None = None, device: str | None = None,
                 engine: Engine | None = None, *, gpu_ids: list[str] | None = None,
                 allow_cpu_fallback: bool = False):
        self.fs, self.root = open_root(out, storage_options)
        self.device = resolve_device(device, gpu_ids=gpu_ids, allow_cpu_fallback=allow_cpu_fallback)
        self.engine = (engine or Engine()).resolved(self.device)
        self.versions = json.dumps(library_versions(), sort_keys=True)
        self._loaded: tuple[tuple[str, str], torch.nn.Module] | None = None
        self._reference: tuple[tuple[str, str], Plausibility | None] | None = None

    def network(self, model: str, weights: str) -> torch.nn.Module:
        key = (model, weights)
        if self._loaded is None or self._loaded[0] != key:
            self._loaded = None  # free the previous model before building the next
            anatomy = anatomy_of(model)
            log.info("loading %s (%s weights) on %s", anatomy.entry.key, weights, self.device)
            self._loaded = (key, build(anatomy.entry, weights, self.device))
        return self._loaded[1]

    def run(self, batch: Batch, progress: Callable[[int], None] | None = None) -> dict:
        """Render and write one batch. Returns {"rows": [...], "failed": {feature: error}}.

        Features whose activation or image is not finite are not written; they come back in
        "failed" so the caller can retry or record them.
        """
        anatomy, site, recipe, source = check_batch(batch)
        block = anatomy.block(batch.layer)
        result = self.render_batch(batch, anatomy, block, site, recipe, progress)
        weights = weights_label(batch.weights, anatomy.entry.tag)
        rows, failed = [], {}
        for i, row in enumerate(self._rows(batch, anatomy, recipe, source, weights, result)):
            if math.isfinite(row["act_final"]) and bool(torch.isfinite(result.images[i]).all()) and (
                    result.variants is None or bool(torch.isfinite(result.variants[i]).all())):
                for j, path in enumerate(row["variant_paths"] or ()):  # before the image: the row commits all
                    atomic_write(self.fs, posixpath.join(self.root, path), png_bytes(result.variants[i, j]))
                if row["attribution_path"]:
                    atomic_write(self.fs, posixpath.join(self.root, row["attribution_path"]),
                                 png_bytes(result.attribution[i][None].expand(3, -1, -1)))
                png = png_bytes(result.images[i])
                atomic_write(self.fs, posixpath.join(self.root, row["image_path"]), png)
                rows.append({**row, "image_bytes": len(png)})
            else:
                failed[row["feature"]] = f"non-finite result (act_final={row['act_final']})"
        if rows and rows[0]["start_path"]:  # the accentuated photo, beside its accentuations (same bytes each batch)
            atomic_write(self.fs, posixpath.join(self.root, rows[0]["start_path"]), png_bytes(result.initial[0]))
        if rows:
            self.write_rows(anatomy.entry.key, batch, rows)
        return {"rows": rows, "failed": failed}

    def render_batch(self, batch: Batch, anatomy: Anatomy, block: Block, site: str, recipe: Recipe,
                     progress: Callable[[int], None] | None = None) -> Rendered:
        """The images and numbers of one batch: the recipe run on the loaded network."""
        net = self.network(batch.model, batch.weights)
        made = render(net, anatomy, block, site, batch.features, recipe, seeds_for(batch.features, batch.base_seed),
                      self.device, progress=progress, engine=self.engine)
        made.measured = measure(net, anatomy, block, site, recipe, made, self.device,
                                self.plausibility(anatomy, batch.weights, net))
        return made

    def plausibility(self, anatomy: Anatomy, weights: str, net: torch.nn.Module) -> Plausibility | None:
        """The reference photos' final features for this model, once per loaded model; None without
        the photos (scikit-image not installed): the rows' plausibility is then null."""
        key = (anatomy.entry.key, weights)
        if self._reference is None or self._reference[0] != key:
            try:
                from sweep.data.photos import photos

                shipped = photos()
            except SweepError as exc:
                log.info("no reference photos for plausibility (%s)", exc)
                shipped = None
            self._reference = (key, None if shipped is None else
                               Plausibility(net, anatomy, shipped, ModelInput(anatomy), self.device))
        return self._reference[1]

    def write_rows(self, model: str, batch: Batch, rows: list[dict]) -> str:
        path = posixpath.join(self.root, FEATURES.part(batch.part_name, model=model))
        atomic_write(self.fs, path, parquet_bytes(rows))
        return path

    def _rows(self, batch: Batch, anatomy: Anatomy, recipe: Recipe, source: str, weights: str,
              result: Rendered) -> list[dict]:
        base = _row_base(batch, anatomy, recipe, source, weights)
        now = dt.datetime.now(dt.timezone.utc)
        rows = []
        for i, (feat, seed) in enumerate(zip(result.features, result.seeds)):
            rows.append({
                **base, "feature": feat, "seed": seed, "status": "ok", "error": None,
                "act_init": float(result.act_init[i]), "act_final": float(result.act_final[i]),
                **measured_columns(result.measured, i),
                "pre_final": None if result.pre_final is None else float(result.pre_final[i]),
                "post_final": None if result.post_final is None else float(result.post_final[i]),
                "loss_final": float(result.trace.loss[-1, i]),
                "curve_steps": result.trace.steps,
                "loss_curve": result.trace.loss[:, i].tolist(),
                "act_curve": result.trace.activation[:, i].tolist(),
                "batch_features": len(result.features), "wall_s": result.wall_s,
                "device": str(self.device), "precision": result.engine.precision,
                "features_per_pass": result.engine.features_per_pass, "versions": self.versions,
                "image_path": image_relpath(anatomy.entry.key, base["layer"], batch.site, feat),
                "variant_paths": None if result.variants is None else [
                    image_relpath(anatomy.entry.key, base["layer"], batch.site, feat, j + 1)
                    for j in range(result.variants.shape[1])],
                "variant_seeds": None if result.variant_seeds is None else result.variant_seeds[i],
                "attribution_path": None if result.attribution is None
                else attribution_relpath(anatomy.entry.key, base["layer"], batch.site, feat),
                "start_path": start_relpath(anatomy.entry.key, base["layer"], batch.site)
                if recipe.accentuate is not None and result.initial is not None else None,
                "variant_act_final": None if result.variant_act_final is None
                else result.variant_act_final[i].tolist(),
                "created_at": now,
            })
        return rows
