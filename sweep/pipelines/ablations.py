"""The ablations on Ray Data: list -> decode and condition (CPU tasks) -> classify (actor pool) -> Parquet.

Output per model: `ablations/experiment=<e>/model=<m>/part-NNNNN.parquet` (one row per image and
condition, see `sweep.store.layout.ABLATION_SCHEMA`) and `_summary.json`, written last: a model whose summary
exists is done and is skipped on a re-run; a model without one is redone from scratch (its partial
parts are removed first), so rows are never duplicated.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import posixpath
from dataclasses import field
from typing import Any, Literal

import pandas as pd
import ray

from sweep.core.errors import SweepError
from sweep.core.redact import redact, secret_values
from sweep.core.validation import Count, Positive, Text, config_dataclass
from sweep.data.imagenet import Listing, train_with_boxes, val_from_devkit, val_from_solution
from sweep.experiments.ablations import (
    Classifier,
    ModelSpec,
    TokenClassifier,
    conditions_of,
    registry_model,
    summarize,
)
from sweep.models.build import Weights
from sweep.models.names import ModelArg, with_args
from sweep.pipelines.images import gpus_per_actor, prepared_images
from sweep.store.layout import ABLATION_SCHEMA, ABLATIONS
from sweep.store.outputs import atomic_write, check_writable, frame_parquet_bytes, open_root

log = logging.getLogger(__name__)


@config_dataclass
class DataSpec:
    """Where the images and their labels (and boxes) are."""

    kind: Literal["train_boxes", "val_solution", "val_devkit"] = "train_boxes"
    root: Text | None = None
    boxes: Text | None = None          # train_boxes: the VOC XML folder
    solution: Text | None = None       # val_solution: LOC_val_solution.csv
    ground_truth: Text | None = None   # val_devkit: ILSVRC2012_validation_ground_truth.txt
    meta: Text | None = None           # val_devkit: meta.mat
    limit: Count | None = None

    def listing(self, experiment: str, storage_options: dict | None = None) -> Listing:
        need = {"train_boxes": ("root", "boxes"), "val_solution": ("root", "solution"),
                "val_devkit": ("root", "ground_truth", "meta")}[self.kind]
        missing = [n for n in need if not getattr(self, n)]
        if missing:
            raise SweepError(f"data kind {self.kind} needs {', '.join(missing)}")
        if experiment == "foreground_background" and self.kind == "val_devkit":
            raise SweepError("the foreground/background experiment needs boxes: use train_boxes or val_solution")
        if self.kind == "train_boxes":
            return train_with_boxes(self.root, self.boxes, storage_options, self.limit)
        if self.kind == "val_solution":
            return val_from_solution(self.root, self.solution, storage_options, self.limit,
                                     with_boxes_only=experiment == "foreground_background")
        return val_from_devkit(self.root, self.ground_truth, self.meta, storage_options, self.limit)


@config_dataclass
class AblationConfig:
    experiment: Literal["foreground_background", "frequency", "tokens"]
    out: Text
    data: DataSpec
    models: tuple[Text, ...] = ()
    model_args: tuple[ModelArg, ...] = ()  # key=value constructor arguments for every model (sweep.models.names)
    conditions: tuple[Text, ...] | None = None
    weights: Weights = "pretrained"
    batch_size: Count = 32
    actors: Count | None = None      # classifier actors; default: one per GPU, else 1
    actor_cpus: Positive = 0.5       # fractional, so that decode tasks keep CPUs (a full pool hangs)
    rows_per_part: Count = 100_000
    storage_options: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        models = (with_args(m, self.model_args) for m in self.models)
        object.__setattr__(self, "models", tuple(dict.fromkeys(models)))
        object.__setattr__(self, "model_args", ())  # now part of each model's name
        if self.conditions is not None:
            object.__setattr__(self, "conditions", tuple(dict.fromkeys(self.conditions)))


def model_dir(config: AblationConfig, model: str) -> str:
    return ABLATIONS.folder(experiment=config.experiment, model=model)


def check_ablation(config: AblationConfig, specs: list[ModelSpec] | None = None):
    """Everything checked before Ray starts (the job calls it first): the conditions, the models (ImageNet-1k
    classifiers) and their weights, a writable root, the images and their labels or boxes. Returns
    (conditions, specs, listing)."""
    from sweep.models.anatomy import anatomy_of
    from sweep.models.build import check_weights

    conditions = conditions_of(config.experiment, config.conditions)
    if specs is None:  # the zoo's models (a caller's own specs bring their own factories)
        specs = [registry_model(m, config.weights) for m in config.models]
        for m in config.models:
            check_weights(anatomy_of(m).entry, config.weights)
    if not specs:
        raise SweepError("no models to evaluate")
    fs, root = open_root(config.out, config.storage_options)
    check_writable(fs, root, config.out)  # a missing bucket or unwritable root: before any work
    listing = config.data.listing(config.experiment, config.storage_options)
    if not listing.records:
        raise SweepError(f"no usable images found under {config.data.root!r} "
                         f"({len(listing.problems)} problem(s), e.g. {listing.problems[:1]})")
    return conditions, specs, listing


def run_ablation(config: AblationConfig, specs: list[ModelSpec] | None = None, force: bool = False,
                 checked: tuple | None = None) -> dict:
    """Run the experiment for every model; returns {model: summary}. Validates everything first
    (`check_ablation`, or its result as `checked` when the caller ran it)."""
    conditions, specs, listing = checked or check_ablation(config, specs)
    fs, root = open_root(config.out, config.storage_options)
    for p in listing.problems:
        log.warning("skipped %s (%s): %s", p["path"], p["stage"], p["error"])
    results = {}
    for spec in specs:
        out_dir = posixpath.join(root, model_dir(config, spec.name))
        marker = posixpath.join(out_dir, "_summary.json")
        if fs.exists(marker) and not force:
            log.info("%s: already done (%s), skipping", spec.name, marker)
            results[spec.name] = json.loads(fs.cat_file(marker))
            continue
        if fs.exists(out_dir):
            fs.rm(out_dir, recursive=True)
        results[spec.name] = _run_model(config, spec, conditions, listing, fs, out_dir)
    return results


def _run_model(config, spec: ModelSpec, conditions, listing: Listing, fs, out_dir: str) -> dict:
    size = _input_size(spec)
    gpus = gpus_per_actor()
    actors = config.actors or max(1, int(ray.cluster_resources().get("GPU", 0)))
    started = dt.datetime.now(dt.timezone.utc)
    records = listing.records
    if config.experiment == "tokens":  # conditions are model variants: images are prepared once
        conditions = conditions or tuple(_token_variants(spec))
        image_conditions, stage, args = ("original",), TokenClassifier, (spec, conditions)
    else:
        image_conditions, stage, args = conditions, Classifier, (spec,)
    ds = prepared_images(records, size, config.experiment, image_conditions, config.storage_options)
    ds = ds.map_batches(stage, fn_constructor_args=args, batch_size=config.batch_size,
                        concurrency=actors, num_gpus=gpus, num_cpus=config.actor_cpus)
    parts, pending, seen = 0, [], []
    for batch in ds.iter_batches(batch_format="pandas", batch_size=config.rows_per_part):
        pending.append(batch)
        if sum(len(b) for b in pending) >= config.rows_per_part:
            parts += _write_part(fs, out_dir, parts, pending, seen)
            pending = []
    if pending:
        parts += _write_part(fs, out_dir, parts, pending, seen)
    rows = pd.concat(seen, ignore_index=True) if seen else pd.DataFrame(columns=[f.name for f in ABLATION_SCHEMA])
    expected = len(records) * len(conditions)
    if len(rows) != expected:
        raise SweepError(f"{spec.name}: {len(rows)} result rows, expected {expected} "
                         f"({len(records)} images x {len(conditions)} conditions)")
    summary = {"model": spec.name, "experiment": config.experiment, "conditions": conditions,
               "data": dataclasses.asdict(config.data), "weights": spec.weights, "input_size": size,
               "started_at": started.isoformat(), "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
               "listing_problems": listing.problems, "parts": parts, **summarize(rows)}
    clean = redact(summary, secret_values(config.storage_options))  # data paths and errors may quote credentials
    atomic_write(fs, posixpath.join(out_dir, "_summary.json"), json.dumps(clean, indent=2).encode())
    log.info("%s: %d images (%d corrupt), %s", spec.name, len(records), summary["corrupt_images"],
             ", ".join(f"{c} top-5 {v['top5']:.2f}" for c, v in summary["conditions"].items()))
    return summary


def _write_part(fs, out_dir: str, index: int, frames: list[pd.DataFrame], seen: list) -> int:
    frame = pd.concat(frames, ignore_index=True)[[f.name for f in ABLATION_SCHEMA]]
    frame["error"] = frame["error"].where(frame["error"] != "", None)
    seen.append(frame[["image_id", "condition", "status", "correct1", "correct5", "loss"]])
    atomic_write(fs, posixpath.join(out_dir, f"part-{index:05d}.parquet"), frame_parquet_bytes(frame, ABLATION_SCHEMA))
    return 1


def _token_variants(spec: ModelSpec) -> list[str]:
    from sweep.experiments.surgery import check_plain_vit, paper_variants

    net, _ = spec.factory()
    check_plain_vit(net, spec.name)
    variants = paper_variants(len(net.blocks))
    patches = net.patch_embed.num_patches
    return [v for v in variants if not v.startswith("pool:patch:") or int(v.rsplit(":", 1)[1]) < patches]


def _input_size(spec: ModelSpec) -> int:
    from sweep.models.anatomy import anatomy_of

    try:
        return anatomy_of(spec.name).preprocess.input_size
    except SweepError:
        _, pre = spec.factory()  # a custom model: ask it
        return pre.input_size
