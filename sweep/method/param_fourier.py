"""Fourier parametrization (after Olah et al., "Feature Visualization", Distill 2017, and Lucid's
spectral images; written from the description, not from their code).

The optimized parameters are each image's 2-D real spectrum (3 channels, rfft layout, real and
imaginary parts), scaled by 1/frequency^decay so that every frequency band moves at about the same
rate under the optimizer (in pixel space, high frequencies dominate the gradient: the source of the
paper's high-frequency patterns). The spectrum's inverse transform gives decorrelated colour
channels, mixed by `COLOR_SQRT` into RGB and squashed by a sigmoid into (0, 1): every image is in
range by construction, so nothing is clamped.

`COLOR_SQRT` is the symmetric square root of the RGB covariance of the 15 natural photos the project
ships (scikit-image's, 6,203,861 pixels in [0, 1]), divided by its largest column norm; recomputed
from the photos by tests/test_param.py. Lucid uses ImageNet's; the photos are what this project has.
"""

from __future__ import annotations

from typing import Sequence

import torch

COLOR_SQRT = torch.tensor([[0.9313, 0.3127, 0.1866],
                           [0.3127, 0.4949, 0.4103],
                           [0.1866, 0.4103, 0.5487]])


def frequencies(size: int) -> torch.Tensor:
    """(size, size // 2 + 1) spatial frequency magnitudes, cycles per pixel, in rfft2's layout."""
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    return torch.sqrt(fy * fy + fx * fx)


class Fourier:
    """Images as scaled spectra: `init` draws the parameters, `image` maps them to (F, 3, S, S) in (0, 1)."""

    name = "fourier"

    def __init__(self, decay: float = 1.0, init_std: float = 0.01):
        self.decay, self.init_std = decay, init_std
        self._scale: dict = {}  # (size, device) -> (S, S//2+1) scale

    def init(self, generators: Sequence[torch.Generator], size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        shape = (3, size, size // 2 + 1, 2)
        return torch.stack([torch.randn(shape, generator=g) * self.init_std for g in generators]).to(device)

    def scale(self, size: int, device: torch.device) -> torch.Tensor:
        key = (size, device)
        if key not in self._scale:
            self._scale[key] = (1.0 / frequencies(size).clamp_min(1.0 / size) ** self.decay).to(device)
        return self._scale[key]

    def image(self, p: torch.Tensor) -> torch.Tensor:
        size = p.shape[2]
        spectrum = torch.view_as_complex(p.contiguous()) * self.scale(size, p.device)
        channels = torch.fft.irfft2(spectrum, s=(size, size), norm="ortho")
        rgb = torch.einsum("ij,fjhw->fihw", COLOR_SQRT.to(p.device, p.dtype), channels)
        return torch.sigmoid(rgb)

    def project(self, p: torch.Tensor) -> None:
        """Nothing to keep in range: the sigmoid does it."""
