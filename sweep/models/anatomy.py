"""Where to read features from each model: its blocks, their sites, widths and prefix tokens.

Each family has a small rule naming, per block, the module to hook and how many prefix tokens
(CLS, distillation) lead its token sequence; a model outside the zoo's families gets the `auto` rule,
which reads the same off its structure (MLPs, attention projections, convolutional blocks). Widths
and token counts are then measured by one forward pass (on the meta device; a user factory's network
on the CPU), so nothing about a model's shape is typed by hand, and an inferred site the forward
never reaches is left out.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from sweep.core.errors import SweepError, choices, one_line
from sweep.core.validation import MAX_IMAGE_SIZE
from sweep.models.build import Preprocess, device_of, meta_module, preprocess_config
from sweep.models.zoo import ModelEntry, get_entry

log = logging.getLogger(__name__)

#: Sites of the attention path, offered for plain ViTs and CLIP ViTs.
ATTENTION_SITES = ("q", "k", "v", "attn_out")
ALL_SITES = ("mlp", "mlp_pre", *ATTENTION_SITES, "channel", "output")
#: Class names of activation modules (torch's, timm's, open_clip's QuickGELU): the auto rule's `mlp_pre`
#: site is the input of the MLP's one child of such a class.
_ACTIVATION_NAME = re.compile(r"(quick)?gelu(tanh)?|relu6?|silu|swish|mish|hardswish|tanh|sigmoid", re.IGNORECASE)


@dataclass(frozen=True)
class Site:
    """How to capture one tensor during the forward pass.

    hook: "output" of `module`, its positional "input", or "attn_input": the query input of a
    torch MultiheadAttention, from which q/k/v/attn_out are computed with the module's own weights.
    part: "q", "k" or "v" (a third of a fused qkv output) or "attn_out"; None for the whole tensor.
    call: which call of `module` within one forward (CoaT shares one MLP across three scales).
    """

    module: str
    hook: str = "output"
    part: str | None = None
    call: int = 0


@dataclass(frozen=True)
class Block:
    """One block of a model, as the user addresses it with `--layer`."""

    index: int
    name: str
    prefix_tokens: int
    layout: str  # "tokens" (B, ..., C), "seq_first" (N, B, C) or "channels" (B, C, H, W)
    sites: dict[str, Site] = field(hash=False)
    widths: dict[str, int] = field(default_factory=dict, hash=False)
    tokens: int | None = None  # token count including prefix tokens, at the model's input size

    def site(self, name: str) -> Site:
        if name not in self.sites:
            raise SweepError(f"site {name!r} is not available at block {self.name}; "
                             f"allowed: {choices(self.sites)}")
        return self.sites[name]

    def width(self, site: str) -> int:
        self.site(site)
        return self.widths[site]


@dataclass(frozen=True)
class Anatomy:
    """Everything the engine needs to know about a model's structure and input."""

    entry: ModelEntry
    preprocess: Preprocess
    blocks: tuple[Block, ...]
    #: Forward FLOPs of one image up to each block's default site, counted in the same meta-device
    #: forward that measures the shapes (torch's FlopCounterMode); the plan's cost estimate uses them.
    flops: tuple[float, ...] = ()

    @property
    def default_site(self) -> str:
        """mlp where the first block has one (a conv MLP, ConvNeXt's, too), else channel; explicit
        taps read their module's `output`."""
        sites = self.blocks[0].sites
        return next((s for s in ("mlp", "channel", "output") if s in sites), next(iter(sites)))

    def block(self, layer: int | str) -> Block:
        """Resolve `--layer`: a block index (negative counts from the end) or a block name."""
        n = len(self.blocks)
        if isinstance(layer, str) and re.fullmatch(r"-?\d+", layer.strip()):
            layer = int(layer)
        if isinstance(layer, int):
            if -n <= layer < n:
                return self.blocks[layer]
            raise SweepError(f"layer {layer} out of range for {self.entry.key}: allowed 0..{n - 1} "
                             f"(or a block name: {self.blocks[0].name} .. {self.blocks[-1].name})")
        for b in self.blocks:
            if b.name == layer:
                return b
        raise SweepError(f"unknown layer {layer!r} for {self.entry.key}; allowed 0..{n - 1} or "
                         f"{choices([b.name for b in self.blocks], limit=60)}")

    def check_features(self, block: Block, site: str, features) -> list[int]:
        width = block.width(site)
        bad = [f for f in features if not 0 <= int(f) < width]
        if bad:
            raise SweepError(f"feature {bad[0]} out of range for {self.entry.key} layer {block.index} "
                             f"({block.name}) site {site}: allowed 0..{width - 1}")
        return [int(f) for f in features]


