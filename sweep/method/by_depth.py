"""The best measured method per depth of a model family, promoted from the method benchmark.

No one method wins at every depth (issue 28's benchmark on the trained ViT-S/14: raw pixels win the
first blocks, MACO's phase at the unit before its GELU the deeper ones), so a family's entry in
`tuned_recipes.json` may hold `by_depth`: a few depth ranges, each with a parametrization, a site,
lr and TV, and where they were measured. `--recipe best` (`Recipe(defaults="best")`) renders each
block with the method of its range: `pick_method` is what the sweep's plan and `sweep visualize`
call per block, so a batch always holds one concrete recipe and site (its rows and config hash are
those of the same method given by hand).

Depth is relative (block index / number of blocks, 0 to <1), so a range measured on a 12-block model
applies to the family's 24-block ones at the same relative depth.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from sweep.core.errors import SweepError
from sweep.method.recipe import Recipe
from sweep.method.tuned import load_tuned, update_family
from sweep.models.anatomy import Anatomy, Block
from sweep.models.zoo import ModelEntry

PARAMS = ("pixel", "fourier", "maco")


@dataclass(frozen=True)
class DepthMethod:
    """The method for blocks from relative depth `start` on (until the next range's start)."""

    start: float
    param: str
    site: str
    lr: float
    tv: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def family_methods(entry: ModelEntry, path: Path | str | None = None) -> tuple[DepthMethod, ...]:
    """The family's promoted methods by depth, first range first; () when it has none."""
    stored = load_tuned(path).get(entry.family, {}).get("by_depth")
    if not stored:
        return ()
    try:
        methods = tuple(sorted((DepthMethod(float(m["start"]), str(m["param"]), str(m["site"]), float(m["lr"]),
                                            float(m["tv"])) for m in stored["methods"]), key=lambda m: m.start))
    except (KeyError, TypeError, ValueError) as exc:
        raise SweepError(f"tuned recipe defaults: {entry.family}'s by_depth is malformed ({exc!r})") from None
    if not methods or methods[0].start != 0.0 or any(m.param not in PARAMS for m in methods):
        raise SweepError(f"tuned recipe defaults: {entry.family}'s by_depth must start at depth 0 with params "
                         f"among {', '.join(PARAMS)}")
    return methods


def method_at(methods: Sequence[DepthMethod], index: int, blocks: int) -> DepthMethod:
    """The method of block `index` of `blocks`: the last range starting at or before its depth."""
    depth = index / blocks
    return [m for m in methods if m.start <= depth + 1e-9][-1]


def pick_method(recipe: Recipe, site: str | None, anatomy: Anatomy, block: Block,
                path: Path | str | None = None) -> tuple[str, Recipe]:
    """The (site, recipe) block `block` is rendered with. Only `defaults="best"` changes anything:
    the parametrization always, the site where none was given (and the block has it), lr and tv
    where not given. A family with no promoted methods keeps the recipe (tuned lr and tv)."""
    default = site or anatomy.default_site
    if recipe.defaults != "best":
        return default, recipe
    methods = family_methods(anatomy.entry, path)
    if not methods:
        return default, recipe
    if recipe.param != "pixel":
        raise SweepError(f"recipe best picks the parametrization per depth ({anatomy.entry.family}: "
                         f"{describe(methods)}); leave param out, or use recipe tuned with param {recipe.param}")
    m = method_at(methods, block.index, len(anatomy.blocks))
    chosen = site or (m.site if m.site in block.sites else anatomy.default_site)
    try:
        return chosen, dataclasses.replace(recipe, param=m.param, lr=m.lr if recipe.lr is None else recipe.lr,
                                           tv=m.tv if recipe.tv is None else recipe.tv)
    except (ValueError, SweepError) as exc:
        raise SweepError(f"recipe best picks param {m.param} at block {block.index} of {anatomy.entry.key}, "
                         f"which this recipe cannot take: {exc}") from None


def describe(methods: Sequence[DepthMethod]) -> str:
    """`pixel at mlp from depth 0, maco at mlp_pre from 0.25`."""
    return ", ".join(f"{m.param} at {m.site} (lr {m.lr:g}) from {'depth ' if i == 0 else ''}{m.start:.3g}"
                     for i, m in enumerate(methods))


def split_by_depth(scores: Mapping[str, Sequence[tuple[float, float]]]) -> tuple[tuple[int, str], ...]:
    """The best one- or two-range choice of methods over a model's blocks: `scores[label][block]` is
    (units visualized, median percentile). Returns ((0, A),) or ((0, A), (switch, B)): A on the
    blocks before `switch`, B from it on, maximizing the units visualized in all (then the median
    percentile summed over blocks, then the method listed first); a split only where it visualizes
    more units than any one method. Two ranges at most: with 8 units a block, a per-block winner
    would follow noise."""
    labels = list(scores)
    blocks = {len(v) for v in scores.values()}
    if len(blocks) != 1 or not labels:
        raise SweepError("split_by_depth: every method needs a score for every block")
    n = blocks.pop()

    def total(label: str, lo: int, hi: int) -> tuple[float, float]:
        part = scores[label][lo:hi]
        return sum(v for v, _ in part), sum(p for _, p in part)

    single = max(((total(a, 0, n), -i, ((0, a),)) for i, a in enumerate(labels)), key=lambda t: t[:2])
    split = max((((va + vb, pa + pb), -i, ((0, a), (cut, b)))
                 for i, a in enumerate(labels) for b in labels if b != a for cut in range(1, n)
                 for (va, pa), (vb, pb) in [(total(a, 0, cut), total(b, cut, n))]),
                key=lambda t: t[:2], default=None)
    best = split if split is not None and split[0][0] > single[0][0] else single
    return best[2]


def promote_methods(family: str, methods: Sequence[DepthMethod], provenance: dict,
                    path: Path | str | None = None) -> Path:
    """Store `methods` as `family`'s best methods by depth, with provenance (atomic; lr and tv kept)."""
    if not methods or methods[0].start != 0.0:
        raise SweepError("promote: the methods by depth must start at depth 0")
    return update_family(family, {"by_depth": {
        "methods": [m.as_dict() for m in methods],
        "provenance": {"date": dt.date.today().isoformat(), **provenance}}}, path)
