"""Image conditions of the ablations, as pure functions on arrays: box masks and frequency filters.

Masks follow the paper's code exactly: on the full-resolution image, before resize and crop, each
own-class box [xmin, ymin, xmax, ymax] blacks out rows int(ymin):int(ymax) and columns
int(xmin):int(xmax) (Python slicing: the max row and column stay); background-only blacks out the
union of boxes, foreground-only keeps only that union (original - background).
Frequency filters act on the model-resolution image (after resize and crop), so a cutoff means the
same thing for every image of a model.
"""

from __future__ import annotations

import numpy as np

from sweep.data.boxes import box_problem

MASK_CONDITIONS = ("original", "background", "foreground")


def box_union_mask(height: int, width: int, boxes) -> np.ndarray:
    """(H, W) bool: True inside the union of boxes, with the paper's int() and exclusive max edges.
    Raises ValueError on a box that `box_problem` rejects."""
    mask = np.zeros((height, width), dtype=bool)
    for box in boxes:
        problem = box_problem(box, width, height)
        if problem:
            raise ValueError(f"bad box {list(box)}: {problem}")
        xmin, ymin, xmax, ymax = box
        mask[int(ymin):int(ymax), int(xmin):int(xmax)] = True
    return mask


def apply_mask_condition(image: np.ndarray, boxes, condition: str) -> np.ndarray:
    """(H, W, 3) uint8 image -> the same image under 'original', 'background' or 'foreground'."""
    if condition == "original":
        return image
    inside = box_union_mask(image.shape[0], image.shape[1], boxes)
    out = image.copy()
    if condition == "background":
        out[inside] = 0
    elif condition == "foreground":
        out[~inside] = 0
    else:
        raise ValueError(f"unknown mask condition {condition!r}; allowed: {', '.join(MASK_CONDITIONS)}")
    return out


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_low_pass(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W, C) float image, reflecting at the borders."""
    if sigma <= 0:
        return image
    k = _gaussian_kernel(sigma)
    r = len(k) // 2
    out = image.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="reflect")
        out = sum(k[i] * np.take(padded, np.arange(i, i + out.shape[axis]), axis=axis) for i in range(len(k)))
    return out.astype(np.float32)


def fft_low_pass(image: np.ndarray, radius: float) -> np.ndarray:
    """Ideal low-pass: keep spatial frequencies within `radius` x Nyquist (0..1), per channel."""
    h, w = image.shape[:2]
    fy = np.fft.fftfreq(h)[:, None] / 0.5
    fx = np.fft.fftfreq(w)[None, :] / 0.5
    keep = (fy ** 2 + fx ** 2) <= radius ** 2
    spec = np.fft.fft2(image.astype(np.float64), axes=(0, 1))
    return np.real(np.fft.ifft2(spec * keep[:, :, None], axes=(0, 1))).astype(np.float32)


def high_pass(image: np.ndarray, low: np.ndarray) -> np.ndarray:
    """What the low-pass removed, around the image's per-channel mean (so the DC term is kept)."""
    return (image - low + image.mean(axis=(0, 1), keepdims=True)).astype(np.float32)


def frequency_condition(image: np.ndarray, condition: str) -> np.ndarray:
    """Apply a named frequency condition such as 'lowpass_gauss_2', 'highpass_fft_0.25', 'original'."""
    if condition == "original":
        return image
    band, kind, value = condition.split("_")
    value = float(value)
    low = gaussian_low_pass(image, value) if kind == "gauss" else fft_low_pass(image, value)
    return low if band == "lowpass" else high_pass(image, low)


def frequency_conditions(sigmas=(0.5, 1, 2, 4, 8), radii=(0.5, 0.25, 0.125, 0.0625)) -> tuple[str, ...]:
    """The default grid: Gaussian sigmas (pixels at model resolution) and ideal radii (x Nyquist)."""
    names = ["original"]
    for band in ("lowpass", "highpass"):
        names += [f"{band}_gauss_{s:g}" for s in sigmas] + [f"{band}_fft_{r:g}" for r in radii]
    return tuple(names)
