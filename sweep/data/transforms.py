"""The evaluation transform on arrays: torchvision's Resize + CenterCrop, to the pixel, without torchvision.

Shared by everything that feeds natural images to a model (the ablations, the tuning references,
the reference photos of the method's measures), so a photo means the same pixels everywhere.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
from PIL import Image


def resize_center_crop(image: np.ndarray, size: int, resize: int | None = None,
                       interpolation: str = "bilinear") -> np.ndarray:
    """The paper's transform, torchvision's `Resize(size)` + `CenterCrop(size)` to the pixel: the short
    side to `size` (bilinear, PIL), the long side scaled and truncated as torchvision does (500x375 ->
    298x224, not 299), then the centre crop; float [0, 1]. A model's own evaluation transform
    (timm, torchvision weights) is the same with the short side to `resize` (input / crop_pct) and its
    interpolation (bilinear, bicubic, nearest, lanczos, box, hamming)."""
    pil = Image.fromarray(image)
    w, h = pil.size
    target = resize or size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(target * long / short)
    nw, nh = (target, new_long) if w <= h else (new_long, target)
    if (nw, nh) != (w, h):
        pil = pil.resize((nw, nh), RESAMPLING.get(interpolation, Image.BILINEAR))
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
    pil = pil.crop((left, top, left + size, top + size))
    return np.asarray(pil, dtype=np.float32) / 255.0


def center_crop_batch(images: Iterable[np.ndarray], size: int, resize: int | None = None,
                      interpolation: str = "bilinear") -> np.ndarray:
    """(N, 3, size, size) float32 in [0, 1], contiguous: each image through `resize_center_crop`,
    channels first as a model reads them."""
    crops = np.stack([resize_center_crop(image, size, resize, interpolation) for image in images])
    return np.ascontiguousarray(crops.transpose(0, 3, 1, 2))


#: PIL's filters by the names torchvision's InterpolationMode and timm's configs use.
RESAMPLING = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
              "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}
