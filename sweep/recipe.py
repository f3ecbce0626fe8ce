"""The paper's feature-visualization recipe as one typed config; every default is the paper's value."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from sweep.errors import SweepError


@dataclass(frozen=True)
class Recipe:
    """Knobs of one visualization (see ../shared/reference/paper-method.md, section 1).

    steps: cosine-schedule length T; the loop runs steps + 1 iterations (the paper: 400 -> 401).
    lr: Adam learning rate; None means the family's default (see `defaults`).
    tv: the paper's `-v` multiplier; the TV coefficient is tv_base * tv (0.0005 * v); None means the
        family's default.
    defaults: where lr and tv left at None come from: "tuned" (the family's tuned values stored with
        the registry, sweep/models/tuned_recipes.json, else the paper's) or "paper" (always the
        paper's: lr 0.1 for ViTs, 1.0 for CLIP; tv 1).
    reference_scale: the paper's loss -sum(a)/copies**2 (an accidental extra 1/copies from `.diag()`
        on a 1-D tensor, which weights TV `copies` times more); False uses -mean(a).
    image_size: side of the optimized image; None means the model's input size.
    """

    steps: int = 400
    copies: int = 8
    lr: float | None = None
    beta1: float = 0.5
    beta2: float = 0.99
    eps: float = 1e-8
    tv: float | None = None
    tv_base: float = 0.0005
    color_mean: float = 1.0
    color_std: float = 1.0
    offset_std: float = 0.5
    jitter: int = 32
    image_size: int | None = None
    reference_scale: bool = True
    log_every: int = 20
    defaults: str = "tuned"

    def __post_init__(self):
        checks = {
            "steps": self.steps >= 1, "copies": self.copies >= 1, "tv": self.tv is None or self.tv >= 0,
            "defaults": self.defaults in ("tuned", "paper"),
            "jitter": self.jitter >= 0, "log_every": self.log_every >= 1,
            "lr": self.lr is None or self.lr > 0,
            "image_size": self.image_size is None or self.image_size >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                allowed = "; allowed: tuned, paper" if name == "defaults" else ""
                raise SweepError(f"bad recipe value {name}={getattr(self, name)!r}{allowed}")

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
        which no longer matters once lr and tv are filled in."""
        return {k: v for k, v in self.as_dict().items() if k != "defaults"}

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Recipe":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SweepError(f"unknown recipe field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
        return cls(**data)


def config_hash(payload: dict) -> str:
    """A stable short hash of a JSON-able config, to group and deduplicate results."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
