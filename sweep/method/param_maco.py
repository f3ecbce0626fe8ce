"""MACO parametrization (Fel et al., "Unlocking Feature Visualization for Deeper Networks with MAgnitude
Constrained Optimization", NeurIPS 2023; written from the paper's description, not from its code).

Only the phase of each image's spectrum is optimized; its magnitude is fixed to the mean magnitude
spectrum of natural images, so every image keeps natural images' distribution of energy over
frequencies and cannot drift into the high-frequency patterns pixel optimization finds in deep
units. The natural images are the 15 photos the project ships (`sweep.data.photos`, scikit-image's;
centre-cropped square and resized, bilinear, to the image size); `magnitude` gives the spectrum and
`spectrum_hash` its identity. The inverse transform is standardized per image and channel and
squashed by a sigmoid into (0, 1) (the paper clips to a value range instead; a sigmoid keeps the
gradient everywhere). Not yet here: MACO's attribution (transparency) map.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def magnitude(size: int) -> torch.Tensor:
    """(3, size, size // 2 + 1) mean |rfft2| (orthonormal) of the shipped photos at `size` px."""
    from sweep.data.photos import photos

    total = torch.zeros(3, size, size // 2 + 1, dtype=torch.float64)
    images = photos()
    for array in images.values():
        x = torch.from_numpy(np.asarray(array, np.float64) / 255.0).permute(2, 0, 1)
        side = min(x.shape[1:])
        top, left = (x.shape[1] - side) // 2, (x.shape[2] - side) // 2
        x = F.interpolate(x[None, :, top:top + side, left:left + side], size=(size, size), mode="bilinear",
                          align_corners=False, antialias=True)[0]
        total += torch.fft.rfft2(x - x.mean(dim=(1, 2), keepdim=True), norm="ortho").abs()
    return (total / len(images)).float()


def spectrum_hash(spectrum: torch.Tensor) -> str:
    """The first 16 hex digits of the SHA-256 of the spectrum's float32 bytes."""
    return hashlib.sha256(spectrum.float().contiguous().numpy().tobytes()).hexdigest()[:16]


class Maco:
    """Images as phases of a fixed natural magnitude spectrum; `init` draws phases uniformly."""

    name = "maco"

    def __init__(self):
        self._magnitude: dict = {}  # (size, device) -> spectrum

    def spectrum(self, size: int, device: torch.device) -> torch.Tensor:
        key = (size, device)
        if key not in self._magnitude:
            self._magnitude[key] = magnitude(size).to(device)
        return self._magnitude[key]

    def init(self, generators: Sequence[torch.Generator], size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        shape = (3, size, size // 2 + 1)
        return torch.stack([(torch.rand(shape, generator=g) * 2 - 1) * math.pi for g in generators]).to(device)

    def raw(self, phase: torch.Tensor) -> torch.Tensor:
        """The inverse transform before standardization: its spectrum's magnitude is the fixed one."""
        size = phase.shape[2]
        spectrum = torch.polar(self.spectrum(size, phase.device).expand_as(phase), phase)
        return torch.fft.irfft2(spectrum, s=(size, size), norm="ortho")

    def image(self, phase: torch.Tensor) -> torch.Tensor:
        x = self.raw(phase)
        x = (x - x.mean(dim=(2, 3), keepdim=True)) / (x.std(dim=(2, 3), keepdim=True) + 1e-8)
        return torch.sigmoid(x)

    def project(self, phase: torch.Tensor) -> None:
        """Phases are angles: nothing to keep in range."""
