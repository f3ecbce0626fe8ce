"""Any model by the name users know: zoo keys first, then timm, open_clip, torchvision or a factory.

A model name resolves, in order, to
1. a zoo key or alias (`B_16_imagenet1k`, `ViT-B/32`, `deit_tiny_patch16_224`);
2. any name `timm.create_model` accepts: `arch`, `arch.tag`, `hf-hub:org/repo` (or `timm:` + one);
3. `open_clip:ARCH/TAG`, `open_clip:ARCH` (random weights only) or `open_clip:hf-hub:org/repo`;
4. `torchvision:NAME` (its default weights);
5. `module:package.module:factory`: the user's function returning an `nn.Module`, or a pair
   `(module, {"input_size": 224, "mean": [...], "std": [...]})`; "pretrained" means the weights the
   factory gives, "random" the factory called under the fixed seed.

Constructor arguments follow the name in brackets, `vit_small_patch14_dinov2[img_size=224]`
(`--model-arg img_size=224` adds them). The resolved key is canonical and says everything needed to
build the model again, so a name is all that travels to a Ray worker: it resolves the same way there,
with no registration in the driver's memory.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re

import yaml

from sweep.core.errors import SweepError, choices
from sweep.models.zoo import REGISTRY, ModelEntry

#: Prefixes of the model sources outside the zoo.
PREFIXES = ("timm:", "open_clip:", "torchvision:", "module:")
NAME_HELP = ("a zoo key or alias (`sweep models`), a timm name (arch, arch.tag, hf-hub:org/repo), "
             "open_clip:ARCH/TAG, torchvision:NAME or module:package.module:factory; constructor "
             "arguments as name[key=value,...]")

#: timm modules whose models the paper's family tap rules already describe.
_TIMM_FAMILIES = {"vision_transformer": "vit", "deit": "deit", "coat": "coat", "convit": "convit", "pit": "pit",
                  "swin_transformer": "swin", "twins": "twins", "resnet": "cnn"}
_ARG_VALUE = (int, float, bool, str, type(None))


def parse_model_args(items) -> tuple[tuple[str, object], ...]:
    """`key=value` strings (values read as YAML scalars: 224, 0.5, true, text) -> sorted pairs."""
    pairs = {}
    for item in items:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*", key):
            raise SweepError(f"model argument {item!r}: expected key=value with a Python name as key, "
                             "e.g. img_size=224")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if not isinstance(value, _ARG_VALUE):
            raise SweepError(f"model argument {item!r}: the value must be a number, true/false, null or text")
        if isinstance(value, str) and re.search(r"[,\[\]=]", value):
            raise SweepError(f"model argument {item!r}: text values may not contain , [ ] or = (they delimit "
                             "arguments in the model's name)")
        if key in pairs and pairs[key] != value:
            raise SweepError(f"model argument {key!r} given twice with different values")
        pairs[key] = value
    return tuple(sorted(pairs.items()))


def format_args(args: tuple[tuple[str, object], ...]) -> str:
    if not args:
        return ""
    shown = {True: "true", False: "false", None: "null"}  # written as YAML reads them back
    text = ",".join(f"{k}={shown[v] if v is None or isinstance(v, bool) else v}" for k, v in args)
    return f"[{text}]"


def split_args(name: str) -> tuple[str, tuple[tuple[str, object], ...]]:
    """`base[k=v,...]` -> (base, sorted args)."""
    m = re.fullmatch(r"(.+?)\[(.*)\]", name.strip())
    if not m:
        return name.strip(), ()
    return m.group(1), parse_model_args([p for p in m.group(2).split(",") if p.strip()])


def with_args(name: str, extra: list[str]) -> str:
    """`name` with constructor arguments added (`key=value` strings from --model-arg or YAML model_args)."""
    if not extra:
        return name
    base, args = split_args(name)
    return base + format_args(tuple(sorted({**dict(args), **dict(parse_model_args(extra))}.items())))


def source_of(name: str) -> str:
    """Where a model name comes from, read off the name alone (nothing imported or built: safe on
    names read from a results root): zoo, timm, open_clip, torchvision or module."""
    base = split_args(name)[0] if isinstance(name, str) else ""
    if base.startswith(PREFIXES):
        return base.split(":", 1)[0]
    try:
        return "zoo" if REGISTRY.find(base) is not None else "timm"
    except SweepError:
        return "zoo"


@functools.lru_cache(maxsize=512)
def resolve(name: str) -> ModelEntry:
    """The entry a model name stands for, zoo or not; a SweepError says what names look like."""
    if not isinstance(name, str) or not name.strip():
        raise SweepError(f"model name {name!r} is empty; allowed: {NAME_HELP}")
    base, args = split_args(name)
    entry = None if base.startswith(PREFIXES) else REGISTRY.find(base)
    if entry is not None:
        if not args:
            return entry
        if entry.source != "timm":
            raise SweepError(f"model {base!r}: constructor arguments are supported for timm models only")
        merged = tuple(sorted({**dict(entry.kwargs), **dict(args)}.items()))
        return dataclasses.replace(entry, key=entry.key + format_args(args), kwargs=merged, aliases=(),
                                   paper_38=False, note=f"{entry.key} built with {format_args(args)[1:-1]}")
    source, _, rest = base.partition(":") if base.startswith(PREFIXES) else ("", "", base)
    if source == "open_clip":
        entry = _open_clip(rest, args)
    elif source == "torchvision":
        entry = _torchvision(rest, args)
    elif source == "module":
        entry = _module(rest, args)
    else:
        entry = _timm(rest, args, explicit=source == "timm")
    return dataclasses.replace(entry, key=base + format_args(args))


def _timm(name: str, args, explicit: bool) -> ModelEntry:
    import timm
    from timm.models import get_pretrained_cfg
    from timm.models._registry import _model_to_module, split_model_name_tag  # no public name->module map

    if name.startswith("hf-hub:"):
        return ModelEntry(name, "auto", "timm", name, "hf-hub", kwargs=args,
                          note="timm model from the Hugging Face hub (its config and weights need the hub)")
    arch, tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        zoo_close = difflib.get_close_matches(name, [e.key for e in REGISTRY.entries()], n=2)
        timm_close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        close = [*zoo_close, *timm_close]
        hint = f"did you mean {', '.join(close)}? " if close else ""
        what = "timm model" if explicit else "model"
        raise SweepError(f"unknown {what} {name!r}; {hint}allowed: {NAME_HELP}")
    tags = _pretrained_tags(arch)
    if tag and tag not in tags:
        raise SweepError(f"timm has no pretrained tag {tag!r} for {arch}; allowed: "
                         f"{choices(tags) or 'none (use --weights random)'}")
    if not tag and tags:  # timm's default tag, what create_model(arch, pretrained=True) loads
        tag = getattr(get_pretrained_cfg(arch), "tag", None) or tags[0]
    family = _TIMM_FAMILIES.get(_model_to_module.get(arch, ""), "auto")
    return ModelEntry(name, family, "timm", arch, tag, kwargs=args,
                      note=f"timm {arch}" + (f", pretrained tag {tag}" if tag else ", no pretrained weights"))


def _pretrained_tags(arch: str) -> list[str]:
    import timm

    return [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*")]


def _open_clip(name: str, args) -> ModelEntry:
    import open_clip

    if name.startswith("hf-hub:"):
        return ModelEntry(name, "auto", "open_clip", name, "hf-hub", kwargs=args,
                          note="open_clip model from the Hugging Face hub (its config and weights need the hub)")
    arch, _, tag = name.partition("/")
    config = open_clip.get_model_config(arch)
    if config is None:
        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise SweepError(f"unknown open_clip architecture {arch!r}; {hint}expected open_clip:ARCH/TAG "
                         "(open_clip.list_models() and list_pretrained())")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag and tag not in tags:
        raise SweepError(f"open_clip has no pretrained tag {tag!r} for {arch}; allowed: "
                         f"{choices(tags) or 'none (use --weights random)'}")
    vision = config.get("vision_cfg", {})
    family = "auto" if vision.get("timm_model_name") else (
        "clip_resnet" if isinstance(vision.get("layers"), (list, tuple)) else "clip")
    return ModelEntry(name, family, "open_clip", arch, tag or None, kwargs=args,
                      note=f"open_clip {arch}" + (f", pretrained {tag}" if tag else ", no pretrained weights"))


def _torchvision(name: str, args) -> ModelEntry:
    import torchvision

    arch, _, tag = name.partition(".")
    if arch not in torchvision.models.list_models(torchvision.models):
        close = difflib.get_close_matches(arch, torchvision.models.list_models(torchvision.models), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise SweepError(f"unknown torchvision classification model {arch!r}; {hint}"
                         "expected torchvision:NAME (torchvision.models.list_models())")
    weights = torchvision.models.get_model_weights(arch)
    names = [w.name for w in weights]
    if tag and tag not in names:
        raise SweepError(f"torchvision has no weights {tag!r} for {arch}; allowed: {choices(names)}")
    tag = tag or weights.DEFAULT.name
    family = "cnn" if re.match(r"(resnet|resnext|wide_resnet)\d", arch) else "auto"
    return ModelEntry(name, family, "torchvision", arch, tag, kwargs=args, note=f"torchvision {arch}, weights {tag}")


def _module(target: str, args) -> ModelEntry:
    module, sep, factory = target.partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z_][\w.]*", module) or not re.fullmatch(r"[A-Za-z_]\w*", factory):
        raise SweepError(f"module model {target!r}: expected module:package.module:factory")
    return ModelEntry(target, "auto", "module", target, "factory", kwargs=args,
                      note=f"{module}.{factory}(): the user's own factory")