# --- family rules: (name, prefix tokens, layout, sites) per block -----------------------------------

def _attention_sites_timm(path: str) -> dict[str, Site]:
    sites = {p: Site(f"{path}.attn.qkv", part=p) for p in ("q", "k", "v")}
    sites["attn_out"] = Site(f"{path}.attn.proj", hook="input")
    return sites


def _plain_vit(net: nn.Module, entry: ModelEntry):
    for i in range(len(net.blocks)):
        path = f"blocks.{i}"
        sites = {"mlp": Site(f"{path}.mlp.act"), **_attention_sites_timm(path)}
        yield path, net.num_prefix_tokens, "tokens", sites


def _mlp_paths(net: nn.Module):
    """Paths of every timm MLP (a module with fc1 and act), in execution order."""
    return [n for n, m in net.named_modules() if hasattr(m, "fc1") and hasattr(m, "act")]


def _convit(net: nn.Module, entry: ModelEntry):
    # ConViT appends its CLS token only after the gated-positional (local) blocks.
    for i in range(len(net.blocks)):
        prefix = 1 if i >= net.local_up_to_layer else 0
        yield f"blocks.{i}", prefix, "tokens", {"mlp": Site(f"blocks.{i}.mlp.act")}


def _hierarchical(prefix_of):
    def rule(net: nn.Module, entry: ModelEntry):
        for path in _mlp_paths(net):
            yield path.rsplit(".mlp", 1)[0], prefix_of(net), "tokens", {"mlp": Site(f"{path}.act")}
    return rule


def _coat(net: nn.Module, entry: ModelEntry):
    # Parallel blocks run one shared MLP on three scales in turn: one layer per (block, scale).
    for path in _mlp_paths(net):
        block = path.rsplit(".mlp", 1)[0]
        if block.startswith("parallel_blocks"):
            for call, scale in enumerate((2, 3, 4)):
                yield f"{block}@{scale}", 1, "tokens", {"mlp": Site(f"{path}.act", call=call)}
        else:
            yield block, 1, "tokens", {"mlp": Site(f"{path}.act")}


def _clip_vit(net: nn.Module, entry: ModelEntry):
    layout = "tokens" if getattr(net.transformer, "batch_first", True) else "seq_first"
    for i in range(len(net.transformer.resblocks)):
        path = f"transformer.resblocks.{i}"
        sites = {"mlp": Site(f"{path}.mlp.gelu")}
        sites.update({p: Site(f"{path}.attn", hook="attn_input", part=p) for p in ATTENTION_SITES})
        yield path, 1, layout, sites


_CNN_BLOCKS = {
    "resnet50": r"layer\d+\.\d+", "resnet152": r"layer\d+\.\d+",
    "densenet121": r"features\.(denseblock|transition)\d+", "mobilenet_v2": r"features\.\d+",
}


def _cnn(net: nn.Module, entry: ModelEntry):
    pattern = _CNN_BLOCKS.get(entry.arch, r"layer\d+\.\d+")
    for name, _ in net.named_modules():
        if re.fullmatch(pattern, name):
            yield name, 0, "channels", {"channel": Site(name)}


# --- models outside the zoo's families: taps inferred from the structure ---------------------------

#: Blocks of a convolutional network, tried in order; the first pattern with two or more matches wins.
CNN_BLOCK_PATTERNS = (r"layer\d+\.\d+", r"stages\.\d+\.blocks\.\d+", r"blocks\.\d+\.\d+", r"features\.\d+",
                      r"stages\.\d+", r"layers\.\d+", r"blocks\.\d+")


def prefix_tokens(net: nn.Module) -> int:
    """Tokens before the patch tokens (CLS, distillation, registers), from the model's own attributes."""
    if isinstance(getattr(net, "num_prefix_tokens", None), int):
        return net.num_prefix_tokens
    return sum(int(getattr(net, a).shape[1]) for a in ("cls_token", "dist_token", "reg_token", "class_token")
               if isinstance(getattr(net, a, None), torch.Tensor) and getattr(net, a).dim() >= 2)


