"""Render feature visualizations for a loaded model: the recipe's parts put together.

Knows nothing about files or Ray: give it a network, a block, a site and features; get images
and the numbers that describe how the optimization went.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from sweep.method.accentuate import Anchor, start_image
from sweep.method.augment import draw_schedule
from sweep.method.engine import Engine, compiled_trunk, fit_features_per_pass
from sweep.method.objective import Objective, objective_for
from sweep.method.objective_diversity import Diversity, variant_seeds
from sweep.method.optimize import Trace, feature_chunks, optimize
from sweep.method.param import feature_generators, parametrization
from sweep.method.recipe import Recipe
from sweep.method.step import StepObjective, compiled_step, normalize
from sweep.method.tuned import resolve_recipe
from sweep.models.anatomy import Anatomy, Block
from sweep.models.taps import read_features, read_sites
from sweep.models.truncate import cut_at

log = logging.getLogger(__name__)


@dataclass
class Rendered:
    """Results for F features optimized together."""

    features: list[int]
    seeds: list[int]
    images: torch.Tensor      # (F, 3, S, S) in [0, 1], on the CPU
    act_init: torch.Tensor    # (F,) activation on the initial image, no augmentation
    act_final: torch.Tensor   # (F,) activation on the final image, no augmentation
    trace: Trace
    wall_s: float
    engine: Engine            # resolved: the precision and features per pass actually used
    initial: torch.Tensor | None = None  # (F, 3, S, S) the images the optimization started from
    pre_final: torch.Tensor | None = None   # (F,) an MLP unit's objective before its GELU (mlp_pre), final image
    post_final: torch.Tensor | None = None  # (F,) the same after the GELU (mlp): > 0 only if the unit is on
    variants: torch.Tensor | None = None    # (F, k - 1, 3, S, S) a feature's other images (recipe diversity k)
    variant_act_final: torch.Tensor | None = None  # (F, k - 1)
    variant_seeds: list[list[int]] | None = None   # the seeds each variant image was drawn from
    measured: object | None = None  # sweep.method.measures.Measured, filled in by whoever measures the images
    attribution: torch.Tensor | None = None  # (F, S, S) in [0, 1]: MACO's transparency map (param maco only)


class ModelInput:
    """Turns images in [0, 1] into what the network expects: resize to its input, normalize."""

    def __init__(self, anatomy: Anatomy):
        self.size = anatomy.preprocess.input_size
        self.mean = torch.tensor(anatomy.preprocess.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(anatomy.preprocess.std).view(1, 3, 1, 1)
        self._on: dict = {}  # (device, dtype) -> (mean, std) there: no host copy per call

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        key = (z.device, z.dtype)
        if key not in self._on:
            self._on[key] = (self.mean.to(device=z.device, dtype=z.dtype), self.std.to(device=z.device, dtype=z.dtype))
        return normalize(z, self.size, *self._on[key])


def seeds_for(features: Sequence[int], base_seed: int = 0) -> list[int]:
    """Per-feature seeds; base_seed 0 gives the paper's choice, seed = feature index."""
    return [int(base_seed) + int(f) for f in features]


def site_features(net: nn.Module, block: Block, site: str, goal: Objective) -> Callable[[torch.Tensor], torch.Tensor]:
    """Prepared images -> (B, width) features of (block, site), pooled as the objective says."""
    if goal.mean_pooled:
        return lambda z: read_features(net, block, site, z)
    return lambda z: goal.pool(read_sites(net, [(block, site)], z, reduce=False)[0], block)


def mlp_sites(block: Block, site: str) -> tuple[str, ...]:
    """Both sides of an MLP unit's GELU where `site` is one of them (each image records both: an
    image that raises the post-GELU mean by switching the unit off shows a very negative pre)."""
    pair = ("mlp_pre", "mlp")
    return pair if site in pair and all(s in block.sites for s in pair) else ()


