"""Unit invariance: how much of a unit's activation on its top image survives rotation and shifts.

As the paper's code: rotation = 18 copies, copy k rotated by a random angle in [20k, 20k + 1] degrees
(nearest, no expansion, black fill); "before" is copy 0, "after" the mean over the 18. Shift = 16
circular shifts by (4i, 4j) pixels, i, j in 0..3; "before" is the unshifted image, "after" the mean.
Angles come from a generator seeded per image and recorded through `seed`.
"""

from __future__ import annotations

import zlib

import pandas as pd
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from sweep.method.render import ModelInput
from sweep.models.anatomy import Anatomy, Block
from sweep.models.taps import read_sites


def rotation_copies(image: torch.Tensor, generator: torch.Generator, copies: int = 18) -> torch.Tensor:
    """(3, H, W) -> (copies, 3, H, W): copy k rotated by U[20k, 20k + 1] degrees."""
    angles = (torch.arange(copies) * 20 + torch.rand(copies, generator=generator)).tolist()
    return torch.stack([TF.rotate(image, a, interpolation=InterpolationMode.NEAREST, expand=False, fill=0.0)
                        for a in angles])


def shift_copies(image: torch.Tensor, step: int = 4, n: int = 4) -> torch.Tensor:
    """(3, H, W) -> (n*n, 3, H, W): circular shifts by (step*i, step*j); copy 0 is the image itself."""
    return torch.stack([torch.roll(image, (step * i, step * j), dims=(-2, -1)) for i in range(n) for j in range(n)])


def image_seed(image_id: str, seed: int) -> int:
    return (zlib.crc32(image_id.encode()) + seed) % (2**31)


@torch.no_grad()
def unit_invariance(net: torch.nn.Module, anatomy: Anatomy, site: str, units: pd.DataFrame,
                    images: dict[str, torch.Tensor], seed: int = 0) -> pd.DataFrame:
    """For each row of `units` (layer, feature, image_id): before/after activations and their ratios.

    `images` maps image ids to (3, S, S) tensors in [0, 1] at the model's input size.
    """
    prepare = ModelInput(anatomy)
    layers = sorted(set(int(x) for x in units["layer"]))
    blocks: list[Block] = [anatomy.block(l) for l in layers]
    col = {l: i for i, l in enumerate(layers)}
    out = []
    for image_id, group in units.groupby("image_id", sort=True):
        image = images[image_id]
        device = next(net.parameters()).device
        batch = torch.cat([rotation_copies(image, torch.Generator().manual_seed(image_seed(image_id, seed))),
                           shift_copies(image)]).to(device)
        feats = read_sites(net, [(b, site) for b in blocks], prepare(batch))
        for row in group.itertuples(index=False):
            a = feats[col[int(row.layer)]][:, int(row.feature)].float().cpu()
            rot, shift = a[:18], a[18:]
            out.append({"layer": int(row.layer), "feature": int(row.feature), "image_id": image_id,
                        "seed": image_seed(image_id, seed),
                        "before_rotation": float(rot[0]), "after_rotation": float(rot.mean()),
                        "before_shift": float(shift[0]), "after_shift": float(shift.mean())})
    frame = pd.DataFrame(out)
    if len(frame):
        frame["rotation_ratio"] = frame["after_rotation"] / frame["before_rotation"]
        frame["shift_ratio"] = frame["after_shift"] / frame["before_shift"]
    return frame


def per_layer(frame: pd.DataFrame) -> pd.DataFrame:
    """The paper's plot numbers: per layer, mean ratio over units whose 'before' is positive."""
    rot = frame[frame["before_rotation"] > 0].groupby("layer")["rotation_ratio"].mean()
    shift = frame[frame["before_shift"] > 0].groupby("layer")["shift_ratio"].mean()
    return pd.DataFrame({"rotation": rot, "shift": shift}).reset_index()


class InvarianceScanner:
    """Ray Data actor: the invariance rows of every unit whose top image is in the batch."""

    def __init__(self, model: str, weights: str, site: str, units: pd.DataFrame, seed: int = 0):
        from sweep.core.devices import assigned_gpus, resolve_device
        from sweep.models.anatomy import anatomy_of
        from sweep.models.build import build

        self.anatomy = anatomy_of(model)
        self.net = build(self.anatomy.entry, weights, resolve_device(None, gpu_ids=assigned_gpus()))
        self.site, self.units, self.seed = site, units, seed

    def __call__(self, batch: dict) -> pd.DataFrame:
        import numpy as np

        images = {str(i): torch.as_tensor(np.asarray(img)).permute(2, 0, 1).float()
                  for i, s, img in zip(batch["image_id"], batch["status"], batch["image"]) if s == "ok"}
        units = self.units[self.units["image_id"].isin(list(images))]
        frame = unit_invariance(self.net, self.anatomy, self.site, units, images, self.seed)
        return frame if len(frame) else pd.DataFrame({c: [] for c in (
            "layer", "feature", "image_id", "seed", "before_rotation", "after_rotation", "before_shift",
            "after_shift", "rotation_ratio", "shift_ratio")})