def _hidden_linear(mlp: nn.Module) -> str | None:
    """The MLP's output projection (its last Linear or 1x1 conv): its input is the hidden activation,
    after the nonlinearity (and a gate, for SwiGLU)."""
    last = None
    for name, m in mlp.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)) and name:
            last = name
    return last


def _attention_sites(block_path: str, block: nn.Module) -> dict[str, Site]:
    """q/k/v/attn_out where the block's attention exposes them: a fused qkv Linear, separate
    q/k/v projections, or a torch MultiheadAttention (read from its query input)."""
    for attr in ("attn", "self_attention", "self_attn", "attention"):
        attn = getattr(block, attr, None)
        if attn is None:
            continue
        path = f"{block_path}.{attr}"
        if isinstance(attn, nn.MultiheadAttention) and attn._qkv_same_embed_dim:
            return {p: Site(path, hook="attn_input", part=p) for p in ATTENTION_SITES}
        out = next((o for o in ("proj", "out_proj", "o_proj") if isinstance(getattr(attn, o, None), nn.Linear)), None)
        if isinstance(getattr(attn, "qkv", None), nn.Linear):
            sites = {p: Site(f"{path}.qkv", part=p) for p in ("q", "k", "v")}
        elif all(isinstance(getattr(attn, f"{p}_proj", None), nn.Linear) for p in ("q", "k", "v")):
            sites = {p: Site(f"{path}.{p}_proj") for p in ("q", "k", "v")}
        else:
            return {}
        if out is not None:
            sites["attn_out"] = Site(f"{path}.{out}", hook="input")
        return sites
    return {}


def _auto(net: nn.Module, entry: ModelEntry):
    """Blocks and sites read off the structure: every MLP (a child named mlp) is a block with an
    `mlp` site (its hidden activation) and, where the attention exposes them, q/k/v/attn_out; with
    no MLP, a convolutional network's blocks (CNN_BLOCK_PATTERNS) with a `channel` site."""
    if hasattr(getattr(net, "transformer", None), "resblocks"):  # an open_clip ViT tower
        yield from _clip_vit(net, entry)
        return
    modules = dict(net.named_modules())
    prefix = prefix_tokens(net)
    found = False
    for path, m in modules.items():
        block_path, _, leaf = path.rpartition(".")
        if leaf != "mlp" or not block_path:
            continue
        hidden = _hidden_linear(m)
        if hidden is None:
            continue
        found = True
        conv = isinstance(modules[f"{path}.{hidden}"], nn.Conv2d)
        sites = {"mlp": Site(f"{path}.{hidden}", hook="input")}
        if not conv:
            sites.update(_attention_sites(block_path, modules[block_path]))
        yield block_path, 0 if conv else prefix, "channels" if conv else "tokens", sites
    if found:
        return
    for pattern in CNN_BLOCK_PATTERNS:
        names = [n for n in modules if re.fullmatch(pattern, n)]
        if len(names) >= 2:
            for name in names:
                yield name, 0, "channels", {"channel": Site(name)}
            return


FAMILY_RULES = {
    "vit": _plain_vit, "vit_ssl": _plain_vit, "deit": _plain_vit, "clip": _clip_vit, "convit": _convit, "coat": _coat,
    "pit": _hierarchical(lambda net: net.cls_token.shape[1]),
    "swin": _hierarchical(lambda net: 0), "twins": _hierarchical(lambda net: 0),
    "clip_resnet": _cnn, "cnn": _cnn, "auto": _auto,
}


def with_pre_activation(sites: dict[str, Site], modules: dict[str, nn.Module]) -> dict[str, Site]:
    """`sites` plus `mlp_pre`, the MLP's hidden unit before its nonlinearity, where one module is it.

    An `mlp` site read from an activation module's output gets the same module's input; one read
    from the output projection's input (the auto rule) gets the input of the MLP's only activation
    child. A gated MLP (SwiGLU: a child named like *gate* or *_g) has no single pre-activation per
    unit, so it gets none. Maximizing `mlp_pre` cannot be won by switching the unit off, which
    maximizing the post-GELU mean can (issue 28's loophole: GELU of a very negative value is ~0).
    """
    mlp = sites.get("mlp")
    if mlp is None or "mlp_pre" in sites:
        return sites
    if mlp.hook == "output":  # the family rules name the activation module itself
        act = mlp.module
    else:
        parent = mlp.module.rpartition(".")[0]
        children = {n: m for n, m in modules.items() if n.rpartition(".")[0] == parent}
        if any("gate" in n.rpartition(".")[2] or n.endswith("_g") for n in children):
            return sites
        acts = [n for n, m in children.items() if _ACTIVATION_NAME.fullmatch(type(m).__name__)]
        if len(acts) != 1:
            return sites
        act = acts[0]
    return {**sites, "mlp_pre": Site(act, hook="input", call=mlp.call)}


