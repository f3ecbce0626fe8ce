"""The paper's augmentation ensemble, as small pure transforms plus one composition.

Per step and feature: 8 copies, each with its own per-channel colour shift and scale and a
per-channel constant offset whose std decays to 0, then one circular shift shared by the copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from sweep.recipe import Recipe


def color_shift(z: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """(z - mu) / sigma per image and channel; mu, sigma are (N, 3)."""
    return (z - mu[:, :, None, None]) / sigma[:, :, None, None]


def channel_offset(z: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Add a constant per image and channel (the reference calls this 'GaussianNoise')."""
    return z + offset[:, :, None, None]


def roll(z: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Circular shift over height and width."""
    return torch.roll(z, shifts=(dy, dx), dims=(-2, -1))


def offset_decay(step: int, steps: int) -> float:
    """The reference's offset-std factor r/steps, with its counter quirk reproduced.

    Its counter starts at steps-1 (used up by the constructor) and counts down once per call,
    wrapping modulo `steps`: call i uses r = (steps - 2 - i) mod steps, so 398/400 at i = 0,
    0 at i = 398, then 399 and 398 at the last two (zero-lr) iterations.
    """
    return ((steps - 2 - step) % steps) / steps


@dataclass(frozen=True)
class Draws:
    """The random numbers of one step for one feature."""

    mu: torch.Tensor      # (copies, 3)
    sigma: torch.Tensor   # (copies, 3)
    offset: torch.Tensor  # (copies, 3), before scaling by the decay
    shift: tuple[int, int]


def draw(generator: torch.Generator, recipe: Recipe) -> Draws:
    """Draw one step's augmentation parameters, always in the same order from `generator`."""
    n = recipe.copies
    mu = (torch.rand((n, 3), generator=generator) - 0.5) * 2 * recipe.color_mean
    sigma = torch.exp((torch.rand((n, 3), generator=generator) - 0.5) * 2 * recipe.color_std)
    offset = torch.randn((n, 3), generator=generator)
    j = recipe.jitter
    dy, dx = torch.randint(-j, j + 1, (2,), generator=generator).tolist()
    return Draws(mu, sigma, offset, (dy, dx))


def augment(x: torch.Tensor, step: int, generators: Sequence[torch.Generator],
            recipe: Recipe) -> torch.Tensor:
    """(F, 3, S, S) images -> (F * copies, 3, S, S) augmented copies, grouped by feature."""
    scale = recipe.offset_std * offset_decay(step, recipe.steps)
    groups = []
    for image, gen in zip(x, generators):
        d = draw(gen, recipe)
        z = image.unsqueeze(0).expand(recipe.copies, -1, -1, -1)
        dev = dict(device=x.device, dtype=x.dtype)
        z = color_shift(z, d.mu.to(**dev), d.sigma.to(**dev))
        z = channel_offset(z, (d.offset * scale).to(**dev))
        groups.append(roll(z, *d.shift))
    return torch.cat(groups)
