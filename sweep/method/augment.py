"""The paper's augmentation ensemble, as small pure transforms plus one composition.

Per step and feature: 8 copies, each with its own per-channel colour shift and scale and a
per-channel constant offset whose std decays to 0, then one circular shift shared by the copies.

All random numbers of a run are drawn before the loop (`draw_schedule`), from each feature's own
CPU generator in a fixed order, and moved to the device once: the step loop then never waits
on the host, and a feature's images do not depend on its batch-mates or on the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from sweep.method.recipe import Recipe


def color_shift(z: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """(z - mu) / sigma per image and channel; mu, sigma are (N, 3)."""
    return (z - mu[:, :, None, None]) / sigma[:, :, None, None]


def channel_offset(z: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Add a constant per image and channel (the reference calls this 'GaussianNoise')."""
    return z + offset[:, :, None, None]


def roll(z: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Circular shift of each image z[i] by shifts[i] = (dy, dx), as torch.roll does, in one gather.

    z is (N, C, H, W), shifts (N, 2) integers on z's device; a pure permutation, so the values
    are exactly torch.roll's.
    """
    n, c, h, w = z.shape
    rows = (torch.arange(h, device=z.device) - shifts[:, :1]) % h   # (N, H)
    cols = (torch.arange(w, device=z.device) - shifts[:, 1:]) % w   # (N, W)
    z = z.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    return z.gather(3, cols[:, None, None, :].expand(n, c, h, w))


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


@dataclass(frozen=True)
class Schedule:
    """Every step's draws for F features, stacked; index [features, step] to augment a step."""

    mu: torch.Tensor      # (F, T, copies, 3)
    sigma: torch.Tensor   # (F, T, copies, 3)
    offset: torch.Tensor  # (F, T, copies, 3), already scaled by offset_std * decay(step)
    shift: torch.Tensor   # (F, T, 2) integer (dy, dx)

    def features(self, part: slice) -> "Schedule":
        return Schedule(self.mu[part], self.sigma[part], self.offset[part], self.shift[part])

    def to(self, device: torch.device | str) -> "Schedule":
        return Schedule(*(t.to(device) for t in (self.mu, self.sigma, self.offset, self.shift)))

    def at(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step's draws (mu, sigma, offset, shift) for every feature, as `augment_with` takes them;
        contiguous, so their strides do not depend on the number of steps (a compiled step guards on them)."""
        return tuple(t[:, step].contiguous() for t in (self.mu, self.sigma, self.offset, self.shift))


def draw_schedule(generators: Sequence[torch.Generator], recipe: Recipe) -> Schedule:
    """Draw all `recipe.iterations` steps for each feature, step after step per generator.

    The per-generator order (step 0's mu, sigma, offset, shift, then step 1's ...) is the one the
    engine has always used, so images are unchanged by drawing ahead.
    """
    scale = torch.tensor([recipe.offset_std * offset_decay(i, recipe.steps) for i in range(recipe.iterations)])
    per_feature = []
    for gen in generators:
        steps = [draw(gen, recipe) for _ in range(recipe.iterations)]
        per_feature.append((torch.stack([d.mu for d in steps]), torch.stack([d.sigma for d in steps]),
                            torch.stack([d.offset for d in steps]) * scale[:, None, None],
                            torch.tensor([d.shift for d in steps])))
    mu, sigma, offset, shift = (torch.stack(parts) for parts in zip(*per_feature))
    return Schedule(mu, sigma, offset, shift)


def augment(x: torch.Tensor, step: int, schedule: Schedule) -> torch.Tensor:
    """(F, 3, S, S) images -> (F * copies, 3, S, S) augmented copies, grouped by feature.

    `schedule` holds the F features' draws (already on x's device).
    """
    return augment_with(x, *schedule.at(step))


def augment_with(x: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, offset: torch.Tensor,
                 shift: torch.Tensor) -> torch.Tensor:
    """`augment` from one step's draws: mu, sigma, offset (F, copies, 3), shift (F, 2); tensors
    only, so a compiled step does not specialize on the step number. The shared shift is applied
    to each image before it is copied: a permutation commutes with per-channel constants."""
    f, copies = mu.shape[0], mu.shape[1]
    x = roll(x, shift)
    z = x.repeat_interleave(copies, dim=0)
    z = color_shift(z, mu.reshape(f * copies, 3), sigma.reshape(f * copies, 3))
    return channel_offset(z, offset.reshape(f * copies, 3))
