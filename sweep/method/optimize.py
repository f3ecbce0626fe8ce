"""The optimization loop: Adam, cosine schedule, clamp to [0, 1] after every step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from sweep.method.recipe import Recipe

#: loss_fn(images, step, features) -> (loss (f,), mean activation (f,)) for the features in the
#: slice `features` of the batch, whose images are `images` (f, 3, S, S).
LossFn = Callable[[torch.Tensor, int, slice], tuple[torch.Tensor, torch.Tensor]]


def feature_chunks(n: int, per_pass: int | None) -> list[slice]:
    """Slices of at most `per_pass` features covering n features (all at once when None)."""
    size = min(per_pass or n, n)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


@dataclass
class Trace:
    """What the loop recorded, every `log_every` iterations and at the last one."""

    steps: list[int]
    loss: torch.Tensor        # (K, F)
    activation: torch.Tensor  # (K, F), mean over the augmented copies


def clamp_to_range(x: torch.Tensor) -> None:
    """The paper's projection: pixels back into [0, 1] after each step."""
    x.clamp_(0.0, 1.0)


def optimize(x0: torch.Tensor, loss_fn: LossFn, recipe: Recipe,
             progress: Callable[[int], None] | None = None,
             features_per_pass: int | None = None, fused_adam: bool = False,
             project: Callable[[torch.Tensor], None] = clamp_to_range) -> tuple[torch.Tensor, Trace]:
    """Optimize a batch of images; features are independent because the loss is a sum over them.

    features_per_pass splits each step's forward/backward into chunks of features whose
    gradients accumulate before the one Adam step; the result is the same, only memory and
    cache use change (small chunks are faster on CPUs). None: all features in one pass.
    fused_adam: one fused kernel per Adam update instead of torch's foreach kernels.
    The loop never reads values back to the host, so a GPU is not stalled between steps.
    x0 is whatever the parametrization optimizes (pixels by default; loss_fn turns it into images)
    and `project` its in-place step back into range (the paper's clamp for pixels).
    """
    chunks = feature_chunks(x0.shape[0], features_per_pass)
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=recipe.lr, betas=(recipe.beta1, recipe.beta2), eps=recipe.eps,
                           **({"fused": True} if fused_adam else {"foreach": True}))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.steps, eta_min=0.0)
    steps, losses, acts = [], [], []
    last = recipe.iterations - 1
    for i in range(recipe.iterations):
        opt.zero_grad(set_to_none=True)
        parts = []
        for sl in chunks:
            part_loss, part_act = loss_fn(x[sl], i, sl)
            part_loss.sum().backward()
            parts.append((part_loss.detach(), part_act.detach()))
        loss = torch.cat([p[0] for p in parts])
        act = torch.cat([p[1] for p in parts])
        opt.step()
        sched.step()
        with torch.no_grad():
            project(x)
        if i % recipe.log_every == 0 or i == last:
            steps.append(i)
            losses.append(loss)
            acts.append(act)
        if progress is not None:
            progress(1)
    trace = Trace(steps, torch.stack(losses).cpu(), torch.stack(acts).cpu())
    return x.detach(), trace