def _measure(net: nn.Module, blocks: list[Block], entry: ModelEntry, size: int) -> tuple[dict, dict]:
    """Shapes of every hooked tensor and the forward FLOPs counted when it was reached, from one
    forward on the meta device: {(module path, call): shape}, {(module path, call): flops}. A forward
    that fails (arguments the constructor took but the network cannot run with, such as an input
    smaller than its patch) is one line."""
    from torch.utils.flop_counter import FlopCounterMode

    modules = dict(net.named_modules())
    shapes: dict[tuple[str, int], tuple[int, ...]] = {}
    flops: dict[tuple[str, int], float] = {}
    counter = FlopCounterMode(display=False)
    handles = []

    def record(path):
        def hook(mod, args, out=None):
            t = args[0] if out is None else (out[0] if isinstance(out, (tuple, list)) else out)
            calls = sum(1 for (p, _) in shapes if p == path)
            shapes[(path, calls)] = tuple(t.shape)
            flops[(path, calls)] = float(counter.get_total_flops())
        return hook

    paths: dict[str, str] = {}
    for s in (s for b in blocks for s in b.sites.values()):
        paths.setdefault(s.module, s.hook)  # mlp_pre shares mlp's module: the same shape either side
    try:
        for path, kind in paths.items():
            if kind == "output":
                handles.append(modules[path].register_forward_hook(record(path)))
            else:
                handles.append(modules[path].register_forward_pre_hook(record(path)))
        net.requires_grad_(False)  # the counter's module tracker trips over leaf inputs otherwise
        with counter, torch.no_grad():
            try:
                net(torch.zeros(1, 3, size, size, device=device_of(net)))
            except Exception as exc:  # noqa: BLE001 - whatever the network raises
                reason = one_line(f"{type(exc).__name__}: {exc}", 200)
                hint = "; change or drop the --model-arg" if entry.kwargs else ""
                raise SweepError(f"model {entry.key}: a forward pass of a {size} px image fails ({reason}){hint}") \
                    from None
    finally:
        for h in handles:
            h.remove()
    return shapes, flops


def _with_flops(anatomy: Anatomy, flops: dict) -> Anatomy:
    """The anatomy with each block's forward FLOPs at its default site (first call)."""
    site = anatomy.default_site
    per_block = []
    for b in anatomy.blocks:
        module = (b.sites.get(site) or next(iter(b.sites.values()))).module
        per_block.append(flops.get((module, 0), 0.0))
    return replace(anatomy, flops=tuple(per_block))


def _width(site: Site, shape: tuple[int, ...], layout: str) -> int:
    if layout == "channels":
        return shape[1]
    if site.part in ("q", "k", "v") and site.hook == "output":
        return shape[-1] // 3
    return shape[-1]


def _tokens(shape: tuple[int, ...], layout: str) -> int | None:
    if layout == "channels":
        return None
    if layout == "seq_first":
        return shape[0]
    return math.prod(shape[1:-1])


def _explicit_blocks(net: nn.Module, entry: ModelEntry, size: int) -> tuple[tuple[Block, ...], dict]:
    """One block per `--tap` module, each with one site, `output`: a (B, C, H, W) output is read per
    channel over the spatial grid, (B, N, C) or (B, C) over tokens (the model's prefix tokens
    excluded), (N, B, C) the same, sequence first."""
    modules = dict(net.named_modules())
    for path in entry.taps:
        if path not in modules:
            raise SweepError(f"tap {path!r}: no such module in {entry.key}; allowed: "
                             f"{choices(_close_modules(modules, path), limit=40)}")
    probe = [Block(i, path, 0, "tokens", {"output": Site(path)}) for i, path in enumerate(entry.taps)]
    shapes, flops = _measure(net, probe, entry, size)
    prefix = prefix_tokens(net)
    blocks = []
    for i, path in enumerate(entry.taps):
        shape = shapes.get((path, 0))
        if shape is None:
            raise SweepError(f"tap {path!r}: the module never runs in a forward pass of {entry.key}")
        if len(shape) == 4:
            layout, width = "channels", shape[1]
        elif len(shape) == 3 and shape[0] != 1 and shape[1] == 1:
            layout, width = "seq_first", shape[-1]
        elif len(shape) in (2, 3):
            layout, width = "tokens", shape[-1]
        else:
            raise SweepError(f"tap {path!r}: its output has shape {list(shape)} for one image; expected "
                             "(1, C, H, W), (1, tokens, C) or (1, C)")
        tokens = _tokens(shape, layout) if len(shape) == 3 else (None if len(shape) == 4 else 1)
        lead = prefix if tokens is not None and tokens > prefix else 0
        blocks.append(Block(i, path, lead, layout, {"output": Site(path)}, {"output": int(width)}, tokens))
    return tuple(blocks), flops


