"""Does a visualization show what its unit responds to? Checks that need no human, on real weights.

For each unit: its activation on the optimized image (clean: no augmentation) against its own
initial image and against every natural photo of a reference set, and how much of it survives
random shifts of the image (torch.roll, up to the recipe's jitter, wrapping as the recipe's own
jitter does) and zooms of 0.8 to 1.2 (sweep/method/measures.py's), where the clean activation falls
among the unit's activations on a larger natural reference set (its percentile; by default the
shipped photos and their crops) and how near the model sees the image to a photo (plausibility).
Every number is measured here in fp32, whatever arithmetic rendered the image. A unit whose image
switches it on and beats every photo is said to be *visualized*; the fraction of visualized units is
the number the tuning and the quality tests report.

A unit is judged where the paper reads it (its `mlp` site, after the GELU) whatever site the image
was optimized at: an image made for `mlp_pre` (the same unit before the GELU) is scored by the same
rule as the paper's, and both record the pre-activation (`pre_final`) beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from sweep.method.engine import Engine
from sweep.method.measures import SCALES, SHIFT_SEED_OFFSET, Plausibility, zoom
from sweep.method.recipe import Recipe
from sweep.method.render import render, seeds_for
from sweep.models.anatomy import Anatomy
from sweep.work.tuning import unit_activations



@dataclass(frozen=True)
class UnitQuality:
    layer: int
    feature: int
    seed: int
    act_init: float
    act_final: float
    best_photo: str
    best_photo_act: float
    shift_ratio: float   # mean activation over random shifts / clean activation of the final image
    steps: int
    lr: float
    tv: float
    site: str = "mlp"
    pre_final: float | None = None  # mean pre-activation over patch tokens (MLP units only)
    best_photo_pre: float | None = None  # the highest pre-activation of any photo
    scale_ratio: float | None = None  # mean activation over zooms 0.8, 0.9, 1.1, 1.2 / clean activation
    percentile: float | None = None  # % of the reference images whose activation is below the image's
    references: int | None = None  # how many reference images the percentile is over
    plausibility: float | None = None  # best cosine of the image's final features to a photo's
    plausibility_reference: float | None = None  # the same for the photos themselves (mean best other)

    @property
    def switched_on(self) -> bool:
        """Whether the image turns the unit on. At a GELU or ReLU site (`mlp`, `channel`) the clean
        activation is above 0 only where the pre-activation is: an image that drives the
        pre-activation far below 0 everywhere gives about 0 (GELU's minimum is -0.17), which can be
        higher than every photo's small negative value while the unit is off (issue 28's loophole).
        Other sites are signed: always True."""
        return self.act_final > 0 if self.site in ("mlp", "mlp_pre", "channel") else True

    @property
    def beats_photos(self) -> bool:
        """Visualized: the unit is on, and more than on any photo."""
        return self.switched_on and self.act_final > self.best_photo_act

    def row(self) -> dict:
        return {**asdict(self), "switched_on": self.switched_on, "beats_photos": self.beats_photos}


def photo_batch(photos: Mapping[str, np.ndarray], size: int, resize: int, interpolation: str) -> torch.Tensor:
    """(N, 3, size, size) in [0, 1]: each photo through the model's evaluation transform."""
    from sweep.data.transforms import center_crop_batch

    return torch.from_numpy(center_crop_batch(photos.values(), size, resize, interpolation))


def shift_ratio(net: nn.Module, anatomy: Anatomy, layer: int, site: str, feature: int, image: torch.Tensor,
                clean: float, max_shift: int, draws: int, seed: int) -> float:
    """Mean activation of `image` rolled by `draws` seeded shifts in [-max_shift, max_shift] / `clean`."""
    if clean <= 0:
        return 0.0
    gen = torch.Generator().manual_seed(seed)
    shifts = torch.randint(-max_shift, max_shift + 1, (draws, 2), generator=gen).tolist()
    rolled = torch.stack([torch.roll(image, (dy, dx), dims=(1, 2)) for dy, dx in shifts])
    return float(unit_activations(net, anatomy, layer, site, [feature], rolled).mean()) / clean


