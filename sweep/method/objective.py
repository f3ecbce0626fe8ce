"""Objectives: which number of a site's features an image is optimized to raise (or lower).

Every objective here is a linear readout of one site's features, chosen by the recipe:
- `unit` (the paper's): feature i is unit i, averaged over the patch tokens (or the grid);
- `neuron`: unit i at one position only (`position`: a patch token index, or the centre patch);
- `direction`: feature i is row i of a set of directions in the site's space (`direction`: a
  .npy file or `A-B`, the difference of two units; sweep/method/objective_direction.py), averaged
  over the patch tokens;
and `negative` turns any of them into minimizing. The paper's `mlp` unit is read after the GELU;
its `mlp_pre` site reads the same unit before it, which cannot be raised by switching it off.

The loop never branches on the objective: it gets a pooling (positions -> one vector per image)
and a `Readout` (vector -> one number per image, for the feature each image is made for), both
per copy and batched, so features of any objective share a pass exactly as units do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from sweep.core.errors import SweepError
from sweep.models.anatomy import Anatomy, Block
from sweep.models.taps import reduce_features, token_features

#: The recipe's `objective` values.
OBJECTIVES = ("unit", "neuron", "direction")


def centre_position(t: torch.Tensor, block: Block) -> int:
    """The centre patch (token layouts, square grids; else the middle token) or grid cell."""
    if block.layout == "channels":
        h, w = t.shape[2], t.shape[3]
        return (h // 2) * w + w // 2
    if t.dim() == 4:  # (B, H, W, C) token grids (Swin)
        h, w = t.shape[1], t.shape[2]
        return (h // 2) * w + w // 2
    n = t.shape[1] - block.prefix_tokens
    side = math.isqrt(n)
    return (side // 2) * side + side // 2 if side * side == n else n // 2


def positions(t: torch.Tensor, block: Block) -> int:
    """How many positions a site's features have (patch tokens or grid cells)."""
    if block.layout == "channels":
        return t.shape[2] * t.shape[3]
    return token_features(t, block).shape[1]


def at_position(t: torch.Tensor, block: Block, position: int | None) -> torch.Tensor:
    """(B, C) features at one patch token / grid cell (None: the centre) of an unreduced tensor."""
    pos = centre_position(t, block) if position is None else position
    count = positions(t, block)
    if not 0 <= pos < count:
        raise SweepError(f"recipe position {pos} is outside block {block.name}'s positions; allowed: 0..{count - 1}")
    if block.layout == "channels":
        return t.flatten(2)[:, :, pos]
    return token_features(t, block)[:, pos]


class Readout(nn.Module):
    """(B, width) pooled features, (B,) which feature each image is for -> (B,) readout values.

    A unit is a gather (the paper's arithmetic, bit for bit); a direction is the dot product with
    its row. The sign is applied by the loss, not here: recorded activations are the readout itself.
    """

    def __init__(self, table: torch.Tensor | None, device: torch.device | str):
        super().__init__()
        self.register_buffer("table", None if table is None else table.to(device=device, dtype=torch.float32),
                             persistent=False)

    def forward(self, feats: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        feats = feats.float()
        if self.table is None:
            return feats.gather(1, which[:, None]).squeeze(1)
        return (feats * self.table[which]).sum(1)


@dataclass(frozen=True)
class Objective:
    """One recipe's objective at one (block, site), resolved: see the module docstring."""

    name: str
    sign: float = 1.0
    pooled_at: int | None = None   # neuron: the position; None with name "neuron": the centre
    table: torch.Tensor | None = None  # direction rows (N, width)

    @property
    def mean_pooled(self) -> bool:
        """Whether features are the mean over positions, as the hook tap and the cut network reduce them."""
        return self.name != "neuron"

    def pool(self, t: torch.Tensor, block: Block) -> torch.Tensor:
        """Unreduced site tensor -> (B, width)."""
        return reduce_features(t, block) if self.mean_pooled else at_position(t, block, self.pooled_at)

    def count(self, width: int) -> int:
        """How many features the objective has at a site of `width` units."""
        return width if self.table is None else int(self.table.shape[0])

    def readout(self, device: torch.device | str) -> Readout:
        return Readout(self.table, device)

    def check(self, anatomy: Anatomy, block: Block, site: str, features: Sequence[int]) -> list[int]:
        """The features as ints, or one line naming the first outside the objective's range (and a
        neuron's position outside the block's patch tokens, where the anatomy knows their number)."""
        if self.pooled_at is not None and block.tokens is not None:
            count = block.tokens - block.prefix_tokens
            if not 0 <= self.pooled_at < count:
                raise SweepError(f"recipe position {self.pooled_at} is outside block {block.name}'s patch tokens; "
                                 f"allowed: 0..{count - 1}")
        if self.table is None:
            return anatomy.check_features(block, site, features)
        n = self.count(block.width(site))
        bad = [f for f in features if not 0 <= int(f) < n]
        if bad:
            raise SweepError(f"feature {bad[0]} out of range for {anatomy.entry.key} layer {block.index} "
                             f"({block.name}) site {site}: the direction objective has {n} direction(s), "
                             f"allowed 0..{n - 1}")
        return [int(f) for f in features]


def objective_for(recipe, block: Block, site: str) -> Objective:
    """The recipe's objective at (block, site): directions read (pinned files) and checked against the width."""
    from sweep.method.objective_direction import directions

    sign = -1.0 if recipe.negative else 1.0
    if recipe.objective == "direction":
        return Objective("direction", sign, table=directions(recipe.direction, block.width(site)))
    if recipe.objective == "neuron":
        return Objective("neuron", sign, pooled_at=recipe.position)
    return Objective("unit", sign)
