"""Activation maps: one feature's activation on every patch (or spatial position) of an image.

For token models only the patch tokens are used (prefix tokens dropped), on the model's patch grid;
for CNN layers, the channel's spatial map. Saved as an array (.npy) and as a PNG overlay.
"""

from __future__ import annotations

import io
import math
import posixpath

import numpy as np
import torch
from PIL import Image

from sweep.errors import SweepError
from sweep.models.anatomy import Anatomy, Block
from sweep.outputs import atomic_write, open_root, partition_value
from sweep.render import ModelInput
from sweep.taps import read_sites, token_features


@torch.no_grad()
def activation_maps(net: torch.nn.Module, anatomy: Anatomy, block: Block, site: str, feature: int,
                    images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) images in [0, 1] -> (B, gh, gw) activations of `feature` per position."""
    anatomy.check_features(block, site, [feature])
    (raw,) = read_sites(net, [(block, site)], ModelInput(anatomy)(images), reduce=False)
    if block.layout == "channels":
        return raw[:, feature].float().cpu()
    tokens = token_features(raw, block)[:, :, feature]
    side = math.isqrt(tokens.shape[1])
    if side * side != tokens.shape[1]:
        raise SweepError(f"{tokens.shape[1]} patch tokens at {block.name} do not form a square grid")
    return tokens.reshape(-1, side, side).float().cpu()


def overlay_png(image: np.ndarray, amap: np.ndarray, alpha: float = 0.55) -> bytes:
    """PNG of the image with the min-max normalised map on top (nearest upsampling: one cell per patch)."""
    import matplotlib

    h, w = image.shape[:2]
    lo, hi = float(amap.min()), float(amap.max())
    norm = (amap - lo) / (hi - lo) if hi > lo else np.zeros_like(amap)
    cells = np.asarray(Image.fromarray((norm * 255).astype(np.uint8)).resize((w, h), Image.NEAREST)) / 255.0
    heat = matplotlib.colormaps["inferno"](cells)[..., :3]
    blend = (1 - alpha) * image.astype(np.float64) + alpha * heat
    buf = io.BytesIO()
    Image.fromarray((np.clip(blend, 0, 1) * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def save_map(out: str, model: str, layer: int, site: str, feature: int, image_id: str, image: np.ndarray,
             amap: np.ndarray, storage_options: dict | None = None) -> str:
    """Write `<out>/activation_maps/model=<m>/layer=<l>/<site>-<f>/<image>.{npy,png}`; returns the PNG path."""
    fs, root = open_root(out, storage_options)
    base = posixpath.join(root, f"activation_maps/model={partition_value(model)}/layer={layer}/{site}-{feature}",
                          image_id.replace("/", "__"))
    buf = io.BytesIO()
    np.save(buf, amap.astype(np.float32))
    atomic_write(fs, base + ".npy", buf.getvalue())
    atomic_write(fs, base + ".png", overlay_png(image, amap))
    return base + ".png"
