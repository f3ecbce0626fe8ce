"""Feature taps: read a block's features during a forward pass, and stop the pass right there.

A tap hooks the module a `Site` names, turns what it captures into a (batch, tokens, width) or
(batch, width, H, W) tensor, and reduces it to one number per image and feature: the mean over
patch tokens with prefix tokens excluded, or over the spatial grid. Once every requested site has
been captured the forward pass is aborted, so blocks after the hooked one are never computed.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sweep.core.errors import SweepError
from sweep.models.anatomy import Block, Site


class _Captured(Exception):
    """Raised from a hook to abort the forward pass once every tap has fired."""


def _fused_qkv(t: torch.Tensor, part: str) -> torch.Tensor:
    return t.chunk(3, dim=-1)[("q", "k", "v").index(part)]


def _from_attention_input(mha: nn.MultiheadAttention, x: torch.Tensor, part: str, seq_first: bool):
    """q, k, v or the merged-heads attention output, from a MultiheadAttention's own weights.

    torch's MultiheadAttention projects and attends inside one fused call, so there is no module
    to hook for q/k/v; recomputing them from the captured input keeps the graph differentiable.
    """
    if seq_first:
        x = x.transpose(0, 1)
    q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
    if part != "attn_out":
        return {"q": q, "k": k, "v": v}[part]
    n, length, dim = q.shape
    heads = mha.num_heads

    def split(t):
        return t.reshape(n, length, heads, dim // heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(n, length, dim)


def to_feature_layout(raw: torch.Tensor, site: Site, block: Block, module: nn.Module) -> torch.Tensor:
    """Captured tensor -> (B, tokens..., C) for token layouts, (B, C, H, W) for channels."""
    if site.hook == "attn_input":
        return _from_attention_input(module, raw, site.part, block.layout == "seq_first")
    if site.part in ("q", "k", "v"):
        raw = _fused_qkv(raw, site.part)
    if block.layout == "seq_first":
        raw = raw.transpose(0, 1)
    return raw


def token_features(t: torch.Tensor, block: Block) -> torch.Tensor:
    """(B, patch tokens, C) with the prefix tokens dropped; spatial grids are flattened."""
    t = t.reshape(t.shape[0], -1, t.shape[-1])
    return t[:, block.prefix_tokens:]


def reduce_features(t: torch.Tensor, block: Block) -> torch.Tensor:
    """One number per image and feature: mean over patch tokens or over the spatial grid."""
    if block.layout == "channels":
        return t.mean(dim=(2, 3))
    return token_features(t, block).mean(dim=1)


def read_sites(net: nn.Module, requests: Sequence[tuple[Block, str]], x: torch.Tensor,
               reduce: bool = True, stop: bool = True) -> list[torch.Tensor]:
    """Run `net` on `x`; return, per (block, site) request, its features for each image.

    With reduce=True each result is (B, width); otherwise the unreduced feature tensor.
    With stop=True the forward pass ends as soon as the last requested site has fired.
    """
    modules = dict(net.named_modules())
    wanted: dict[tuple[str, str], list[tuple[int, Site, Block]]] = defaultdict(list)
    for i, (block, site_name) in enumerate(requests):
        site = block.site(site_name)
        if site.module not in modules:
            raise SweepError(f"module {site.module!r} of block {block.name} is not in this network")
        wanted[(site.module, site.hook)].append((i, site, block))  # one module's input and output: two hooks
    results: list[torch.Tensor | None] = [None] * len(requests)
    calls: dict[tuple[str, str], int] = defaultdict(int)
    remaining = [len(requests)]

    def make_hook(key: tuple[str, str]):
        def hook(mod, args, kwargs_or_out=None, out=None):
            site0 = wanted[key][0][1]
            if site0.hook == "output":
                raw = kwargs_or_out
                raw = raw[0] if isinstance(raw, (tuple, list)) else raw
            elif site0.hook == "attn_input":
                raw = args[0] if args else kwargs_or_out["query"]
            else:
                raw = args[0]
            call = calls[key]
            calls[key] += 1
            for i, site, block in wanted[key]:
                if site.call == call and results[i] is None:
                    t = to_feature_layout(raw, site, block, mod)
                    results[i] = reduce_features(t, block) if reduce else t
                    remaining[0] -= 1
            if stop and remaining[0] == 0:
                raise _Captured
        return hook

    handles = []
    try:
        for (path, kind) in wanted:
            mod = modules[path]
            if kind == "output":
                handles.append(mod.register_forward_hook(make_hook((path, kind))))
            elif kind == "attn_input":
                handles.append(mod.register_forward_pre_hook(make_hook((path, kind)), with_kwargs=True))
            else:
                handles.append(mod.register_forward_pre_hook(make_hook((path, kind))))
        try:
            net(x)
        except _Captured:
            pass
    finally:
        for h in handles:
            h.remove()
    missing = [requests[i][0].name for i, r in enumerate(results) if r is None]
    if missing:
        raise SweepError(f"tap never fired for block(s) {', '.join(missing)}")
    return results  # type: ignore[return-value]


def read_features(net: nn.Module, block: Block, site: str, x: torch.Tensor) -> torch.Tensor:
    """(B, width) features of one block and site; the forward stops after that block."""
    return read_sites(net, [(block, site)], x)[0]
