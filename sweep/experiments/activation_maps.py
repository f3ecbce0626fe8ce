"""Activation maps: one feature's activation on every patch (or spatial position) of an image.

`sweep.pipelines.activation_maps` does it for a folder of images on Ray Data. An unreadable image (empty, not an
image, damaged) is not fatal: its rows get its status and a one-line `error` naming the file, and
the driver logs that line.

For token models only the patch tokens are used (prefix tokens dropped), on the model's patch grid;
for CNN layers, the channel's spatial map. Saved as an array (.npy) and as a PNG overlay.
"""

from __future__ import annotations

import io
import logging
import math
import posixpath

import numpy as np
import torch
from PIL import Image

from sweep.core.errors import SweepError
from sweep.method.render import ModelInput
from sweep.models.anatomy import Anatomy, Block
from sweep.models.taps import read_sites, token_features
from sweep.store.layout import MAP_FILES
from sweep.store.outputs import atomic_write, open_root

log = logging.getLogger(__name__)


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
    """Write `<out>/activation_maps/files/model=<m>/layer=<l>/<site>-<f>/<image>.{npy,png}`; returns the PNG path."""
    fs, root = open_root(out, storage_options)
    base = posixpath.join(root, MAP_FILES.part(posixpath.join(f"{site}-{feature}", image_id.replace("/", "__")),
                                               model=model, layer=layer))
    buf = io.BytesIO()
    np.save(buf, amap.astype(np.float32))
    atomic_write(fs, base + ".npy", buf.getvalue())
    atomic_write(fs, base + ".png", overlay_png(image, amap))
    return base + ".png"


class MapMaker:
    """Ray Data actor: maps of some features of one block for each image; writes .npy and .png."""

    def __init__(self, model: str, weights: str, layer: int, site: str, features: list[int], out: str,
                 storage_options: dict | None = None):
        from sweep.core.devices import assigned_gpus, resolve_device
        from sweep.models.anatomy import anatomy_of
        from sweep.models.build import build

        self.anatomy = anatomy_of(model)
        self.block = self.anatomy.block(layer)
        self.site, self.features, self.out, self.opts = site, features, out, storage_options
        self.device = resolve_device(None, gpu_ids=assigned_gpus())  # a GPU given but unusable: one line
        self.net = build(self.anatomy.entry, weights, self.device)

    def __call__(self, batch: dict) -> dict:
        rows: dict[str, list] = {k: [] for k in ("image_id", "feature", "status", "error", "side", "values", "png")}
        for image_id, status, error, image in zip(batch["image_id"], batch["status"], batch["error"], batch["image"]):
            x = torch.as_tensor(np.asarray(image), device=self.device).permute(2, 0, 1)[None].float()
            for f in self.features:
                rows["image_id"].append(str(image_id))
                rows["feature"].append(int(f))
                rows["status"].append(str(status))
                rows["error"].append(str(error or ""))
                if status != "ok":
                    rows["side"].append(0)
                    rows["values"].append(np.zeros(0, np.float32))
                    rows["png"].append("")
                    continue
                amap = activation_maps(self.net, self.anatomy, self.block, self.site, f, x)[0].numpy()
                rows["side"].append(amap.shape[0])
                rows["values"].append(amap.astype(np.float32).ravel())
                rows["png"].append(save_map(self.out, self.anatomy.entry.key, self.block.index, self.site, f,
                                            str(image_id), np.asarray(image), amap, self.opts))
        return rows
