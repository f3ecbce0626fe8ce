"""Recipe defaults per model family: the paper's, or tuned ones stored with the registry.

`tuned_recipes.json` beside this file maps a family to the lr and TV multiplier that won a tuning
grid (`sweep tune ... --promote`), with where they came from (model, grid, score, date, results).
A family without an entry keeps the paper's values (lr 0.1, or 1.0 for CLIP; TV multiplier 1), and
`Recipe(defaults="paper")` (`--recipe paper`) ignores the file altogether. A family's entry may also
hold its best measured method per depth (`by_depth`, sweep/method/by_depth.py), which only
`Recipe(defaults="best")` (`--recipe best`) uses.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sweep.core.errors import SweepError
from sweep.method.recipe import Recipe
from sweep.models.zoo import FAMILIES, ModelEntry

TUNED_PATH = Path(__file__).with_name("tuned_recipes.json")
PAPER_TV = 1.0


@dataclass(frozen=True)
class FamilyDefaults:
    """lr and TV multiplier for a family, and where they come from ("paper" or "tuned ...")."""

    lr: float
    tv: float
    source: str


def load_tuned(path: Path | str | None = None) -> dict:
    """The stored tuned defaults, {family: {"lr", "tv", "provenance"}}; {} when there are none."""
    path = Path(path or TUNED_PATH)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SweepError(f"cannot read tuned recipe defaults {str(path)!r}: {exc}") from None
    if not isinstance(data, dict):
        raise SweepError(f"tuned recipe defaults {str(path)!r} must map families to settings")
    return data


def family_defaults(entry: ModelEntry, which: str = "tuned", path: Path | str | None = None) -> FamilyDefaults:
    """The defaults a recipe of `entry` starts from: tuned where stored (and asked for), else the paper's."""
    if which in ("tuned", "best"):  # best: lr and tv per depth are filled in by by_depth.pick_method
        tuned = load_tuned(path).get(entry.family)
        if tuned and "lr" in tuned and "tv" in tuned:
            prov = tuned.get("provenance", {})
            return FamilyDefaults(float(tuned["lr"]), float(tuned["tv"]),
                                  f"tuned:{entry.family} {prov.get('date', '?')} on {prov.get('model', '?')}")
    return FamilyDefaults(entry.lr, PAPER_TV, "paper")


def resolve_recipe(recipe: Recipe, entry: ModelEntry, image_size: int,
                   path: Path | str | None = None) -> tuple[Recipe, str]:
    """The recipe with lr, TV and image size filled in, and the source of what was filled in.

    Values the user gave win; the source is "given" when nothing came from defaults, and names the
    family's promoted methods for a recipe `by_depth.pick_method` filled in (defaults "best").
    """
    if recipe.lr is not None and recipe.tv is not None:  # nothing to fill in: no registry lookup
        if recipe.defaults == "best":
            best = load_tuned(path).get(entry.family, {}).get("by_depth")
            if best:
                prov = best.get("provenance", {})
                return (recipe.resolved(recipe.lr, image_size, recipe.tv),
                        f"best:{entry.family} {prov.get('date', '?')} on {prov.get('model', '?')}")
        return recipe.resolved(recipe.lr, image_size, recipe.tv), "given"
    defaults = family_defaults(entry, recipe.defaults, path)
    return recipe.resolved(defaults.lr, image_size, defaults.tv), defaults.source


def promote(family: str, lr: float, tv: float, provenance: dict, path: Path | str | None = None) -> Path:
    """Store (lr, tv) as `family`'s tuned defaults, with provenance; written atomically (the family's
    other entries, its methods by depth, are kept)."""
    return update_family(family, {"lr": float(lr), "tv": float(tv),
                                  "provenance": {"date": dt.date.today().isoformat(), **provenance}}, path)


def update_family(family: str, values: dict, path: Path | str | None = None) -> Path:
    """Merge `values` into `family`'s entry of the tuned file, written atomically."""
    if family not in FAMILIES:
        raise SweepError(f"unknown family {family!r}; allowed: {', '.join(FAMILIES)}")
    path = Path(path or TUNED_PATH)
    data = load_tuned(path)
    data[family] = {**data.get(family, {}), **values}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tuned-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)
    return path