def _close_modules(modules: dict, path: str) -> list[str]:
    """Module paths worth suggesting for a mistyped tap: the closest names, else the shallow ones."""
    import difflib

    names = [n for n in modules if n]
    return difflib.get_close_matches(path, names, n=8, cutoff=0.5) or [n for n in names if n.count(".") <= 1]


def describe(entry: ModelEntry) -> Anatomy:
    """The anatomy of an entry, measured on a meta-device copy (fast, no weights needed)."""
    try:
        rule = FAMILY_RULES[entry.family]
    except KeyError:
        raise SweepError(f"no tap rule for family {entry.family!r}; allowed: {choices(FAMILY_RULES)}") from None
    net = meta_module(entry)
    pre = preprocess_config(entry, net)
    if not 1 <= pre.input_size <= MAX_IMAGE_SIZE:  # what `visualize` would refuse, refused here for every command
        hint = "; change or drop the --model-arg" if entry.kwargs else ""
        raise SweepError(f"model {entry.key}: input size {pre.input_size} px; allowed: 1 to {MAX_IMAGE_SIZE} px{hint}")
    if "default" in pre.origin:  # never silent about input settings nobody chose
        log.info("%s: input %d px, mean %s, std %s, %s, crop %.3g: %s", entry.key, pre.input_size,
                 list(pre.mean), list(pre.std), pre.interpolation, pre.crop_pct, pre.origin)
    if entry.taps:
        blocks, flops = _explicit_blocks(net, entry, pre.input_size)
        return _with_flops(Anatomy(entry, pre, blocks), flops)
    modules = dict(net.named_modules())
    raw = [Block(i, name, prefix, layout, with_pre_activation(sites, modules))
           for i, (name, prefix, layout, sites) in enumerate(rule(net, entry))]
    if not raw:
        names = [n for n, m in net.named_modules() if n and n.count(".") <= 2 and len(list(m.children()))]
        raise SweepError(f"found no blocks to tap in {entry.key}: no MLP (a module named mlp) and no "
                         f"convolutional blocks ({', '.join(CNN_BLOCK_PATTERNS[:4])}, ...); name the modules "
                         f"to read with --tap MODULE (repeatable), e.g. --tap {names[-1] if names else 'MODULE'}; "
                         f"its modules: {choices(names, limit=40)}")
    shapes, flops = _measure(net, raw, entry, pre.input_size)
    blocks = []
    for b in raw:
        sites, widths, tokens = {}, {}, None
        for name, site in b.sites.items():
            shape = shapes.get((site.module, site.call))
            if shape is None:
                if entry.family == "auto":  # an inferred site whose module the forward bypasses (a fused path)
                    continue
                raise SweepError(f"{entry.key}: module {site.module} (call {site.call}) never ran")
            sites[name] = site
            widths[name] = _width(site, shape, b.layout)
            tokens = _tokens(shape, b.layout) if name in ("mlp", "channel") else tokens
        if "mlp" in sites or "channel" in sites:
            blocks.append(Block(len(blocks), b.name, b.prefix_tokens, b.layout, sites, widths, tokens))
    if not blocks:
        raise SweepError(f"{entry.key}: none of the inferred blocks ran in a forward pass")
    return _with_flops(Anatomy(entry, pre, tuple(blocks)), flops)


@functools.lru_cache(maxsize=None)
def anatomy_of(name: str) -> Anatomy:
    """Cached `describe` by model key or alias."""
    return describe(get_entry(name))
