"""Measures of a finished image that need no human, stored in every row whatever the method.

- shift robustness: the objective's clean value on the image rolled by 8 seeded shifts (up to the
  recipe's jitter, wrapping as its jitter does), over its clean value on the image;
- scale robustness: the same over zooms of 0.8, 0.9, 1.1 and 1.2 about the centre (reflected borders);
- plausibility: the highest cosine similarity of the image's final features (the last block's default
  site, mean-pooled: what the model makes of the whole image) to a reference photo's, beside the same
  number for the photos themselves (each photo against the others), so a reader can tell whether
  the model sees the image as it sees a photo.
The objective's value is the readout times its sign (what was raised); a value at or below 0 on
the clean image gives robustness 0. A few forwards per image: about 0.1 % of a 400-step render.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sweep.method.objective import Objective, objective_for
from sweep.method.render import ModelInput, site_features
from sweep.method.tuned import resolve_recipe
from sweep.models.anatomy import Anatomy, Block
from sweep.models.taps import read_features

#: Shifts of each image are drawn from a generator seeded (feature seed + this).
SHIFT_SEED_OFFSET = 2_000_003
SHIFT_DRAWS = 8
SCALES = (0.8, 0.9, 1.1, 1.2)


@dataclass
class Measured:
    shift_robustness: torch.Tensor           # (F,)
    scale_robustness: torch.Tensor           # (F,)
    plausibility: torch.Tensor | None        # (F,)
    plausibility_reference: float | None     # the photos' own (mean over photos of the best other photo)


def zoom(images: torch.Tensor, scale: float) -> torch.Tensor:
    """Images zoomed by `scale` about their centre (> 1 enlarges), borders reflected, same size."""
    theta = torch.tensor([[1 / scale, 0.0, 0.0], [0.0, 1 / scale, 0.0]], dtype=images.dtype, device=images.device)
    grid = F.affine_grid(theta.expand(len(images), 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def shifted(image: torch.Tensor, max_shift: int, draws: int, seed: int) -> torch.Tensor:
    """(draws, 3, S, S): the image rolled by seeded shifts in [-max_shift, max_shift]."""
    gen = torch.Generator().manual_seed(int(seed))
    shifts = torch.randint(-max_shift, max_shift + 1, (draws, 2), generator=gen).tolist()
    return torch.stack([torch.roll(image, (dy, dx), dims=(1, 2)) for dy, dx in shifts])


class Values:
    """(N, 3, S, S) images in [0, 1], (N,) features -> (N,) the objective's signed clean values."""

    def __init__(self, net: nn.Module, block: Block, site: str, goal: Objective, prepare, device, chunk: int = 32):
        self.features_of = site_features(net, block, site, goal)
        self.readout, self.sign, self.prepare, self.chunk = goal.readout(device), goal.sign, prepare, chunk

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.sign * self.readout(self.features_of(self.prepare(images[i:i + self.chunk])).float(),
                                                   which[i:i + self.chunk])
                          for i in range(0, len(images), self.chunk)])


def robustness(values: Values, images: torch.Tensor, features: Sequence[int], seeds: Sequence[int],
               clean: torch.Tensor, max_shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(F,) shift and (F,) scale robustness of F images (their features' signed clean values `clean`)."""
    device = images.device
    shift_in = torch.cat([shifted(images[i].cpu(), max_shift, SHIFT_DRAWS, seeds[i] + SHIFT_SEED_OFFSET)
                          for i in range(len(features))]).to(device)
    which = torch.tensor(list(features), device=device)
    shift = values(shift_in, which.repeat_interleave(SHIFT_DRAWS)).view(len(features), -1).mean(1).cpu()
    scale_in = torch.stack([zoom(images, s) for s in SCALES], 1).flatten(0, 1)
    scale = values(scale_in, which.repeat_interleave(len(SCALES))).view(len(features), -1).mean(1).cpu()
    on = clean > 0
    return (torch.where(on, shift / clean.clamp_min(1e-12), 0.0), torch.where(on, scale / clean.clamp_min(1e-12), 0.0))


class Plausibility:
    """The model's final features of a reference set of photos, and how near an image comes to them."""

    def __init__(self, net: nn.Module, anatomy: Anatomy, photos: Mapping[str, np.ndarray], prepare, device):
        from sweep.data.transforms import center_crop_batch

        pre = anatomy.preprocess
        self.net, self.block, self.prepare = net, anatomy.blocks[-1], prepare
        self.site = anatomy.default_site
        refs = torch.from_numpy(center_crop_batch(photos.values(), pre.input_size, pre.resize_size,
                                                  pre.interpolation)).to(device)
        self.refs = self.embed(refs)
        sims = self.refs @ self.refs.T
        sims.fill_diagonal_(-1.0)
        self.reference = float(sims.amax(1).mean()) if len(self.refs) > 1 else None

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        feats = torch.cat([read_features(self.net, self.block, self.site, self.prepare(images[i:i + 32])).float()
                           for i in range(0, len(images), 32)])
        return F.normalize(feats, dim=1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (self.embed(images) @ self.refs.T).amax(1).cpu()


def measure(net: nn.Module, anatomy: Anatomy, block: Block, site: str, recipe, made,
            device: torch.device | str, plausibility: Plausibility | None = None) -> Measured:
    """The measures of a render's images (`made`: sweep.method.render.Rendered) with its recipe."""
    recipe, _ = resolve_recipe(recipe, anatomy.entry, anatomy.preprocess.input_size)
    goal = objective_for(recipe, block, site)
    images = made.images.to(device)
    values = Values(net, block, site, goal, ModelInput(anatomy), device)
    shift, scale = robustness(values, images, made.features, made.seeds, goal.sign * made.act_final.float(),
                              recipe.jitter)
    return Measured(shift, scale, None if plausibility is None else plausibility(images),
                    None if plausibility is None else plausibility.reference)
