"""Parametrization: the paper optimizes raw pixels in [0, 1], initialised uniformly at random."""

from __future__ import annotations

from typing import Sequence

import torch


def feature_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per feature, so a feature's draws never depend on its batch-mates.

    Draws are made on the CPU and moved to the image's device, which keeps CPU and GPU runs on
    the same random stream.
    """
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def init_pixels(generators: Sequence[torch.Generator], size: int,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """(F, 3, size, size) images drawn from U[0, 1), one per generator."""
    images = [torch.rand((3, size, size), generator=g) for g in generators]
    return torch.stack(images).to(device)
