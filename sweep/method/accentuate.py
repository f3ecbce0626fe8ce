"""Feature accentuation (after Hamblin et al. 2024): start from a natural image instead of noise and
push the feature, while a penalty keeps the image's representation near the original's.

The start is one photo for every feature (`accentuate`: an image file or URL, pinned to its bytes
like weights files, or `photo:NAME`, one of the photos scikit-image ships: sweep/data/photos.py),
resized on its shorter side and centre-cropped to the recipe's image size. The penalty is the
squared distance between the site's pooled features (all units, as the objective pools them) of
each augmented copy and of the clean original, relative to the original's squared norm, times
`accentuate_weight` and scaled like the feature term; so the image may change where the feature
lives but must keep what the rest of the layer sees. Only the `pixel` parametrization starts from
an image (Fourier and MACO parameters are not an image's pixels).
"""

from __future__ import annotations

import functools
import io

import numpy as np
import torch
from torch import nn

from sweep.core.errors import SweepError
from sweep.models.build import PIN, content_digest, pinned_file

ACCENTUATE_CHOICES = "allowed: an image file (path or URL: PNG, JPEG, ...) or photo:NAME (sweep.data.photos.PHOTOS)"


def _decode(data: bytes, path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > 8192 * 8192:
                raise SweepError(f"recipe accentuate {path!r} is {img.width}x{img.height} pixels; at most 8192x8192")
            return np.asarray(img.convert("RGB"))
    except SweepError:
        raise
    except Exception as exc:  # not an image, truncated
        raise SweepError(f"recipe accentuate {path!r} is not a readable image ({type(exc).__name__}); "
                         f"{ACCENTUATE_CHOICES}") from None


def pin_accentuate(spec: str) -> str:
    """`photo:NAME` checked by name; a file pinned to its bytes and decoded once, where the config is validated."""
    spec = spec.strip()
    if spec.startswith("photo:"):
        from sweep.data.photos import PHOTOS

        if spec[len("photo:"):] not in PHOTOS:
            raise SweepError(f"recipe accentuate {spec!r}: no such photo; allowed: photo:NAME with NAME one of "
                             f"{', '.join(PHOTOS)}")
        return spec
    path, data = pinned_file(spec, "recipe accentuate", ACCENTUATE_CHOICES)
    _decode(data, path)
    return f"{path}{PIN}{content_digest(data)}"


@functools.lru_cache(maxsize=4)
def _pixels(spec: str) -> np.ndarray:
    if spec.startswith("photo:"):
        from sweep.data.photos import photos

        return photos()[spec[len("photo:"):]]
    path, data = pinned_file(spec, "recipe accentuate", ACCENTUATE_CHOICES)
    return _decode(data, path)


def start_image(spec: str, size: int) -> torch.Tensor:
    """(3, size, size) in [0, 1]: the photo resized on its shorter side and centre-cropped."""
    from torchvision.transforms.v2 import functional as TF

    x = torch.from_numpy(np.array(_pixels(spec))).permute(2, 0, 1).float() / 255.0  # a copy: the cache stays whole
    x = TF.resize(x, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return TF.center_crop(x, [size, size]).clamp(0.0, 1.0).contiguous()


class Anchor(nn.Module):
    """(B, width) pooled features of the copies -> (images,) penalty for leaving the original's."""

    def __init__(self, target: torch.Tensor, copies: int, weight: float, reference_scale: bool):
        super().__init__()
        self.register_buffer("target", target.detach().float().reshape(1, -1), persistent=False)
        self.copies = copies
        self.scale = weight / copies if reference_scale else weight

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        gap = (feats.float() - self.target).pow(2).sum(1) / self.target.pow(2).sum().clamp_min(1e-12)
        return self.scale * gap.view(-1, self.copies).mean(1)
