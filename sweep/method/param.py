"""Parametrizations: what the optimizer changes, and how it becomes an image in [0, 1].

`pixel` is the paper's: raw pixels in [0, 1], initialised uniformly at random, clamped after every
step. Others live in files of their own (`param_fourier.py`, `param_maco.py`) and are chosen by the recipe's `param`;
each has init(generators, size, device) -> parameters, image(parameters) -> (F, 3, S, S) in [0, 1]
(differentiable, one image per feature from its own parameters only: batching never mixes
features), and project(parameters), applied in place after each optimizer step.
"""

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


class Pixels:
    """The paper's parametrization: the image is the parameter."""

    name = "pixel"

    def init(self, generators: Sequence[torch.Generator], size: int,
             device: torch.device | str = "cpu") -> torch.Tensor:
        return init_pixels(generators, size, device)

    def image(self, p: torch.Tensor) -> torch.Tensor:
        return p

    def project(self, p: torch.Tensor) -> None:
        p.clamp_(0.0, 1.0)


#: The recipe's `param` values.
PARAMS = ("pixel", "fourier", "maco")


def parametrization(name: str, spectrum: str | None = None):
    """The parametrization a recipe names (`spectrum`: maco's folder of images; None: the shipped photos)."""
    from sweep.method.param_fourier import Fourier
    from sweep.method.param_maco import Maco

    return Maco(spectrum) if name == "maco" else {"pixel": Pixels, "fourier": Fourier}[name]()
