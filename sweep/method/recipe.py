"""The paper's feature-visualization recipe as one typed config; every default is the paper's value."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Annotated, Literal

from pydantic import AfterValidator

from sweep.core.errors import SweepError
from sweep.core.validation import (
    MAX_IMAGE_SIZE,
    Count,
    NonNegative,
    NonNegativeInt,
    Positive,
    Probability,
    Text,
    config_dataclass,
)
from sweep.method.accentuate import pin_accentuate
from sweep.method.objective_direction import pin_direction
from sweep.method.param_maco import pin_spectrum

#: A direction spec (sweep/method/objective_direction.py), a file pinned to its bytes on validation.
Direction = Annotated[Text, AfterValidator(pin_direction)]
#: The photo accentuation starts from (sweep/method/accentuate.py), a file pinned to its bytes on validation.
Accentuate = Annotated[Text, AfterValidator(pin_accentuate)]
#: MACO's folder of natural images, pinned to a hash of its listing on validation.
Spectrum = Annotated[Text, AfterValidator(pin_spectrum)]

#: Fields added after the paper's recipe, with the value that means "as the paper": left out of
#: `identity` at that value, so every hash made before the choice existed still names the same images.
PAPER_CHOICES = {"param": "pixel", "objective": "unit", "position": None, "direction": None, "negative": False,
                 "diversity": 1, "accentuate": None, "spectrum": None}


@config_dataclass
class Recipe:
    """Knobs of one visualization (see ../shared/reference/paper-method.md, section 1).

    steps: cosine-schedule length T; the loop runs steps + 1 iterations (the paper: 400 -> 401).
    lr: Adam learning rate; None means the family's default (see `defaults`).
    tv: the paper's `-v` multiplier; the TV coefficient is tv_base * tv (0.0005 * v); None means the
        family's default.
    defaults: where lr and tv left at None come from: "tuned" (the family's tuned values stored with
        the registry, sweep/method/tuned_recipes.json, else the paper's), "paper" (always the
        paper's: lr 0.1 for ViTs, 1.0 for CLIP; tv 1) or "best" (the family's best measured method
        at each depth, sweep/method/by_depth.py: parametrization, site, lr and tv; tuned where the
        family has none).
    reference_scale: the paper's loss -sum(a)/copies**2 (an accidental extra 1/copies from `.diag()`
        on a 1-D tensor, which weights TV `copies` times more); False uses -mean(a).
    image_size: side of the optimized image; None means the model's input size.
    param: what is optimized (sweep/method/param.py): pixel (the paper's raw pixels), fourier (a
        1/f-scaled spectrum with decorrelated colour, param_fourier.py) or maco (the phase of the
        shipped photos' mean magnitude spectrum, param_maco.py).
    spectrum: maco's natural images: a folder (any fsspec URL), pinned to a hash of its listing;
        None: the 15 photos the project ships.
    objective: what is raised (sweep/method/objective.py): unit (the paper's: the unit's mean over
        patch tokens), neuron (the unit at one `position`: a patch token index, default the centre
        patch) or direction (feature i is row i of `direction`).
    direction: `A-B` (unit A minus unit B) or a .npy file of (width,) or (N, width) directions;
        only with objective direction.
    negative: minimize the objective instead (the unit's most negative image).
    diversity: images per feature, optimized together with a penalty on the similarity of their
        Gram matrices (sweep/method/objective_diversity.py); 1 = one image, the paper's.
    diversity_weight: the penalty's weight, in units of the feature's activation (0.3: on the test
        model it takes 4 images' Gram similarity from 0.44 without it to 0.28, each image still rising).
    accentuate: start every feature's image from this photo (a file or URL, or photo:NAME) and keep
        the site's pooled features near the photo's (sweep/method/accentuate.py); pixel only.
    accentuate_weight: that penalty's weight, in units of the feature's activation.
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
    defaults: Literal["tuned", "paper", "best"] = "tuned"
    param: Literal["pixel", "fourier", "maco"] = "pixel"
    spectrum: Spectrum | None = None
    objective: Literal["unit", "neuron", "direction"] = "unit"
    position: NonNegativeInt | None = None
    direction: Direction | None = None
    negative: bool = False
    diversity: Count = 1
    diversity_weight: NonNegative = 0.3
    accentuate: Accentuate | None = None
    accentuate_weight: NonNegative = 1.0

    def __post_init__(self):
        if self.image_size is not None and self.image_size > MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be at most {MAX_IMAGE_SIZE}, got {self.image_size}")
        if self.position is not None and self.objective != "neuron":
            raise ValueError(f"position is for objective neuron only, not {self.objective}")
        if self.objective == "direction" and self.direction is None:
            raise ValueError("objective direction needs a direction: A-B (two unit indices) or a .npy file")
        if self.direction is not None and self.objective != "direction":
            raise ValueError(f"direction is for objective direction only, not {self.objective}")
        if self.spectrum is not None and self.param != "maco":
            raise ValueError(f"spectrum is maco's magnitude spectrum: param maco only, not {self.param}")
        if self.accentuate is not None and self.param != "pixel":
            raise ValueError(f"accentuate starts from a photo's pixels: param pixel only, not {self.param}")

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
        which no longer matters once lr and tv are filled in. Fields added since the paper's recipe
        are left out at the paper's value (`PAPER_CHOICES`), so every hash made before there was a
        choice still identifies the same images; a direction file is in by its pin (its bytes)."""
        return {k: v for k, v in self.as_dict().items()
                if k != "defaults" and not (k in PAPER_CHOICES and v == PAPER_CHOICES[k])
                and not (k == "diversity_weight" and self.diversity == 1)
                and not (k == "accentuate_weight" and self.accentuate is None)}

    @property
    def method(self) -> str:
        """The method in a few words, for rows and pages: `pixel unit`, `maco neuron@12`, `pixel -direction`."""
        what = self.objective
        if self.objective == "neuron":
            what += f"@{'centre' if self.position is None else self.position}"
        elif self.objective == "direction":
            from sweep.models.build import split_pin

            path, pin = split_pin(self.direction)
            what += f":{path.rsplit('/', 1)[-1]}" + (f"#{pin[:8]}" if pin else "")
        many = f" x{self.diversity} diverse" if self.diversity > 1 else ""
        if self.accentuate is not None:
            from sweep.models.build import split_pin

            many += f" accentuating {split_pin(self.accentuate)[0].rsplit('/', 1)[-1]}"
        return f"{self.param} {'-' if self.negative else ''}{what}{many}"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def config_hash(payload: dict) -> str:
    """A stable short hash of a JSON-able config, to group and deduplicate results."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
