"""One tuning trial without Ray: render a fixed sample of units with one (lr, TV), score each image.

A trial is identified by everything that decides its images and scores (`TrialSpec.key`), so its
row, `tuning/model=<m>/trial-<key>.parquet`, doubles as the resume marker: a trial whose row exists
is never run again. Images go to `tuning_images/model=<m>/trial-<key>/`, before the row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import posixpath
import random
import statistics
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from sweep.core.errors import SweepError, one_line
from sweep.core.redact import secret_values
from sweep.method.augment import augment, draw_schedule
from sweep.method.engine import Engine
from sweep.method.recipe import Recipe, config_hash
from sweep.method.objective import Objective, objective_for
from sweep.method.render import ModelInput, render, seeds_for, site_features
from sweep.method.scores import (
    COMBINED_SCORE_VERSION,
    combined_score,
    saturated_fraction,
    spectrum_slope,
    total_variation,
)
from sweep.models.anatomy import Anatomy, anatomy_of
from sweep.models.taps import read_features
from sweep.store.layout import TRIAL_SCHEMA, TUNING, TUNING_IMAGES
from sweep.store.outputs import atomic_write, open_root, parquet_bytes, png_bytes

log = logging.getLogger(__name__)

#: The robustness draws of a unit come from a generator seeded base_seed + feature + this offset,
#: so they never repeat the draws the image was optimized with (seed base_seed + feature).
ROBUSTNESS_SEED_OFFSET = 1_000_003



@dataclass(frozen=True)
class TrialSpec:
    """Everything that decides one trial's images and scores."""

    model: str
    lr: float
    tv: float
    units: tuple[tuple[int, int], ...]    # (layer index, feature)
    recipe: Recipe = field(default_factory=Recipe)
    site: str | None = None
    weights: str = "pretrained"
    base_seed: int = 0
    reference: str | None = None           # image folder (path or URL); None: seeded noise images
    reference_count: int = 32
    robustness_draws: int = 4
    grid: str = ""                         # how the trial's point was chosen, for the rows only

    @property
    def key(self) -> str:
        payload = dataclasses.asdict(self)
        payload.pop("grid")
        payload["recipe"] = self.trial_recipe().identity()
        return config_hash({"trial": payload, "score": COMBINED_SCORE_VERSION})

    def trial_recipe(self) -> Recipe:
        return dataclasses.replace(self.recipe, lr=float(self.lr), tv=float(self.tv))


def sample_units(anatomy: Anatomy, layers, per_layer: int, site: str, seed: int,
                 recipe: Recipe | None = None) -> tuple[tuple[int, int], ...]:
    """A seeded sample of `per_layer` features in each layer (the same for every trial); features of
    the recipe's objective (a direction file's rows), units by default."""
    rng = random.Random(seed)
    units = []
    for layer in layers:
        block = anatomy.block(layer)
        width = block.width(site) if recipe is None else objective_for(recipe, block, site).count(block.width(site))
        units += [(block.index, f) for f in sorted(rng.sample(range(width), min(per_layer, width)))]
    return tuple(units)


def default_layers(anatomy: Anatomy, count: int = 4) -> list[int]:
    """`count` evenly spaced blocks ending at the last: 2, 5, 8, 11 for 12 blocks, as the paper's grids."""
    depth = len(anatomy.blocks)
    return sorted({max(0, round((i + 1) * depth / count) - 1) for i in range(min(count, depth))})


