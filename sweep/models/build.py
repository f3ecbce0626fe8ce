"""Build a zoo entry as a frozen torch module, with pretrained, random or local weights.

The module returned is the image network itself (for CLIP: the visual tower only), in eval mode
with gradients off for every parameter: the engine only ever differentiates the input image.

Loaded weights (pretrained or a file) are checked to be finite before anything is rendered: a
damaged checkpoint would otherwise give NaN images and rows far from their cause. Every way a
weights file can be wrong (empty value, folder, missing, empty, not a checkpoint, keys that do not
fit) is one SweepError line saying so in words. What differs between libraries (creating the
network, its input config, checkpoint key names) is in `sweep.models.sources`; `build` is one call.
"""

from __future__ import annotations

import hashlib
import io
import re
from typing import Annotated

import fsspec
import torch
from pydantic import AfterValidator
from torch import nn
from torch.overrides import TorchFunctionMode

from sweep.core.errors import SweepError, one_line, storage_reason
from sweep.core.validation import Text
from sweep.models.names import TAP, split_args
from sweep.models.sources import Preprocess, source
from sweep.models.zoo import ModelEntry

#: Seed for random weights: `--weights random` gives the same network in every process.
RANDOM_WEIGHTS_SEED = 0


def instantiate(entry: ModelEntry, pretrained: bool = False) -> nn.Module:
    """The bare network of an entry (train mode, gradients on), as its library builds it."""
    try:
        return source(entry).create(entry, pretrained)
    except SweepError:
        raise
    except Exception as exc:  # noqa: BLE001 - a model refuses arguments by any exception it likes
        if not entry.kwargs or (pretrained and not isinstance(exc, TypeError)):
            raise  # a pretrained load's own failures (hub, cache) are `build`'s to word
        args = ", ".join(f"{k}={v}" for k, v in split_args(entry.key)[1] if k != TAP) or \
            ", ".join(f"{k}={v}" for k, v in entry.kwargs)
        reason = one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, 160)
        raise SweepError(f"model {entry.key}: its constructor refuses the arguments {args} ({reason}); "
                         "change or drop the --model-arg") from None


class _NoInitOnMeta(TorchFunctionMode):
    """Skips the in-place value ops of weight initialisation on meta tensors, which have no values:
    most of a meta build's time otherwise goes into running timm's trunc_normal_ and torch's init
    through Python decompositions (the paper preset's plan builds 47 networks)."""

    VALUE_OPS = frozenset({"uniform_", "normal_", "erfinv_", "mul_", "add_", "sub_", "div_", "clamp_", "clamp_min_",
                           "clamp_max_", "fill_", "zero_", "copy_", "exponential_", "log_normal_", "random_",
                           "bernoulli_", "cauchy_", "geometric_", "sqrt_", "exp_", "neg_", "abs_"})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if (getattr(func, "__name__", "") in self.VALUE_OPS and args and isinstance(args[0], torch.Tensor)
                and args[0].is_meta):
            return args[0]
        return func(*args, **(kwargs or {}))


def meta_module(entry: ModelEntry) -> nn.Module:
    """The network on the meta device: its structure and shapes, with no memory and no weights.
    A user's factory is built on the CPU instead (it may load files, which the meta device cannot)."""
    if entry.source == "module":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            return instantiate(entry, pretrained=False).eval()
    try:
        with torch.device("meta"), _NoInitOnMeta():
            return instantiate(entry, pretrained=False).eval()
    except SweepError:
        raise
    except Exception as exc:
        if entry.tag != "hf-hub":
            raise
        raise SweepError(f"model {entry.key}: its config is on the Hugging Face hub, which is not reachable "
                         f"({one_line(exc, 120)})") from None


def device_of(net: nn.Module) -> torch.device:
    """Where a network's tensors are: meta for `meta_module`'s, the CPU for a user factory's."""
    return next((t.device for t in [*net.parameters(), *net.buffers()]), torch.device("meta"))


def preprocess_config(entry: ModelEntry, net: nn.Module) -> Preprocess:
    """Input size, mean/std, interpolation and crop from the model's own config (its source's)."""
    return source(entry).preprocess(entry, net)


def _freeze(net: nn.Module) -> nn.Module:
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


WEIGHTS_CHOICES = "expected 'pretrained', 'random' or the path (or URL) of a safetensors file or torch state dict"


