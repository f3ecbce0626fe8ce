"""Token experiments on plain ViTs, built from the model's own modules (no copied forward code).

A variant is a string; `TokenVariant(net, variant)` is a module returning logits:
    intact                      the model as it is
    cls_isolated_after:L        blocks [0, L) on all tokens, then only the prefix tokens go on (paper: "TEAR")
    cls_apart_until:L           blocks [0, L) on the prefix tokens and on the patches separately, then joint
    pool:cls | pool:mean_patches | pool:mean_all | pool:patch:I | pool:random_patch
                                the head reads this pooling of the final tokens instead of the CLS token
    pos:zero | pos:redraw       positional embedding zeroed, or re-drawn from N(0, 0.02^2)
    shuffle:B                   the image cut into B x B pixel blocks, shuffled (one permutation per batch)
Random draws (random patch, re-drawn embedding, shuffles) come from a generator seeded with `seed`.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from sweep.core.errors import SweepError

VARIANT_PATTERNS = (r"intact", r"cls_isolated_after:\d+", r"cls_apart_until:\d+",
                    r"pool:(cls|mean_patches|mean_all|random_patch|patch:\d+)", r"pos:(zero|redraw)", r"shuffle:\d+")


def check_plain_vit(net: nn.Module, name: str = "model") -> None:
    needed = ("patch_embed", "_pos_embed", "blocks", "norm", "forward_head", "num_prefix_tokens", "pos_embed")
    missing = [a for a in needed if not hasattr(net, a)]
    if missing or getattr(net, "global_pool", "token") != "token" or getattr(net, "attn_pool", None) is not None:
        raise SweepError(f"token surgery needs a plain ViT with a CLS-token head (timm VisionTransformer or "
                         f"DeiT); {name} is not one ({type(net).__name__})")


def check_variant(variant: str) -> str:
    if not any(re.fullmatch(p, variant) for p in VARIANT_PATTERNS):
        raise SweepError(f"unknown token variant {variant!r}; allowed forms: intact, cls_isolated_after:L, "
                         "cls_apart_until:L, pool:cls|mean_patches|mean_all|random_patch|patch:I, "
                         "pos:zero|redraw, shuffle:B")
    return variant


def embed(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Image -> token sequence entering the first block, through the model's own modules."""
    return net.norm_pre(net.patch_drop(net._pos_embed(net.patch_embed(x))))


def head(net: nn.Module, prefix_tokens: torch.Tensor) -> torch.Tensor:
    """Logits from final prefix tokens (B, p, D) via the model's own head (CLS, or CLS + distillation)."""
    return net.forward_head(prefix_tokens)


def shuffle_blocks(x: torch.Tensor, block: int, generator: torch.Generator) -> torch.Tensor:
    """Cut (B, C, H, W) into block x block tiles and reorder them with one random permutation."""
    b, c, h, w = x.shape
    if h % block or w % block:
        raise SweepError(f"block size {block} does not divide the {h}x{w} input")
    gh, gw = h // block, w // block
    tiles = x.reshape(b, c, gh, block, gw, block).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c, block, block)
    perm = torch.randperm(gh * gw, generator=generator).to(x.device)
    tiles = tiles[:, perm]
    return tiles.reshape(b, gh, gw, c, block, block).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


class TokenVariant(nn.Module):
    """A plain ViT under one token experiment; see the module docstring for the variants."""

    def __init__(self, net: nn.Module, variant: str, seed: int = 0):
        super().__init__()
        check_plain_vit(net)
        self.net, self.variant = net, check_variant(variant)
        self.generator = torch.Generator().manual_seed(seed)
        self.depth, self.prefix = len(net.blocks), net.num_prefix_tokens
        kind, _, arg = variant.partition(":")
        if kind in ("cls_isolated_after", "cls_apart_until") and not 0 <= int(arg) <= self.depth:
            raise SweepError(f"{variant}: L must be in 0..{self.depth}")
        self.redrawn = None
        if variant == "pos:redraw":
            pos = net.pos_embed
            self.redrawn = (torch.randn(pos.shape, generator=self.generator) * 0.02).to(pos)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kind, _, arg = self.variant.partition(":")
        net = self.net
        if kind == "intact":
            return net(x)
        if kind == "pos":
            new = torch.zeros_like(net.pos_embed) if arg == "zero" else self.redrawn
            return torch.func.functional_call(net, {"pos_embed": new}, (x,), strict=False)
        if kind == "shuffle":
            return net(shuffle_blocks(x, int(arg), self.generator))
        if kind == "pool":
            tokens = net.forward_features(x)
            patches = tokens[:, self.prefix:]
            if arg == "cls":
                pooled = tokens[:, 0]
            elif arg == "mean_patches":
                pooled = patches.mean(1)
            elif arg == "mean_all":
                pooled = tokens.mean(1)
            else:
                i = (int(torch.randint(patches.shape[1], (1,), generator=self.generator))
                     if arg == "random_patch" else int(arg.split(":")[1]))
                pooled = patches[:, i]
            return head(net, pooled[:, None].expand(-1, self.prefix, -1))
        L = int(arg)
        tokens = embed(net, x)
        if kind == "cls_isolated_after":
            for blk in net.blocks[:L]:
                tokens = blk(tokens)
            tokens = tokens[:, :self.prefix]
            for blk in net.blocks[L:]:
                tokens = blk(tokens)
        else:  # cls_apart_until
            pre, patches = tokens[:, :self.prefix], tokens[:, self.prefix:]
            for blk in net.blocks[:L]:
                pre, patches = blk(pre), blk(patches)
            tokens = torch.cat([pre, patches], dim=1)
            for blk in net.blocks[L:]:
                tokens = blk(tokens)
        return head(net, net.norm(tokens)[:, :self.prefix])


def paper_variants(depth: int) -> list[str]:
    """The paper's token experiments for a model of `depth` blocks."""
    return (["intact"] + [f"cls_isolated_after:{L}" for L in range(depth + 1)]
            + [f"cls_apart_until:{L}" for L in range(depth + 1)]
            + ["pool:cls", "pool:mean_patches", "pool:mean_all", "pool:patch:120", "pool:random_patch",
               "pos:zero", "pos:redraw", "shuffle:32"])
