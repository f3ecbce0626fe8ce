"""The baseline of the speed benchmarks: the paper's recipe written plainly, one feature at a time.

This is how the paper's own code runs (and how one would first write it): one image, its 8
augmented copies as the batch, the whole network run forward with a hook on the feature's module,
fp32, eager, the augmentation drawn step by step. It shares no code with the engine
(`sweep.method.render`) beyond the model's anatomy (which module to hook, prefix tokens, mean/std), so
tests/test_benchmarks.py can check that both give the same image, which makes the speed
comparison one of equals.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sweep.method.recipe import Recipe
from sweep.method.tuned import resolve_recipe
from sweep.models.anatomy import Anatomy, Block


def tv_loss(z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the 4-direction total variation (per-channel L2 norms, channel mean)."""
    total = 0
    for a, b in ((z[..., :, 1:], z[..., :, :-1]), (z[..., 1:, :], z[..., :-1, :]),
                 (z[..., 1:, 1:], z[..., :-1, :-1]), (z[..., 1:, :-1], z[..., :-1, 1:])):
        total = total + (a - b).flatten(2).norm(dim=2).mean(1)
    return total.mean()


def visualize_one(net: nn.Module, anatomy: Anatomy, block: Block, feature: int, recipe: Recipe,
                  seed: int, device: torch.device,
                  progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, list[float]]:
    """Optimize one image for `feature` of the MLP hidden layer of `block`; returns (image, losses).

    Token-layout models only (ViTs, DeiT, Swin...), which is what the benchmarks time.
    """
    recipe, _source = resolve_recipe(recipe, anatomy.entry, anatomy.preprocess.input_size)
    site = block.site("mlp")
    assert block.layout == "tokens" and site.hook == "output", "the baseline handles token-layout MLP sites"
    module = net.get_submodule(site.module)
    size, n = recipe.image_size, recipe.copies
    mean = torch.tensor(anatomy.preprocess.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(anatomy.preprocess.std, device=device).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((1, 3, size, size), generator=gen).to(device).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=recipe.lr, betas=(recipe.beta1, recipe.beta2), eps=recipe.eps)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.steps, eta_min=0.0)
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda mod, args, out: captured.append(out))
    losses = []
    try:
        for i in range(recipe.steps + 1):
            opt.zero_grad()
            mu = (torch.rand((n, 3), generator=gen) - 0.5) * 2 * recipe.color_mean
            sigma = torch.exp((torch.rand((n, 3), generator=gen) - 0.5) * 2 * recipe.color_std)
            noise = torch.randn((n, 3), generator=gen)
            dy, dx = torch.randint(-recipe.jitter, recipe.jitter + 1, (2,), generator=gen).tolist()
            r = (recipe.steps - 2 - i) % recipe.steps  # the reference's wrapping noise counter
            z = x.repeat(n, 1, 1, 1)
            z = (z - mu.to(device)[:, :, None, None]) / sigma.to(device)[:, :, None, None]
            z = z + (noise * (recipe.offset_std * r / recipe.steps)).to(device)[:, :, None, None]
            z = torch.roll(z, shifts=(dy, dx), dims=(-2, -1))
            inp = z
            if size != anatomy.preprocess.input_size:
                s = anatomy.preprocess.input_size
                inp = F.interpolate(z, size=(s, s), mode="bilinear", align_corners=False)
            captured.clear()
            net((inp - mean) / std)                       # the whole network, every block
            hidden = captured[site.call]
            hidden = hidden.reshape(n, -1, hidden.shape[-1])[:, block.prefix_tokens:]
            act = hidden[..., feature].mean(1)
            scale = n * n if recipe.reference_scale else n
            loss = -act.sum() / scale + recipe.tv_coef * tv_loss(z)
            loss.backward()
            opt.step()
            sched.step()
            x.data = x.data.clamp(0, 1)
            if i % recipe.log_every == 0 or i == recipe.steps:
                losses.append(loss.item())
            if progress is not None:
                progress(1)
    finally:
        handle.remove()
    return x.detach()[0], losses
