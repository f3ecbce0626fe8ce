"""The recipe on real, trained weights (the packaged ViT-S/14), judged without a human.

A fixed seeded sample of units (the sweep's own `sample` selection, seed 0, two per block) in an
early and a middle block is rendered with the recipe (30 steps on CPU instead of 400) and:
  - every unit's final image excites it more than each of scikit-image's 15 natural photos does,
  - and more than its own initial image does,
  - the activation of the final image under 8 random shifts (up to the recipe's 32 px jitter)
    keeps at least SHIFT_FLOOR of the clean one on average.
Measured values (2-core CPU, `benchmarks/demo_quality.py --layers 1 4 --count 2 --steps 30`) are in
benchmarks/results/2026-12-06-demo-quality-cpu.csv (label test-config).
"""

import pytest
import torch

from sweep.data.photos import photos
from sweep.method.recipe import Recipe
from sweep.models.anatomy import anatomy_of
from sweep.models.build import build
from sweep.work.plan import DEMO_MODEL, FeatureSelection
from sweep.work.quality import judge_units

LAYERS = (1, 4)
STEPS = 30
#: Floor of (mean activation over shifts) / (clean activation); measured minimum: see the module docstring.
SHIFT_FLOOR = 0.5


@pytest.fixture(scope="module")
def judged():
    anatomy = anatomy_of(DEMO_MODEL)
    net = build(anatomy.entry, "pretrained")
    pick = FeatureSelection(mode="sample", count=2, seed=0)
    units = [(layer, f) for layer in LAYERS for f in pick.pick(anatomy.block(layer).width("mlp"), DEMO_MODEL, layer)]
    out, images = judge_units(net, anatomy, units, Recipe(steps=STEPS), photos())
    return out, images


def test_images_beat_every_natural_photo(judged):
    quality, _ = judged
    assert len(quality) == 4 and {q.layer for q in quality} == set(LAYERS)
    for q in quality:
        assert q.act_final > q.best_photo_act, q  # beats every photo, the best of them included


def test_images_beat_their_initial_image(judged):
    for q in judged[0]:
        assert q.act_final > q.act_init, q


def test_activation_survives_random_shifts(judged):
    for q in judged[0]:
        assert q.shift_ratio >= SHIFT_FLOOR, q


def test_images_are_images(judged):
    _, images = judged
    assert images.shape == (4, 3, 224, 224) and torch.isfinite(images).all()
    assert 0 <= float(images.min()) and float(images.max()) <= 1 and float(images.std()) > 0.05
