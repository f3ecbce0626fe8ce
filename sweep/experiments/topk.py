"""Streaming top-k per unit: bounded memory, mergeable, deterministic under ties.

Each unit (a (layer, feature) pair flattened to one index) keeps its k largest activations and the
indices of the images that produced them. Ties are broken by the smaller image index, so scanning
the same images in any order, split over any number of workers and merged, gives the same answer.
"""

from __future__ import annotations

import torch


class TopK:
    """Top-k activations of `units` units; state is (units, k) values and image indices."""

    def __init__(self, units: int, k: int):
        self.k = k
        self.values = torch.full((units, k), float("-inf"))
        self.ids = torch.full((units, k), -1, dtype=torch.long)

    def _keep(self, values: torch.Tensor, ids: torch.Tensor) -> None:
        # Order by image index first, then (stable) by value descending: equal values keep index order.
        by_id = torch.sort(torch.where(ids < 0, torch.iinfo(torch.long).max, ids), dim=1, stable=True).indices
        values, ids = values.gather(1, by_id), ids.gather(1, by_id)
        order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, : self.k]
        self.values, self.ids = values.gather(1, order), ids.gather(1, order)

    def update(self, activations: torch.Tensor, image_ids: torch.Tensor) -> "TopK":
        """Add a batch: activations (B, units), image_ids (B,) integer indices."""
        acts = activations.detach().float().cpu().T
        ids = image_ids.long().cpu()[None, :].expand(acts.shape[0], -1)
        self._keep(torch.cat([self.values, acts], 1), torch.cat([self.ids, ids], 1))
        return self

    def offer(self, values: torch.Tensor, ids: torch.Tensor) -> "TopK":
        """Add candidates given per unit: values (units, m) and their ids (units, m) (e.g. each unit's
        own best m of a larger set, taken with torch.topk: then ties at its m-th place are torch's)."""
        self._keep(torch.cat([self.values, values.detach().float().cpu()], 1), torch.cat([self.ids, ids.long().cpu()], 1))
        return self

    def merge(self, other: "TopK") -> "TopK":
        """Combine two partial scans of disjoint images (e.g. from two workers)."""
        out = TopK(self.values.shape[0], self.k)
        out._keep(torch.cat([self.values, other.values], 1), torch.cat([self.ids, other.ids], 1))
        return out