def read_file_bytes(path: str, what: str, allowed: str) -> bytes:
    """The bytes of a file a user named (a local path or any fsspec URL: weights, a direction, a
    photo), or one line naming `what`, the file and why not, then what is `allowed`."""
    try:
        fs, local = fsspec.core.url_to_fs(path)
        if fs.isdir(local):
            raise SweepError(f"{what} {path!r} is a folder; {allowed}")
        return fs.cat_file(local)
    except SweepError:
        raise
    except Exception as exc:  # missing file, object or bucket, access denied, unreachable endpoint...
        raise SweepError(f"cannot read {what} {path!r}: {storage_reason(exc, path)}; {allowed}") from None


def read_weights_bytes(path: str) -> bytes:
    """The bytes of a weights file (a local path or any fsspec URL), or one line saying why not."""
    if not path.strip():
        raise SweepError(f"weights: empty value; {WEIGHTS_CHOICES}")
    data = read_file_bytes(path, "weights", WEIGHTS_CHOICES)
    if not data:
        raise SweepError(f"weights {path!r} is an empty file (0 bytes); {WEIGHTS_CHOICES}")
    return data


#: A weights file is pinned to its content: `PATH#sha256=<first 16 hex digits>`.
PIN = "#sha256="


def split_pin(weights: str) -> tuple[str, str | None]:
    """`PATH#sha256=digest` -> (PATH, digest); anything else -> (weights, None)."""
    path, sep, digest = weights.rpartition(PIN)
    return (path, digest) if sep else (weights, None)


def content_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def pin_weights(weights: str) -> str:
    """'pretrained' and 'random' as they are; a file (path or URL) pinned to the hash of its bytes,
    read once where the job is planned. The pin is part of every row's weights label and config
    hash, so a file changed between runs is recomputed, never skipped as done, and a worker that
    reads other bytes than the driver planned with stops with one line."""
    if weights in ("pretrained", "random"):
        return weights
    path, pin = split_pin(weights)
    if pin is None:
        return f"{weights}{PIN}{content_digest(read_weights_bytes(weights))}"
    check_pin(weights, pin, "weights")
    return weights  # its bytes are checked against the pin where they are loaded (`load_state_dict_file`)


def check_pin(spec: str, pin: str | None, what: str) -> None:
    """A pin, where there is one, must be 16 lowercase hex digits: else one line."""
    if pin is not None and not re.fullmatch(r"[0-9a-f]{16}", pin):
        raise SweepError(f"{what} {spec!r}: malformed pin {PIN[1:]}{pin!r}; a pin is {PIN} and the first 16 "
                         "lowercase hex digits of the file's SHA-256 (give the path alone and it is pinned for you)")


def pinned_file(spec: str, what: str, allowed: str) -> tuple[str, bytes]:
    """(path, bytes) of a `PATH[#sha256=pin]` a recipe names (a direction, a photo): the bytes must
    still be those of the pin, where there is one. The caller pins `PATH` to `content_digest(bytes)`."""
    path, pin = split_pin(spec)
    check_pin(spec, pin, what)
    data = read_file_bytes(path, what, allowed)
    if pin is not None and content_digest(data) != pin:
        raise SweepError(f"{what} {path!r} changed since it was pinned ({pin}, now {content_digest(data)}); "
                         "plan the job again")
    return path, data


#: The `weights` field of every job config: pretrained | random | PATH or URL (pinned on validation).
Weights = Annotated[Text, AfterValidator(pin_weights)]


def load_state_dict_file(weights: str) -> dict[str, torch.Tensor]:
    """Read a safetensors file or a torch checkpoint (plain or wrapped in 'state_dict'/'model');
    a pinned file (`PATH#sha256=...`) must still hold the bytes it was pinned to."""
    path, pin = split_pin(weights)
    data = read_weights_bytes(path)
    if pin is not None and content_digest(data) != pin:
        raise SweepError(f"weights {path!r} changed since the job was planned (sha256 {pin}..., now "
                         f"{content_digest(data)}...); run the command again to plan with the new file")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load

            state = load(data)
        else:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # decoder messages (a bare KeyError '101', miniz internals) say little
        raise SweepError(f"weights {path!r} {_undecodable(path, data, exc)}; {WEIGHTS_CHOICES}") from None
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SweepError(f"cannot read weights {path!r}: it holds no state dict of tensors")
    return state


def _undecodable(path: str, data: bytes, exc: Exception) -> str:
    """Why a weights file's bytes did not decode, in words (torch.save writes a zip archive)."""
    text = str(exc)
    if path.endswith(".safetensors"):
        return f"is not a readable safetensors file ({one_line(text, 100)})"
    if "Weights only load failed" in text:
        return ("holds Python objects besides tensors, which are not unpickled for safety; "
                "save the model's state_dict() instead")
    if data.startswith(b"PK\x03\x04"):
        return "is a damaged torch checkpoint (its zip archive is truncated or corrupt)"
    return "is not a torch checkpoint (neither a torch.save zip archive nor a pickle)"


