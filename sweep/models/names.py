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
(`--model-arg img_size=224` adds them); so do explicit taps, `name[tap=blocks.3.mlp.fc1|blocks.5]`
(`--tap MODULE` adds one): the modules whose outputs are read, in place of the inferred blocks. The
resolved key is canonical and says everything needed to build the model and its taps again, so a
name is all that travels to a Ray worker: it resolves the same way there, with no registration in
the driver's memory.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Annotated

import yaml
from pydantic import AfterValidator

from sweep.core.errors import SweepError
from sweep.core.validation import Text
from sweep.models.sources import NAME_HELP, SOURCES
from sweep.models.zoo import REGISTRY, ModelEntry

#: Prefixes of the model sources outside the zoo.
PREFIXES = tuple(f"{name}:" for name in SOURCES)
_ARG_VALUE = (int, float, bool, str, type(None))
#: The name's pseudo-argument holding explicit taps (module paths joined by |); never passed to a constructor.
TAP = "tap"
_MODULE_PATH = r"[A-Za-z0-9_][\w.@-]*"


def parse_model_args(items) -> tuple[tuple[str, object], ...]:
    """`key=value` strings (values read as YAML scalars: 224, 0.5, true, text) -> sorted pairs."""
    pairs = {}
    for item in items:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*", key):
            raise SweepError(f"model argument {item!r}: expected key=value with a Python name as key, "
                             "e.g. img_size=224")
        if key == TAP:  # module paths stay text ("0.1" is a module of a Sequential, not a number)
            taps = [t.strip() for t in raw.split("|")]
            bad = [t for t in taps if not re.fullmatch(_MODULE_PATH, t)]
            if bad:
                raise SweepError(f"tap {bad[0]!r}: expected a module path such as blocks.3.mlp.fc1 "
                                 "(`sweep models --model NAME --format json` lists the blocks)")
            known = [t for t in str(pairs.get(TAP, "")).split("|") if t]
            value = "|".join(dict.fromkeys([*known, *taps]))
            pairs[TAP] = value
            continue
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


def with_args(name: str, extra=(), taps=()) -> str:
    """`name` with constructor arguments (`key=value` strings from --model-arg or YAML model_args;
    they replace the name's own values) and explicit taps (--tap or YAML taps; added in order)."""
    if not extra and not taps:
        return name
    base, pairs = split_args(name)
    args, new = dict(pairs), dict(parse_model_args([*extra, *(f"{TAP}={t}" for t in taps)]))
    merged = {**args, **{k: v for k, v in new.items() if k != TAP}}
    tapped = [t for v in (args.get(TAP), new.get(TAP)) if v for t in v.split("|")]
    if tapped:
        merged[TAP] = "|".join(dict.fromkeys(tapped))
    return base + format_args(tuple(sorted(merged.items())))


def check_model_arg(item: str) -> str:
    parse_model_args([item])
    return item


def check_tap(path: str) -> str:
    """One module path (a `|` would silently make two taps of one: in a flag or a YAML item, each tap
    is given on its own; `|` joins taps only inside a name's [tap=...])."""
    if "|" in path:
        raise SweepError(f"tap {path!r}: one module path per --tap (or YAML item); give --tap once for each "
                         "of " + ", ".join(repr(t.strip()) for t in path.split("|") if t.strip()))
    parse_model_args([f"{TAP}={path}"])
    return path


#: Config fields: one `key=value` constructor argument, one module path to tap (checked on validation,
#: so a bad one is reported as the flag or YAML key the user typed).
ModelArg = Annotated[Text, AfterValidator(check_model_arg)]
TapPath = Annotated[Text, AfterValidator(check_tap)]


def source_of(name: str) -> str:
    """Where a model name comes from, read off the name alone (nothing imported or built: safe on
    names read from a results root): zoo, timm, open_clip, torchvision or module."""
    base = name.split("[", 1)[0].strip() if isinstance(name, str) else ""  # no parsing: any text is safe
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
    taps = tuple(t for t in str(dict(args).get(TAP, "")).split("|") if t)
    args = tuple((k, v) for k, v in args if k != TAP)
    zoo = None if base.startswith(PREFIXES) else REGISTRY.find(base)
    if zoo is None:
        source, _, rest = base.partition(":") if base.startswith(PREFIXES) else ("timm", "", base)
        extra = {"explicit": True} if source == "timm" and base.startswith("timm:") else {}
        entry, key = SOURCES[source].entry(rest, args, **extra), base
    elif not args and not taps:
        return zoo  # as the zoo has it: its key, aliases and paper flags
    elif args and zoo.source not in ("timm", "package"):
        raise SweepError(f"model {base!r}: constructor arguments are supported for timm models only")
    else:  # a zoo model built with other arguments or read at other modules: no longer the paper's
        entry = dataclasses.replace(zoo, kwargs=tuple(sorted({**dict(zoo.kwargs), **dict(args)}.items())),
                                    aliases=(), paper_38=False)
        if args:
            entry = dataclasses.replace(entry, note=f"{zoo.key} built with {format_args(args)[1:-1]}")
        key = zoo.key
    named = (*args, (TAP, "|".join(taps))) if taps else args
    return dataclasses.replace(entry, key=key + format_args(tuple(sorted(named))), taps=taps)
