"""Scores of a feature visualization that need no human: how strongly and robustly it drives its
unit, and whether it looks like an image rather than noise or a saturated blotch.

Single scores (each kept in the tuning rows):
  relative_activation  activation on the final image (no augmentation) / the unit's highest
                       activation over a reference set (natural images when given)
  robustness           mean activation under random draws of the recipe's augmentations / the
                       clean activation (1: the image survives the augmentations; 0 or less: not)
  total_variation      mean absolute difference of neighbouring pixels (flat 0, uniform noise 1/3)
  saturated_fraction   fraction of channel values within 1/255 of 0 or 1
  spectrum_slope       log-log slope of the radially averaged power spectrum (white noise ~0,
                       natural images ~-2)
Combined (COMBINED_SCORE_VERSION):
  min(relative_activation, 2) * clip(robustness, 0, 1) - saturated_fraction
      - 0.25 * |spectrum_slope - (-2)|          (a flat image, slope undefined, counts as 2 off)
The first term rewards images that drive the unit, and keep driving it when jittered; the
penalties catch the two failure modes of the paper's lr x TV grids: clipped, saturated images
(lr too high) and high-frequency noise (TV too low), whose spectrum is flat.
"""

from __future__ import annotations

import math

import torch

NATURAL_SLOPE = -2.0
COMBINED_SCORE_VERSION = "combined-v1"


def total_variation(image: torch.Tensor) -> float:
    """Mean absolute difference between horizontally and vertically neighbouring pixels, (3, H, W)."""
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    return float((dx + dy) / 2)


def saturated_fraction(image: torch.Tensor, eps: float = 1 / 255) -> float:
    """Fraction of channel values at the ends of [0, 1] (within eps)."""
    return float(((image <= eps) | (image >= 1 - eps)).float().mean())


def radial_power_spectrum(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(frequencies 1..N/2 in cycles per image, mean power at each) of the image's luminance."""
    gray = image.float().mean(0) if image.dim() == 3 else image.float()
    gray = gray - gray.mean()
    power = torch.fft.fftshift(torch.fft.fft2(gray)).abs() ** 2
    h, w = gray.shape
    yy, xx = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(w) - w // 2, indexing="ij")
    radius = torch.sqrt(yy.float() ** 2 + xx.float() ** 2).round().long()
    top = min(h, w) // 2
    sums = torch.zeros(radius.max() + 1).index_add_(0, radius.flatten(), power.flatten())
    counts = torch.zeros(radius.max() + 1).index_add_(0, radius.flatten(), torch.ones(radius.numel()))
    freqs = torch.arange(1, top + 1)
    return freqs.float(), sums[1:top + 1] / counts[1:top + 1]


def spectrum_slope(image: torch.Tensor) -> float:
    """Least-squares slope of log power against log frequency; nan for an image without variation."""
    freqs, power = radial_power_spectrum(image)
    keep = power > 1e-12 * max(float(power.max()), 1e-30)
    if float(power.max()) < 1e-20 or int(keep.sum()) < 3:
        return math.nan
    x, y = freqs[keep].log(), power[keep].log()
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


def combined_score(relative_activation: float, robustness: float, saturated: float, slope: float) -> float:
    """The documented combination (see the module docstring), one number per visualization."""
    off = 2.0 if math.isnan(slope) else abs(slope - NATURAL_SLOPE)
    drive = min(relative_activation, 2.0) * min(max(robustness, 0.0), 1.0)
    return drive - saturated - 0.25 * off