def scale_ratio(net: nn.Module, anatomy: Anatomy, layer: int, site: str, feature: int, image: torch.Tensor,
                clean: float) -> float:
    """Mean activation of `image` zoomed by each of measures.SCALES about its centre / `clean`."""
    if clean <= 0:
        return 0.0
    zoomed = torch.cat([zoom(image[None], s) for s in SCALES])
    return float(unit_activations(net, anatomy, layer, site, [feature], zoomed).mean()) / clean


def percentile(value: float, reference: torch.Tensor) -> float:
    """% of `reference` activations strictly below `value` (100: above every reference image)."""
    return 100.0 * float((reference < value).float().mean())


def judged_site(site: str) -> str:
    """Where a unit optimized at `site` is judged: `mlp_pre` units as `mlp` units (after the GELU)."""
    return "mlp" if site == "mlp_pre" else site


def judge_units(net: nn.Module, anatomy: Anatomy, units: list[tuple[int, int]], recipe: Recipe,
                photos: Mapping[str, np.ndarray], site: str | None = None, base_seed: int = 0,
                shift_draws: int = 8, device: str | torch.device = "cpu",
                engine: Engine = Engine(precision="fp32", compile="off"),
                references: Mapping[str, np.ndarray] | None = None,
                plausible: bool = False) -> tuple[list[UnitQuality], torch.Tensor]:
    """Render every (layer, feature) unit with `recipe` at `site` and judge its image at
    `judged_site(site)`; also returns the images. `references` (e.g. `photo_crops()`): the natural
    images the percentile is over (None: no percentile); `plausible`: measure plausibility against
    `photos` (one pass of the photos through the whole model)."""
    from sweep.method.render import ModelInput
    from sweep.method.tuned import resolve_recipe

    site = site or anatomy.default_site
    pre = anatomy.preprocess
    refs = photo_batch(photos, pre.input_size, pre.resize_size, pre.interpolation).to(device)
    pool = None if references is None else photo_batch(references, pre.input_size, pre.resize_size,
                                                       pre.interpolation).to(device)
    plausibility = Plausibility(net, anatomy, photos, ModelInput(anatomy), device) if plausible else None
    names = list(photos)
    resolved, _ = resolve_recipe(recipe, anatomy.entry, pre.input_size)
    out, images = [], []
    for layer in sorted({layer for layer, _ in units}):
        feats = [f for l, f in units if l == layer]
        seeds = seeds_for(feats, base_seed)
        made = render(net, anatomy, anatomy.block(layer), site, feats, recipe, seeds, device, engine=engine)
        at = judged_site(site)
        final = made.images.to(device)

        def clean(where: str, batch: torch.Tensor) -> torch.Tensor:  # fp32, image i for feature i
            return unit_activations(net, anatomy, layer, where, feats, batch).diagonal().cpu()

        acts, inits = clean(at, final), clean(at, made.initial.to(device))
        on_photos = unit_activations(net, anatomy, layer, at, feats, refs).cpu()
        on_pool = None if pool is None else unit_activations(net, anatomy, layer, at, feats, pool).cpu()
        mlp = at == "mlp" and "mlp_pre" in anatomy.block(layer).sites
        pres = clean("mlp_pre", final) if mlp else None
        pre_photos = unit_activations(net, anatomy, layer, "mlp_pre", feats, refs).amax(0).cpu() if mlp else None
        plaus = None if plausibility is None else plausibility(final)
        for i, f in enumerate(feats):
            best = int(on_photos[:, i].argmax())
            act = float(acts[i])
            ratio = shift_ratio(net, anatomy, layer, at, f, final[i], act, resolved.jitter,
                                shift_draws, base_seed + f + SHIFT_SEED_OFFSET)
            out.append(UnitQuality(
                layer, f, seeds[i], float(inits[i]), act, names[best], float(on_photos[best, i]), ratio,
                resolved.steps, float(resolved.lr), float(resolved.tv), site,
                None if pres is None else float(pres[i]), None if pre_photos is None else float(pre_photos[i]),
                scale_ratio(net, anatomy, layer, at, f, final[i], act),
                None if on_pool is None else percentile(act, on_pool[:, i]),
                None if on_pool is None else len(on_pool),
                None if plaus is None else float(plaus[i]),
                None if plausibility is None else plausibility.reference))
            images.append(made.images[i])
    return out, torch.stack(images)
