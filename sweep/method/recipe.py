"""The paper's feature-visualization recipe as one typed config; every default is the paper's value."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Literal

from sweep.core.errors import SweepError
from sweep.core.validation import (
    MAX_IMAGE_SIZE,
    Count,
    NonNegative,
    NonNegativeInt,
    Positive,
    Probability,
    config_dataclass,
)



@config_dataclass
class Recipe:
    """Knobs of one visualization (see ../shared/reference/paper-method.md, section 1).

    steps: cosine-schedule length T; the loop runs steps + 1 iterations (the paper: 400 -> 401).
    lr: Adam learning rate; None means the family's default (see `defaults`).
    tv: the paper's `-v` multiplier; the TV coefficient is tv_base * tv (0.0005 * v); None means the
        family's default.
    defaults: where lr and tv left at None come from: "tuned" (the family's tuned values stored with
        the registry, sweep/method/tuned_recipes.json, else the paper's) or "paper" (always the
        paper's: lr 0.1 for ViTs, 1.0 for CLIP; tv 1).
    reference_scale: the paper's loss -sum(a)/copies**2 (an accidental extra 1/copies from `.diag()`
        on a 1-D tensor, which weights TV `copies` times more); False uses -mean(a).
    image_size: side of the optimized image; None means the model's input size.
    param: what is optimized (sweep/method/param.py): pixel (the paper's raw pixels), fourier (a
        1/f-scaled spectrum with decorrelated colour, param_fourier.py) or maco (the phase of the
        shipped photos' mean magnitude spectrum, param_maco.py).
    """

    steps: Count = 400
    copies: Count = 8
    lr: Positive | None = None
    beta1: Probability = 0.5
    beta2: Probability = 0.99
    eps: Positive = 1e-8
    tv: NonNegative | None = None
    tv_base: NonNegative = 0.0005
    color_mean: NonNegative = 1.0
    color_std: NonNegative = 1.0
    offset_std: NonNegative = 0.5
    jitter: NonNegativeInt = 32
    image_size: Count | None = None
    reference_scale: bool = True
    log_every: Count = 20
    defaults: Literal["tuned", "paper"] = "tuned"
    param: Literal["pixel", "fourier", "maco"] = "pixel"

    def __post_init__(self):
        if self.image_size is not None and self.image_size > MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be at most {MAX_IMAGE_SIZE}, got {self.image_size}")

    @property
    def iterations(self) -> int:
        return self.steps + 1

    @property
    def tv_coef(self) -> float:
        if self.tv is None:
            raise SweepError("recipe tv is unresolved; resolve it against a model first")
        return self.tv_base * self.tv

    def resolved(self, lr: float, image_size: int, tv: float = 1.0) -> "Recipe":
        """The recipe with the model-dependent defaults filled in where they were left at None."""
        return dataclasses.replace(self, lr=self.lr if self.lr is not None else lr,
                                   tv=self.tv if self.tv is not None else tv,
                                   image_size=self.image_size or image_size)

    def identity(self) -> dict:
        """What identifies a resolved recipe in config hashes: every field but the defaults switch,
        which no longer matters once lr and tv are filled in. The paper's `pixel` parametrization is
        left out, so every hash made before there was a choice still identifies the same images."""
        return {k: v for k, v in self.as_dict().items() if k != "defaults" and not (k == "param" and v == "pixel")}

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def config_hash(payload: dict) -> str:
    """A stable short hash of a JSON-able config, to group and deduplicate results."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
