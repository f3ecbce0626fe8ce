"""Objectives: the feature term and the 4-direction total-variation regulariser."""

from __future__ import annotations

import torch


def feature_loss(acts: torch.Tensor, copies: int, reference_scale: bool = True) -> torch.Tensor:
    """Per-feature loss from (F * copies,) activations, grouped by feature -> (F,).

    reference_scale: the paper's -sum/copies**2 (its `.diag()` quirk); else -mean.
    """
    grouped = acts.view(-1, copies)
    return -grouped.sum(1) / copies**2 if reference_scale else -grouped.mean(1)


def total_variation(z: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N,): sum over 4 directions of the channel-mean of per-channel L2 norms."""
    diffs = (
        z[..., :, 1:] - z[..., :, :-1],          # horizontal
        z[..., 1:, :] - z[..., :-1, :],          # vertical
        z[..., 1:, 1:] - z[..., :-1, :-1],       # diagonal
        z[..., 1:, :-1] - z[..., :-1, 1:],       # anti-diagonal
    )
    return sum(d.flatten(2).norm(dim=2).mean(1) for d in diffs)
