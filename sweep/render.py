"""Render feature visualizations for a loaded model: the recipe's parts put together.

Knows nothing about files or Ray: give it a network, a block, a site and features; get images
and the numbers that describe how the optimization went.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sweep.augment import augment
from sweep.models.anatomy import Anatomy, Block
from sweep.objectives import feature_loss, total_variation
from sweep.optimize import Trace, feature_chunks, optimize
from sweep.param import feature_generators, init_pixels
from sweep.recipe import Recipe
from sweep.taps import read_features


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


class ModelInput:
    """Turns images in [0, 1] into what the network expects: resize to its input, normalize."""

    def __init__(self, anatomy: Anatomy):
        self.size = anatomy.preprocess.input_size
        self.mean = torch.tensor(anatomy.preprocess.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(anatomy.preprocess.std).view(1, 3, 1, 1)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[-1] != self.size or z.shape[-2] != self.size:
            z = F.interpolate(z, size=(self.size, self.size), mode="bilinear", align_corners=False)
        mean = self.mean.to(device=z.device, dtype=z.dtype)
        std = self.std.to(device=z.device, dtype=z.dtype)
        return (z - mean) / std


def seeds_for(features: Sequence[int], base_seed: int = 0) -> list[int]:
    """Per-feature seeds; base_seed 0 gives the paper's choice, seed = feature index."""
    return [int(base_seed) + int(f) for f in features]


def render(net: nn.Module, anatomy: Anatomy, block: Block, site: str, features: Sequence[int],
           recipe: Recipe, seeds: Sequence[int], device: torch.device | str,
           progress: Callable[[int], None] | None = None,
           features_per_pass: int | None = None) -> Rendered:
    """Optimize one image per feature of (block, site), all features in one batch.

    features_per_pass: how many features share one forward/backward (see `optimize`).
    """
    features = anatomy.check_features(block, site, features)
    recipe = recipe.resolved(anatomy.entry.lr, anatomy.preprocess.input_size)
    prepare = ModelInput(anatomy)
    generators = feature_generators(seeds)
    index = torch.tensor(features, device=device)

    def activations(images: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        feats = read_features(net, block, site, prepare(images))
        return feats.gather(1, which[:, None]).squeeze(1)

    def loss_fn(x: torch.Tensor, step: int, part: slice):
        z = augment(x, step, generators[part], recipe)
        acts = activations(z, index[part].repeat_interleave(recipe.copies))
        tv = total_variation(z).view(-1, recipe.copies).mean(1)
        loss = feature_loss(acts, recipe.copies, recipe.reference_scale) + recipe.tv_coef * tv
        return loss, acts.view(-1, recipe.copies).mean(1)

    def clean_activations(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([activations(images[sl], index[sl])
                              for sl in feature_chunks(len(features), features_per_pass)])

    start = time.perf_counter()
    x0 = init_pixels(generators, recipe.image_size, device)
    act_init = clean_activations(x0)
    image, trace = optimize(x0, loss_fn, recipe, progress, features_per_pass)
    act_final = clean_activations(image)
    images = image.cpu()
    wall = time.perf_counter() - start
    return Rendered(list(features), list(seeds), images, act_init.cpu(), act_final.cpu(), trace, wall)
