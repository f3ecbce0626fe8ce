"""One visualization job: a model, a layer, a site and some features -> PNGs and Parquet rows."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import platform
import posixpath
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

import sweep
from sweep.errors import SweepError, one_line
from sweep.models.anatomy import anatomy_of
from sweep.models.build import RANDOM_WEIGHTS_SEED, build
from sweep.outputs import atomic_write, features_dir, image_relpath, open_root, parquet_bytes, png_bytes
from sweep.recipe import Recipe, config_hash
from sweep.render import Rendered, render, seeds_for

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
    features_per_pass: int | None = None

    def __post_init__(self):
        if not self.features:
            raise SweepError("no features given; pass at least one feature index")
        if self.batch_size < 1:
            raise SweepError(f"bad batch size {self.batch_size}: must be >= 1")
        if self.features_per_pass is not None and self.features_per_pass < 1:
            raise SweepError(f"bad features per pass {self.features_per_pass}: must be >= 1")


def resolve_device(device: str | None) -> torch.device:
    """The requested device, or the machine's accelerator when there is one, else the CPU."""
    if device:
        try:
            dev = torch.device(device)
            torch.empty(0, device=dev)
        except Exception as exc:
            raise SweepError(f"device {device!r} is not usable here: {one_line(exc, 120)}; "
                             "allowed: cpu or an available accelerator such as cuda:0") from None
        return dev
    acc = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    return acc if acc is not None else torch.device("cpu")


#: On CPUs, passes of 2 features (16 images) were measured fastest: larger passes fall out of
#: cache and got slower per image (benchmarks/bench_step.py). Accelerators take the whole batch.
CPU_FEATURES_PER_PASS = 2


def features_per_pass(job: VisualizeJob, device: torch.device) -> int | None:
    if job.features_per_pass is not None:
        return job.features_per_pass
    return CPU_FEATURES_PER_PASS if device.type == "cpu" else None


def library_versions() -> dict[str, str]:
    import open_clip
    import timm
    import torchvision

    return {"sweep": sweep.__version__, "torch": torch.__version__, "timm": timm.__version__,
            "open_clip": open_clip.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version()}


def weights_label(job: VisualizeJob, tag: str | None) -> str:
    if job.weights == "pretrained":
        return f"pretrained:{tag}"
    if job.weights == "random":
        return f"random:{RANDOM_WEIGHTS_SEED}"
    return job.weights


def feature_rows(job: VisualizeJob, key: str, layer: int, layer_name: str, site: str,
                 recipe: Recipe, weights: str, result: Rendered, device: torch.device,
                 versions: str, chash: str) -> list[dict]:
    """One metric row per feature of a rendered batch."""
    now = dt.datetime.now(dt.timezone.utc)
    recipe_cols = {k: v for k, v in recipe.as_dict().items() if k != "log_every"}
    recipe_cols["tv_coef"] = recipe.tv_coef
    rows = []
    for i, (feat, seed) in enumerate(zip(result.features, result.seeds)):
        rows.append({
            "weights": weights, "layer": layer, "layer_name": layer_name, "site": site,
            "feature": feat, "seed": seed, "base_seed": job.base_seed, **recipe_cols,
            "act_init": float(result.act_init[i]), "act_final": float(result.act_final[i]),
            "loss_final": float(result.trace.loss[-1, i]),
            "curve_steps": result.trace.steps,
            "loss_curve": result.trace.loss[:, i].tolist(),
            "act_curve": result.trace.activation[:, i].tolist(),
            "batch_features": len(result.features), "wall_s": result.wall_s,
            "device": str(device), "versions": versions, "config_hash": chash,
            "image_path": image_relpath(key, layer, site, feat), "created_at": now,
        })
    return rows


def run_visualize(job: VisualizeJob, out: str, storage_options: dict | None = None,
                  progress: bool = False) -> list[dict]:
    """Validate the job, render its features batch by batch, write PNGs then Parquet rows.

    Each batch is committed by one Parquet part written after its PNGs, so a crash leaves no row
    pointing at a missing image. Part names derive from the config and features: re-running the
    same job replaces its parts instead of duplicating rows.
    """
    anatomy = anatomy_of(job.model)
    entry = anatomy.entry
    block = anatomy.block(job.layer)
    site = job.site or anatomy.default_site
    block.site(site)
    features = anatomy.check_features(block, site, job.features)
    recipe = job.recipe.resolved(entry.lr, anatomy.preprocess.input_size)
    device = resolve_device(job.device)
    per_pass = features_per_pass(job, device)
    fs, root = open_root(out, storage_options)
    net = build(entry, job.weights, device)
    weights = weights_label(job, entry.tag)
    versions = json.dumps(library_versions(), sort_keys=True)
    chash = config_hash({"model": entry.key, "weights": weights, "layer": block.index, "site": site,
                         "base_seed": job.base_seed, "recipe": dataclasses.asdict(recipe)})
    batches = [features[i:i + job.batch_size] for i in range(0, len(features), job.batch_size)]
    log.info("%s layer %d (%s) site %s: %d features in %d batch(es) on %s", entry.key, block.index,
             block.name, site, len(features), len(batches), device)
    rows: list[dict] = []
    with tqdm(total=len(batches) * recipe.iterations, disable=not progress, unit="step",
              desc=f"{entry.key} L{block.index}") as bar:
        for batch in batches:
            result = render(net, anatomy, block, site, batch, recipe, seeds_for(batch, job.base_seed),
                            device, progress=bar.update, features_per_pass=per_pass)
            batch_rows = feature_rows(job, entry.key, block.index, block.name, site, recipe, weights,
                                      result, device, versions, chash)
            for row, image in zip(batch_rows, result.images):
                atomic_write(fs, posixpath.join(root, row["image_path"]), png_bytes(image))
            part = config_hash({"config": chash, "features": batch})
            atomic_write(fs, posixpath.join(root, features_dir(entry.key), f"part-{part}.parquet"),
                         parquet_bytes(batch_rows))
            rows.extend(batch_rows)
    for row in rows:
        row["model"] = entry.key
    return rows
