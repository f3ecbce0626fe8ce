"""One step's objective as a module: augment, prepare, read the features, TV, loss.

The same module runs eagerly with the hook tap or, with `Engine(compile="step")`, compiled whole
around a network cut at the tap (`sweep.models.truncate`): one graph per (model, layer, site,
recipe constants), since everything that changes from step to step (the image, the step's draws,
which feature each copy reads) comes in as tensors. Compiled steps are kept on the network, so a
worker compiles once per layer, not once per batch.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sweep.method.augment import augment_with
from sweep.method.objectives import feature_loss, total_variation


def normalize(z: torch.Tensor, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> the network's input: bilinear resize to `size` if needed, then normalize."""
    if z.shape[-1] != size or z.shape[-2] != size:
        z = F.interpolate(z, size=(size, size), mode="bilinear", align_corners=False)
    return (z - mean) / std


class StepObjective(nn.Module):
    """(x, draws, which) -> (loss per feature, mean activation per feature over its copies).

    features_of maps a prepared batch to the site's features: the hook tap (eager) or a cut
    network (compiled); `pool` (when given) turns its unreduced tensor into (B, width) as the
    objective says, and `readout` into one number per copy for the feature `which` names
    (sweep/method/objective.py); `sign` -1 minimizes it. `diversity` (when given) adds each image's
    penalty from the unreduced tensor (objective_diversity.py), `anchor` (when given) each image's
    penalty for leaving a photo's pooled features (accentuate.py). The network runs under `autocast`
    (bf16 or nothing); the image, TV and the loss stay fp32. The loss and activation are per image.
    """

    def __init__(self, features_of: Callable[[torch.Tensor], torch.Tensor], size: int, mean, std, copies: int,
                 reference_scale: bool, tv_coef: float, autocast: Callable[[], object], device: torch.device,
                 readout: nn.Module, sign: float = 1.0, pool: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 diversity: nn.Module | None = None, anchor: nn.Module | None = None):
        super().__init__()
        self.features_of = features_of  # a cut network is a submodule: its weights are the network's own
        self.readout, self.sign, self.pool, self.diversity, self.anchor = readout, sign, pool, diversity, anchor
        self.size, self.copies, self.reference_scale, self.tv_coef = size, copies, reference_scale, tv_coef
        self.autocast = autocast
        for name, value in (("mean", mean), ("std", std)):
            self.register_buffer(name, torch.tensor(value, dtype=torch.float32, device=device).view(1, 3, 1, 1),
                                 persistent=False)

    def forward(self, x, mu, sigma, offset, shift, which):
        z = augment_with(x, mu, sigma, offset, shift)
        with self.autocast():
            raw = self.features_of(normalize(z, self.size, self.mean, self.std))
        pooled = raw if self.pool is None else self.pool(raw)
        acts = self.readout(pooled, which)
        tv = total_variation(z).view(-1, self.copies).mean(1)
        loss = feature_loss(self.sign * acts, self.copies, self.reference_scale) + self.tv_coef * tv
        if self.diversity is not None:
            loss = loss + self.diversity(raw)
        if self.anchor is not None:
            loss = loss + self.anchor(pooled)
        return loss, acts.view(-1, self.copies).mean(1)


def compiled_step(net: nn.Module, key: tuple, make: Callable[[], StepObjective], mode: str | None) -> Callable:
    """The compiled objective for `key` (layer, site, recipe constants, precision, device), built
    and compiled on first use and kept on `net` for the next batches of the same layer."""
    cache = net.__dict__.setdefault("_sweep_steps", {})
    if key not in cache:
        cache[key] = torch.compile(make(), mode=mode)
    return cache[key]