def render(net: nn.Module, anatomy: Anatomy, block: Block, site: str, features: Sequence[int],
           recipe: Recipe, seeds: Sequence[int], device: torch.device | str,
           progress: Callable[[int], None] | None = None, engine: Engine = Engine()) -> Rendered:
    """Optimize one image per feature of (block, site) (k with the recipe's diversity), all in one batch.

    All random draws are made up front from the features' generators; the network runs in the
    engine's precision, while the image, loss, TV and the recorded clean activations (on the
    initial and final images, without augmentation) are fp32.
    """
    device = torch.device(device)
    recipe, _source = resolve_recipe(recipe, anatomy.entry, anatomy.preprocess.input_size)
    goal = objective_for(recipe, block, site)
    features = goal.check(anatomy, block, site, features)
    engine = engine.resolved(device)
    prepare = ModelInput(anatomy)
    k = recipe.diversity  # images per feature: a feature's images are consecutive, image 0 first
    image_seeds = [s for seed in seeds for s in variant_seeds(seed, k)]
    generators = feature_generators(image_seeds)
    index = torch.tensor(features, device=device).repeat_interleave(k)  # the feature of each image
    copies_index = index.repeat_interleave(recipe.copies)

    readout = goal.readout(device)
    features_of = site_features(net, block, site, goal)
    unit_sites = mlp_sites(block, site)

    def activations(images: torch.Tensor, which: torch.Tensor, run: Engine, at: str = site) -> torch.Tensor:
        z = prepare(images)
        with run.autocast(device):
            feats = (features_of if at == site else site_features(net, block, at, goal))(z)
        return readout(feats, which)

    start = time.perf_counter()
    param = parametrization(recipe.param, recipe.spectrum)
    p0 = param.init(generators, recipe.image_size, device)
    anchor = None
    if recipe.accentuate is not None:  # pixels only (the recipe says so): the photo is the parameter
        photo = start_image(recipe.accentuate, recipe.image_size).to(device)
        p0 = photo.expand_as(p0).clone()
        with torch.no_grad():
            target = site_features(net, block, site, goal)(prepare(photo[None])).float()
        anchor = Anchor(target, recipe.copies, recipe.accentuate_weight, recipe.reference_scale)
    with torch.no_grad():
        x0 = param.image(p0)
    schedule = draw_schedule(generators, recipe).to(device)
    cut = None
    if engine.compile == "step":
        cut, why = cut_at(net, block, site) if goal.mean_pooled and k == 1 else (
            None, f"the {recipe.method} method reads the site's positions, the cut network their mean")
        if cut is None:
            log.info("%s block %s site %s: whole-step compile not possible (%s); compiling the blocks before it",
                     anatomy.entry.key, block.name, site, why)
            engine = dataclasses.replace(engine, compile="on")

    def objective(features_of, pool=None) -> StepObjective:
        pre = anatomy.preprocess
        diversity = None if k == 1 else Diversity(block, k, recipe.copies, recipe.diversity_weight,
                                                  recipe.reference_scale)
        return StepObjective(features_of, pre.input_size, pre.mean, pre.std, recipe.copies, recipe.reference_scale,
                             recipe.tv_coef, lambda: engine.autocast(device), device, goal.readout(device), goal.sign,
                             pool, diversity, anchor)

    if k == 1:
        eager_fn = objective(features_of)
    else:  # the penalty needs the unreduced tensor; the objective pools it itself
        eager_fn = objective(lambda z: read_sites(net, [(block, site)], z, reduce=False)[0],
                             lambda t: goal.pool(t, block))
    step_fn = eager_fn if cut is None else compiled_step(
        net, (block.index, block.name, site, recipe.copies, recipe.reference_scale, recipe.tv_coef, engine.precision,
              engine.compile_mode, str(device), recipe.objective, recipe.direction, recipe.negative, recipe.accentuate,
              recipe.accentuate_weight),
        lambda: objective(cut), None if engine.compile_mode == "default" else engine.compile_mode)

    def loss_fn(x: torch.Tensor, step: int, part: slice, fn=None):
        which = copies_index[part.start * recipe.copies:part.stop * recipe.copies]
        return (fn or step_fn)(x, *schedule.features(part).at(step), which)

    # MACO's attribution (transparency) map: each image's absolute input gradient, summed over
    # channels and every step of the optimization: where the image mattered to the objective.
    attribution = torch.zeros(len(image_seeds), recipe.image_size, recipe.image_size, device=device) \
        if recipe.param == "maco" else None

    def param_loss(p: torch.Tensor, step: int, part: slice):
        image = param.image(p)
        if attribution is not None and image.requires_grad:
            def keep(grad: torch.Tensor, part: slice = part) -> None:  # returns None: the gradient is unchanged
                attribution[part].add_(grad.detach().abs().sum(1))

            image.register_hook(keep)
        return loss_fn(image, step, part)

    def clean_activations(images: torch.Tensor, per_pass: int | None, at: str = site) -> torch.Tensor:
        exact = Engine(precision="fp32", compile="off")
        with torch.no_grad():
            return torch.cat([activations(images[sl], index[sl], exact, at)
                              for sl in feature_chunks(len(images), None if per_pass is None else per_pass * k)])

    if engine.features_per_pass is None:
        def probe(n: int) -> None:
            x = x0[:n * k].clone().requires_grad_(True)
            loss_fn(x, 0, slice(0, n * k), eager_fn)[0].sum().backward()  # eager: no compile per probe shape

        engine = dataclasses.replace(engine, features_per_pass=fit_features_per_pass(
            probe, len(features), device, engine.memory_fraction))
    act_init = clean_activations(x0, engine.features_per_pass)
    with compiled_trunk(net, anatomy, block, engine.compile == "on"):
        p, trace = optimize(p0, param_loss, recipe, progress, engine.features_per_pass * k, engine.adam == "fused",
                            param.project)
    with torch.no_grad():
        image = param.image(p)
    act_final = clean_activations(image, engine.features_per_pass)
    both = {at: act_final if at == site else clean_activations(image, engine.features_per_pass, at)
            for at in unit_sites}
    wall = time.perf_counter() - start
    first = slice(None, None, k)  # each feature's image 0; the rest are its variants

    def rest(t: torch.Tensor) -> torch.Tensor:
        return t.view(len(features), k, *t.shape[1:])[:, 1:].cpu()

    if attribution is not None:
        attribution = attribution[first] / attribution[first].flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return Rendered(list(features), list(seeds), image[first].cpu(), act_init[first].cpu(), act_final[first].cpu(),
                    Trace(trace.steps, trace.loss[:, first], trace.activation[:, first]), wall, engine,
                    x0[first].cpu(), *(both[at][first].cpu() if at in both else None for at in ("mlp_pre", "mlp")),
                    variants=rest(image) if k > 1 else None, variant_act_final=rest(act_final) if k > 1 else None,
                    variant_seeds=[image_seeds[i * k + 1:(i + 1) * k] for i in range(len(features))] if k > 1 else None,
                    attribution=None if attribution is None else attribution.cpu())
