"""Diversity (Olah et al. 2017, "Feature Visualization", section Diversity): k images per feature,
optimized together, each penalized by how much its *style* resembles its siblings'.

An image's style is the Gram matrix of the site's features over positions (channels x channels,
positions of all its augmented copies pooled), so siblings may share the unit's pattern but not
its texture statistics. The penalty of image i of a group is `weight` times its mean cosine
similarity to the other k - 1 Gram matrices, scaled like the feature term (1/copies under the
paper's reference scale), so a weight of 1 trades one unit of activation for full similarity.
Groups never mix: a feature's images see only each other, so batches stay exact.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from sweep.models.anatomy import Block
from sweep.models.taps import token_features


def variant_seeds(seed: int, count: int) -> list[int]:
    """Seeds of a feature's `count` images: its own seed first (the image a run without diversity
    starts from), then seeds derived from (seed, j) by SHA-256, recorded in the row."""
    return [int(seed)] + [int(hashlib.sha256(f"{int(seed)}:{j}".encode()).hexdigest()[:15], 16)
                          for j in range(1, count)]


def positions_by_channels(t: torch.Tensor, block: Block) -> torch.Tensor:
    """Unreduced site tensor -> (B, positions, C): patch tokens, or the grid's cells."""
    if block.layout == "channels":
        return t.flatten(2).transpose(1, 2)
    return token_features(t, block)


def gram_similarity(t: torch.Tensor, block: Block, group: int, copies: int) -> torch.Tensor:
    """(images * copies, ...) unreduced features -> (images,) mean cosine similarity of each image's
    Gram matrix to its group's other images' (groups of `group` consecutive images)."""
    a = positions_by_channels(t, block).float()
    n_images = a.shape[0] // copies
    a = a.reshape(n_images, -1, a.shape[-1])  # an image's positions over all its copies
    gram = F.normalize((a.transpose(1, 2) @ a).flatten(1) / a.shape[1], dim=1)
    gram = gram.view(n_images // group, group, -1)
    sim = gram @ gram.transpose(1, 2)  # (groups, k, k), ones on the diagonal
    return ((sim.sum(-1) - sim.diagonal(dim1=1, dim2=2)) / (group - 1)).flatten()


class Diversity(torch.nn.Module):
    """The penalty per image, as a module the step holds (compiled with it, never in the loop)."""

    def __init__(self, block: Block, group: int, copies: int, weight: float, reference_scale: bool):
        super().__init__()
        self.block, self.group, self.copies = block, group, copies
        self.scale = weight / copies if reference_scale else weight

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.scale * gram_similarity(t, self.block, self.group, self.copies)