def _load_local(entry: ModelEntry, net: nn.Module, weights: str) -> None:
    state = load_state_dict_file(weights)
    path = split_pin(weights)[0]  # messages name the file as the user gave it
    state = source(entry).adapt_state(state)
    own = net.state_dict()
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        first = next((k for k in wrong if _shape_hint(net, k, state[k].shape, own[k].shape)), wrong[0])
        hint = _shape_hint(net, first, state[first].shape, own[first].shape)
        raise SweepError(f"weights {path!r} do not fit {entry.key}: {len(wrong)} tensor(s) of another shape, "
                         f"e.g. {first} is {list(state[first].shape)} in the file, {list(own[first].shape)} "
                         f"in the model" + (f"; {hint}" if hint else ""))
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # anything else torch refuses
        raise SweepError(f"weights {path!r} do not fit {entry.key}: {one_line(exc, 200)}") from None
    if result.missing_keys or result.unexpected_keys:
        raise SweepError(
            f"weights {path!r} do not fit {entry.key}: {len(result.missing_keys)} missing keys "
            f"(e.g. {result.missing_keys[:2]}), {len(result.unexpected_keys)} unexpected "
            f"(e.g. {result.unexpected_keys[:2]})")


def _shape_hint(net: nn.Module, key: str, shape, own_shape) -> str:
    """The constructor argument a tensor of the file's shape implies, where one does: a position
    table made for another input size (timm ViTs: img_size), a classifier for other classes."""
    shape = tuple(shape)
    if key == "pos_embed" and len(shape) == 3 and hasattr(net, "patch_embed"):
        prefix = 0 if getattr(net, "no_embed_class", False) else int(getattr(net, "num_prefix_tokens", 0))
        grid = round((shape[1] - prefix) ** 0.5)
        patch = getattr(net.patch_embed, "patch_size", None)
        patch = patch[0] if isinstance(patch, (tuple, list)) else patch
        if grid * grid == shape[1] - prefix and isinstance(patch, int):
            return (f"the file's position table is a {grid}x{grid} grid of {patch} px patches: try "
                    f"--model-arg img_size={grid * patch}")
    if (key.split(".")[0] in ("head", "fc", "classifier") and key.endswith("weight") and len(shape) == 2
            and shape[1] == tuple(own_shape)[1]):  # the same features, another number of classes
        return f"the file's classifier has {shape[0]} classes: try --model-arg num_classes={shape[0]}"
    return ""


def check_finite(net: nn.Module, source: str) -> None:
    """Refuse a network with a NaN or infinite parameter or buffer, naming the first such tensor."""
    for name, tensor in [*net.named_parameters(), *net.named_buffers()]:
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise SweepError(f"weights {source}: {name} has {bad} non-finite value{'s' if bad > 1 else ''} "
                                 "(NaN or inf); the checkpoint is damaged")


def build(entry: ModelEntry, weights: str = "random", device: str | torch.device = "cpu") -> nn.Module:
    """The frozen network of `entry` on `device`.

    weights: "pretrained" (through timm/open_clip/torchvision; needs their hub or a warm cache),
    "random" (seeded, never touches the network), or a local file path.
    """
    if weights == "pretrained":
        if not entry.has_pretrained:
            raise SweepError(f"model {entry.key!r} has no pretrained weights; use --weights random or PATH")
        try:
            net = instantiate(entry, pretrained=True)
        except SweepError:
            raise
        except Exception as exc:
            raise SweepError(
                f"could not load pretrained weights for {entry.key} ({entry.source} tag {entry.tag!r}): "
                f"{one_line(exc, 160)}; offline? use --weights random or --weights PATH") from None
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            net = instantiate(entry, pretrained=False)
        if weights != "random":
            _load_local(entry, net, weights)
    if weights != "random":  # seeded random weights are finite by construction
        check_finite(net, repr(split_pin(weights)[0]) if weights != "pretrained" else f"pretrained for {entry.key}")
    return _freeze(net).to(device)


def check_weights(entry: ModelEntry, weights: str) -> None:
    """The weights a job names, checked where it is planned, before any worker starts: pretrained ones
    exist and can be had (`Source.prepare`: a package's converted once, torchvision's looked up in
    TORCH_HOME when offline), a file loads on the CPU (readable, of the right shapes, finite)."""
    if weights == "random":
        return
    if weights == "pretrained":
        if not entry.has_pretrained:
            raise SweepError(f"model {entry.key!r} has no pretrained weights; use --weights random or PATH")
        source(entry).prepare(entry)
        return
    build(entry, weights, "cpu")
