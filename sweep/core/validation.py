"""One validator for every config a user can write: YAML, CLI flags and Python all meet it.

The configs are pydantic dataclasses (`config_dataclass`): their field types carry the allowed
values (`Count`, `Seed`, `Positive`, `Probability`, ...), pydantic coerces what a YAML file or a
flag spells as text (`lr: 1e-2` is a string to PyYAML), and `describe` turns pydantic's report into
the single `error:` line the CLI prints: the field's path, what is allowed, and what was given.
Keeping the rules in the types, rather than in checks spread over modules, means a value is
rejected the same way whichever entry point it came through, and before any work starts.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import typing
from typing import Annotated, Any, TypeVar

import pydantic
from pydantic import BeforeValidator, ConfigDict, Field, PlainValidator, TypeAdapter, ValidationError

from sweep.core.errors import SweepError

T = TypeVar("T")

#: Seeds feed torch.Generator.manual_seed and Python's random; feature offsets are added to them.
SEED_MAX = 2**63 - 2**32

#: Largest image side the tool renders or feeds a model: 16x the paper's biggest input (384), far beyond
#: any use, far below what would exhaust memory before the first step.
MAX_IMAGE_SIZE = 8192


def _not_bool(value: Any) -> Any:
    """YAML's `yes` and a stray `true` are not numbers, though Python says bool is an int."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    return value


NoBool = BeforeValidator(_not_bool)
Count = Annotated[int, NoBool, Field(ge=1)]
NonNegativeInt = Annotated[int, NoBool, Field(ge=0)]
Seed = Annotated[int, NoBool, Field(ge=0, le=SEED_MAX)]
Positive = Annotated[float, NoBool, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, NoBool, Field(ge=0, allow_inf_nan=False)]
Finite = Annotated[float, NoBool, Field(allow_inf_nan=False)]
Probability = Annotated[float, NoBool, Field(ge=0, lt=1, allow_inf_nan=False)]
Fraction = Annotated[float, NoBool, Field(gt=0, le=1, allow_inf_nan=False)]
Text = Annotated[str, Field(min_length=1)]


def _layer(value: Any) -> int | str:
    """A block index (an int, or text that spells one: flags are text) or a block name."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip():
        text = value.strip()
        return int(text) if text.lstrip("-").isdigit() else text
    raise ValueError(f"a layer is a block index or a block name; got {value!r}")


#: A layer as users name it: a block index (negative counts from the end) or a block name.
Layer = Annotated[int | str, PlainValidator(_layer)]


def config_dataclass(cls: type[T]) -> type[T]:
    """A frozen dataclass whose fields are validated (and coerced) on construction; unknown keys are
    refused. Still a dataclass: `dataclasses.asdict`, `replace` and pickling work as before. Built
    directly from Python, a bad value raises SweepError like any other user mistake."""
    cls = pydantic.dataclasses.dataclass(frozen=True, config=ConfigDict(extra="forbid"))(cls)
    validated_init = cls.__init__

    @functools.wraps(validated_init)
    def __init__(self, *args, **kwargs):
        # By name, so that an error names the field even when it was given by position.
        named = dict(zip((f.name for f in dataclasses.fields(cls)), args))
        if len(args) > len(named) or set(named) & set(kwargs):
            raise TypeError(f"{cls.__name__}: too many or repeated arguments")
        try:
            validated_init(self, **named, **kwargs)
        except ValidationError as exc:
            raise SweepError(describe(exc, type(self), type(self).__name__)) from None

    cls.__init__ = __init__
    return cls


def parse(kind: type[T], data: Any, prefix: str = "", flags: dict[str, str] | None = None,
          source: str = "") -> T:
    """Validate plain data (a YAML mapping, flags gathered into a dict) into `kind`, or raise one
    SweepError line. `prefix` goes before field paths (e.g. "recipe"); `flags` maps field paths to
    the command-line flags that set them, so the message names what the user typed; `source` (a
    config file) starts the message."""
    try:
        return _adapter(kind).validate_python(data)
    except ValidationError as exc:
        message = describe(exc, kind, prefix, flags)
        raise SweepError(f"{source}: {message}" if source else message) from None


_ADAPTERS: dict[type, TypeAdapter] = {}


def _adapter(kind: type) -> TypeAdapter:
    if kind not in _ADAPTERS:
        _ADAPTERS[kind] = TypeAdapter(kind)
    return _ADAPTERS[kind]


def describe(exc: ValidationError, kind: type | None = None, prefix: str = "",
             flags: dict[str, str] | None = None) -> str:
    """pydantic's errors as one line: the first problem in full, then how many more there are."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    cause = first.get("ctx", {}).get("error") if first["type"] == "value_error" else None
    leaf = str(first["loc"][-1]) if first["loc"] else ""
    if isinstance(cause, SweepError) and leaf and re.search(rf"\b{re.escape(leaf)}\b", str(cause)):
        return f"{cause}{more}"  # our own line already names the field ("weights '/x' is a folder; ...")
    return f"{_name(first['loc'], prefix, flags)}: {_problem(first, kind)}{more}"


def _name(loc: tuple, prefix: str, flags: dict[str, str] | None) -> str:
    """`recipe.steps`, or the flag that set it (`--steps`; `--model (item 2)` for a list element)."""
    path = ".".join(str(p) for p in loc if not isinstance(p, int))
    items = [p for p in loc if isinstance(p, int)]
    flag = (flags or {}).get(path)
    if flag:
        return flag + (f" (item {items[0] + 1})" if items else "")
    full = ".".join(str(p) for p in loc)
    return ".".join(p for p in (prefix, full) if p) or "config"


def _problem(error: dict, kind: type | None) -> str:
    kind_of_error = error["type"]
    given = error.get("input")
    if kind_of_error in ("unexpected_keyword_argument", "extra_forbidden"):
        return f"unknown key; allowed: {', '.join(_allowed_keys(kind, error['loc'][:-1]))}"
    if kind_of_error == "missing_argument" or kind_of_error == "missing":
        return "required, but not given"
    if kind_of_error == "value_error":
        cause = error.get("ctx", {}).get("error")
        return str(cause) if cause is not None else error["msg"]
    message = error["msg"][0].lower() + error["msg"][1:]
    return f"{message}; got {_shown(given)}"


def _shown(value: Any) -> str:
    text = repr(value)
    if isinstance(value, float) and not math.isfinite(value):
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _allowed_keys(kind: type | None, loc: tuple) -> list[str]:
    """Field names of the (nested) dataclass at `loc`, for an unknown-key message."""
    cls, mapping = kind, False
    for part in loc:
        if mapping:  # a key of a dict of dataclasses (per_model's model names): its value's class
            mapping = False
            continue
        hint = typing.get_type_hints(cls).get(part) if _is_dataclass(cls) else None
        mapping = typing.get_origin(hint) is dict
        cls = next((a for a in (hint, *typing.get_args(hint)) if _is_dataclass(a)), None)
    return sorted(f.name for f in dataclasses.fields(cls)) if _is_dataclass(cls) else ["see the documentation"]


def _is_dataclass(cls: Any) -> bool:
    return isinstance(cls, type) and dataclasses.is_dataclass(cls)
