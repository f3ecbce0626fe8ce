"""MACO parametrization (Fel et al., "Unlocking Feature Visualization for Deeper Networks with MAgnitude
Constrained Optimization", NeurIPS 2023; written from the paper's description, not from its code).

Only the phase of each image's spectrum is optimized; its magnitude is fixed to the mean magnitude
spectrum of natural images, so every image keeps natural images' distribution of energy over
frequencies and cannot drift into the high-frequency patterns pixel optimization finds in deep
units. The natural images are the 15 photos the project ships (`sweep.data.photos`, scikit-image's)
or a folder the recipe's `spectrum` names (any fsspec URL; pinned at validation to a hash of its
listing: names and sizes), each centre-cropped square and resized, bilinear, to the image size;
`magnitude` gives the spectrum and `spectrum_hash` its identity. The inverse transform is
standardized per image and channel and squashed by a sigmoid into (0, 1) (the paper clips to a value
range instead; a sigmoid keeps the gradient everywhere). MACO's attribution (transparency) map is
made by the render (`sweep/method/render.py`): the image's absolute input gradients summed over the steps.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import math
import posixpath
from typing import Iterable, Iterator, Sequence

import fsspec
import numpy as np
import torch
import torch.nn.functional as F

from sweep.core.errors import SweepError, one_line, storage_reason
from sweep.models.build import PIN, split_pin

log = logging.getLogger(__name__)


def folder_images(folder: str) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 arrays of a folder's images (sorted paths); unreadable ones skipped with a warning."""
    from PIL import Image

    from sweep.data.imagenet import image_folder

    for rec in image_folder(folder).records:
        try:
            with fsspec.open(rec["path"], "rb") as fh, Image.open(io.BytesIO(fh.read())) as img:
                yield np.asarray(img.convert("RGB"))
        except Exception as exc:  # a damaged file is skipped, not fatal
            log.warning("spectrum image %s skipped: %s", rec["path"], one_line(exc, 120))


def magnitude(size: int, folder: str | None = None) -> torch.Tensor:
    """(3, size, size // 2 + 1) mean |rfft2| (orthonormal) of the shipped photos (or a folder's
    images, pinned: `FOLDER#sha256=...`) at `size` px."""
    if folder is None:
        from sweep.data.photos import photos

        arrays: Iterable[np.ndarray] = photos().values()
    else:
        arrays = folder_images(split_pin(folder)[0])
    total = torch.zeros(3, size, size // 2 + 1, dtype=torch.float64)
    count = 0
    for array in arrays:
        x = torch.from_numpy(np.asarray(array, np.float64) / 255.0).permute(2, 0, 1)
        side = min(x.shape[1:])
        top, left = (x.shape[1] - side) // 2, (x.shape[2] - side) // 2
        x = F.interpolate(x[None, :, top:top + side, left:left + side], size=(size, size), mode="bilinear",
                          align_corners=False, antialias=True)[0]
        total += torch.fft.rfft2(x - x.mean(dim=(1, 2), keepdim=True), norm="ortho").abs()
        count += 1
    if not count:
        raise SweepError(f"recipe spectrum {folder!r}: none of its images could be read")
    return (total / count).float()


def pin_spectrum(folder: str) -> str:
    """A folder of images pinned to the SHA-256 of its listing (relative names and sizes): a folder
    whose images change is a new spectrum, in the config hash, without reading every image to plan."""
    folder = folder.strip()
    path, pin = split_pin(folder)
    try:
        fs, local = fsspec.core.url_to_fs(path)
        if not fs.isdir(local):
            raise SweepError(f"recipe spectrum {path!r} is not a folder; allowed: a folder of images (any fsspec URL)")
        found = fs.find(local, detail=True)
    except SweepError:
        raise
    except Exception as exc:
        raise SweepError(f"cannot list recipe spectrum {path!r}: {storage_reason(exc, path)}") from None
    listing = sorted((posixpath.relpath(p, local), int(info.get("size") or 0)) for p, info in found.items()
                     if posixpath.splitext(p)[1].lower() in (".jpeg", ".jpg", ".png"))
    if not listing:
        raise SweepError(f"recipe spectrum {path!r} holds no images (.jpeg, .jpg, .png)")
    digest = hashlib.sha256("".join(f"{n}\0{size}\n" for n, size in listing).encode()).hexdigest()[:16]
    if pin is not None and pin != digest:
        raise SweepError(f"recipe spectrum {path!r} changed since it was pinned ({pin}, now {digest})")
    return f"{path}{PIN}{digest}"


@functools.lru_cache(maxsize=8)
def _cached_magnitude(size: int, folder: str | None) -> torch.Tensor:
    """Once per process per (size, pinned folder): a worker reads a folder's images once, not per batch."""
    return magnitude(size, folder)


def spectrum_hash(spectrum: torch.Tensor) -> str:
    """The first 16 hex digits of the SHA-256 of the spectrum's float32 bytes."""
    return hashlib.sha256(spectrum.float().contiguous().numpy().tobytes()).hexdigest()[:16]


class Maco:
    """Images as phases of a fixed natural magnitude spectrum; `init` draws phases uniformly."""

    name = "maco"

    def __init__(self, folder: str | None = None):
        self.folder = folder  # None: the shipped photos; else a pinned folder of images
        self._magnitude: dict = {}  # (size, device) -> spectrum

    def spectrum(self, size: int, device: torch.device) -> torch.Tensor:
        key = (size, device)
        if key not in self._magnitude:
            self._magnitude[key] = _cached_magnitude(size, self.folder).to(device)
        return self._magnitude[key]

    def init(self, generators: Sequence[torch.Generator], size: int,
             device: torch.device | str = "cpu") -> torch.Tensor:
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