def noise_references(count: int, size: int, seed: int) -> torch.Tensor:
    """Half uniform noise, half 1/f (natural-spectrum) noise images in [0, 1], seeded."""
    gen = torch.Generator().manual_seed(seed)
    out = [torch.rand((3, size, size), generator=gen) for _ in range(count - count // 2)]
    fy, fx = torch.fft.fftfreq(size)[:, None], torch.fft.fftfreq(size)[None, :]
    amp = 1 / torch.sqrt(fx**2 + fy**2).clamp_min(1 / size)
    for _ in range(count // 2):
        phase = torch.rand((3, size, size), generator=gen) * 2 * math.pi
        img = torch.fft.ifft2(amp * torch.exp(1j * phase)).real
        lo, hi = img.amin(dim=(1, 2), keepdim=True), img.amax(dim=(1, 2), keepdim=True)
        out.append((img - lo) / (hi - lo))
    return torch.stack(out)


def folder_references(root: str, count: int, size: int, storage_options: dict | None = None) -> torch.Tensor:
    """Up to `count` images of a folder, resized and centre-cropped to `size`; unreadable ones skipped."""
    from sweep.data.imagenet import image_folder
    from sweep.experiments.ablations import decode
    from sweep.data.transforms import resize_center_crop

    images = []
    for rec in image_folder(root, storage_options).records:
        try:
            images.append(resize_center_crop(decode(rec["path"], storage_options), size))
        except Exception as exc:  # a corrupt file is skipped, not fatal
            log.warning("reference image %s skipped: %s", rec["path"], one_line(exc, 120))
        if len(images) >= count:
            break
    if not images:
        raise SweepError(f"no readable reference images under {root!r}")
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def unit_activations(net: nn.Module, anatomy: Anatomy, layer: int, site: str, features: list[int],
                     images: torch.Tensor, chunk: int = 32, goal: Objective | None = None) -> torch.Tensor:
    """(N, len(features)) clean fp32 activations of the units on images (N, 3, S, S) in [0, 1]; with
    an objective, its value for each feature times its sign (what the optimization raised)."""
    block = anatomy.block(layer)
    prepare = ModelInput(anatomy)
    index = torch.tensor(features, device=images.device)
    if goal is None:
        with torch.no_grad():
            return torch.cat([read_features(net, block, site, prepare(images[i:i + chunk]))[:, index]
                              for i in range(0, len(images), chunk)])
    features_of, readout = site_features(net, block, site, goal), goal.readout(images.device)
    out = []
    with torch.no_grad():
        for i in range(0, len(images), chunk):
            feats = features_of(prepare(images[i:i + chunk]))
            n = feats.shape[0]
            out.append(readout(feats.repeat_interleave(len(features), 0), index.repeat(n)).view(n, -1) * goal.sign)
    return torch.cat(out)


def robustness(net: nn.Module, anatomy: Anatomy, layer: int, site: str, feature: int, image: torch.Tensor,
               clean: float, recipe: Recipe, seed: int, draws: int, goal: Objective | None = None) -> float:
    """Mean activation over `draws` x copies random augmentations of the image / its clean activation."""
    if clean <= 0:
        return 0.0
    schedule = draw_schedule([torch.Generator().manual_seed(seed)], recipe).to(image.device)
    steps = min(draws, recipe.iterations)
    copies = torch.cat([augment(image[None], s, schedule) for s in range(steps)])
    acts = unit_activations(net, anatomy, layer, site, [feature], copies, goal=goal)
    return float(acts.mean()) / clean


def run_trial(spec: TrialSpec, net: nn.Module, device: torch.device, engine: Engine = Engine(),
              storage_options: dict | None = None) -> dict:
    """Render and score every unit of the trial; returns its row (not written)."""
    start = dt.datetime.now(dt.timezone.utc)
    anatomy = anatomy_of(spec.model)
    site = spec.site or anatomy.default_site
    recipe = spec.trial_recipe()
    size = anatomy.preprocess.input_size
    if spec.reference:
        refs, ref_label = folder_references(spec.reference, spec.reference_count, size, storage_options), spec.reference
    else:
        refs, ref_label = noise_references(spec.reference_count, size, spec.base_seed), \
            f"noise:{spec.reference_count}:seed={spec.base_seed}"
    refs = refs.to(device)
    per_unit: dict[str, list] = {k: [] for k in ("layer", "feature", "seed", "act_final", "reference_act",
                                                  "relative_activation", "robustness", "total_variation",
                                                  "saturated_fraction", "spectrum_slope", "combined")}
    images: list[torch.Tensor] = []
    used = engine
    for layer in sorted({layer for layer, _ in spec.units}):
        feats = [f for l, f in spec.units if l == layer]
        seeds = seeds_for(feats, spec.base_seed)
        out = render(net, anatomy, anatomy.block(layer), site, feats, recipe, seeds, device, engine=engine)
        used = out.engine
        goal = objective_for(recipe, anatomy.block(layer), site)  # scores are of what was raised: sign included
        ref_max = unit_activations(net, anatomy, layer, site, feats, refs, goal=goal).amax(0).cpu()
        for i, f in enumerate(feats):
            img, act = out.images[i], goal.sign * float(out.act_final[i])
            ref = float(ref_max[i])
            rel = act / ref if ref > 0 else math.nan
            rob = robustness(net, anatomy, layer, site, f, img.to(device), act, recipe,
                             spec.base_seed + f + ROBUSTNESS_SEED_OFFSET, spec.robustness_draws, goal)
            tv, sat, slope = total_variation(img), saturated_fraction(img), spectrum_slope(img)
            values = {"layer": layer, "feature": f, "seed": seeds[i], "act_final": act, "reference_act": ref,
                      "relative_activation": rel, "robustness": rob, "total_variation": tv,
                      "saturated_fraction": sat, "spectrum_slope": slope,
                      "combined": combined_score(0.0 if math.isnan(rel) else rel, rob, sat, slope)}
            for k, v in values.items():
                per_unit[k].append(v)
            images.append(img)
    means = {k: _nanmean(per_unit[k]) for k in ("act_final", "relative_activation", "robustness", "total_variation",
                                                 "saturated_fraction", "spectrum_slope", "combined")}
    folder = posixpath.join(TUNING_IMAGES.folder(model=anatomy.entry.key), f"trial-{spec.key}")
    return {
        "trial": spec.key, "weights": spec.weights, "family": anatomy.entry.family, "site": site,
        "lr": float(spec.lr), "tv": float(spec.tv), "steps": recipe.steps, "base_seed": spec.base_seed,
        "grid": spec.grid, "reference": ref_label, "score_version": COMBINED_SCORE_VERSION,
        "status": "ok", "error": None, **means,
        **{f"unit_{k}": v for k, v in per_unit.items()},
        "image_paths": [posixpath.join(folder, f"L{l}-f{f}.png") for l, f in zip(per_unit["layer"], per_unit["feature"])],
        "recipe": str(recipe.identity()), "device": str(device), "precision": used.precision,
        "wall_s": (dt.datetime.now(dt.timezone.utc) - start).total_seconds(), "created_at": start,
        "_images": images,
    }


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.fmean(finite) if finite else math.nan


def write_trial(row: dict, model: str, out: str, storage_options: dict | None = None) -> str:
    """PNGs first, then the trial's row (atomic): a row never points at a missing image."""
    fs, root = open_root(out, storage_options)
    for path, img in zip(row["image_paths"], row["_images"]):
        atomic_write(fs, posixpath.join(root, path), png_bytes(img))
    clean = {k: v for k, v in row.items() if not k.startswith("_")}
    path = posixpath.join(root, TUNING.part(f"trial-{row['trial']}.parquet", model=model))
    atomic_write(fs, path, parquet_bytes([clean], TRIAL_SCHEMA, secret_values(storage_options or {})))
    return path


def done_trials(model: str, out: str, storage_options: dict | None = None) -> set[str]:
    """Keys of the trials whose rows exist under the results root."""
    fs, root = open_root(out, storage_options)
    folder = posixpath.join(root, TUNING.folder(model=anatomy_of(model).entry.key))
    fs.invalidate_cache(folder)  # rows are written by trial processes; never trust an old listing
    if not fs.exists(folder):
        return set()
    names = [posixpath.basename(p) for p in fs.ls(folder, detail=False)]
    return {n[len("trial-"):-len(".parquet")] for n in names if n.startswith("trial-") and n.endswith(".parquet")}
