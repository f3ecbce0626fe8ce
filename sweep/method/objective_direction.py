"""Directions in a layer's space: the `direction` objective's vectors, from a file or two units.

A direction spec is either `A-B` (unit A minus unit B of the site: one direction, feature 0) or a
`.npy` file (a local path or any fsspec URL) holding a (width,) or (N, width) float array, one
direction per row: feature i of the sweep is row i. A file is pinned to its bytes when the config
is validated (`FILE#sha256=<16 hex digits>`, as weights files are), so the pin is in every row's
config hash and a worker that reads other bytes than the driver planned with stops with one line.
Arrays are read with numpy's `allow_pickle=False`: a hostile file cannot run code.
"""

from __future__ import annotations

import functools
import io
import re

import numpy as np
import torch

from sweep.core.errors import SweepError
from sweep.models.build import PIN, content_digest, pinned_file, split_pin

#: What the `direction` field accepts, for error lines.
DIRECTION_CHOICES = ("allowed: A-B (unit A minus unit B, two unit indices) or a .npy file of (width,) or "
                     "(N, width) floats")

_DIFFERENCE = re.compile(r"\s*(\d+)\s*-\s*(\d+)\s*")


def units_difference(spec: str) -> tuple[int, int] | None:
    """(A, B) of an `A-B` spec, else None (a file)."""
    m = _DIFFERENCE.fullmatch(spec)
    return (int(m.group(1)), int(m.group(2))) if m else None


def pin_direction(spec: str) -> str:
    """`A-B` as it is (units checked against the width later); a file pinned to its bytes, its array checked."""
    spec = spec.strip()
    if units_difference(spec) is not None:
        a, b = units_difference(spec)
        if a == b:
            raise SweepError(f"recipe direction {spec!r}: unit {a} minus itself is no direction; {DIRECTION_CHOICES}")
        return f"{a}-{b}"
    if not split_pin(spec)[0].lower().endswith(".npy"):
        raise SweepError(f"recipe direction {spec!r} is neither A-B nor a .npy file; {DIRECTION_CHOICES}")
    path, data = pinned_file(spec, "recipe direction", DIRECTION_CHOICES)
    _array(data, path)  # the array is checked once, where the config is validated
    return f"{path}{PIN}{content_digest(data)}"


def _array(data: bytes, path: str) -> np.ndarray:
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # not a .npy, truncated, an object array (pickle refused)
        raise SweepError(f"recipe direction {path!r} is not a readable .npy array ({type(exc).__name__}: "
                         f"{str(exc)[:120]}); {DIRECTION_CHOICES}") from None
    if arr.ndim not in (1, 2) or arr.size == 0 or not np.issubdtype(arr.dtype, np.number) \
            or np.issubdtype(arr.dtype, np.complexfloating):
        raise SweepError(f"recipe direction {path!r} holds a {arr.dtype} array of shape {tuple(arr.shape)}; "
                         f"{DIRECTION_CHOICES}")
    arr = np.atleast_2d(arr.astype(np.float64))
    if not np.isfinite(arr).all():
        raise SweepError(f"recipe direction {path!r} holds NaN or infinite values; {DIRECTION_CHOICES}")
    if (np.abs(arr).max(axis=1) == 0).any():
        raise SweepError(f"recipe direction {path!r}: row {int(np.flatnonzero(np.abs(arr).max(axis=1) == 0)[0])} "
                         f"is all zeros, no direction; {DIRECTION_CHOICES}")
    return arr


@functools.lru_cache(maxsize=8)
def _pinned_rows(spec: str) -> np.ndarray:
    """A pinned file's rows; cached by the pinned spec, whose bytes cannot change under it."""
    path, data = pinned_file(spec, "recipe direction", DIRECTION_CHOICES)
    return _array(data, path)


def directions(spec: str, width: int) -> torch.Tensor:
    """(N, width) float32 directions of a spec at a site of `width` features, or one line why not."""
    pair = units_difference(spec)
    if pair is not None:
        a, b = pair
        if max(a, b) >= width:
            raise SweepError(f"recipe direction {spec!r}: unit {max(a, b)} is outside the site's 0..{width - 1}")
        rows = torch.zeros(1, width)
        rows[0, a], rows[0, b] = 1.0, -1.0
        return rows
    arr = _pinned_rows(spec)
    if arr.shape[1] != width:
        raise SweepError(f"recipe direction {split_pin(spec)[0]!r} has {arr.shape[1]} columns; the site has "
                         f"{width} features, so a direction needs {width}")
    return torch.from_numpy(arr).float()
