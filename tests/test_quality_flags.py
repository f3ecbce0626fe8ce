"""The quality judgement's loophole check (issue 28): an image that switches a GELU unit off is never
counted as visualized, however far the photos' own values are below its ~0."""

from sweep.work.quality import UnitQuality


def unit(act_final: float, best_photo_act: float, site: str = "mlp") -> UnitQuality:
    return UnitQuality(9, 1242, 1242, -0.079, act_final, "moon", best_photo_act, 0.0, 60, 0.1, 1.0, site)


def test_a_unit_switched_off_is_not_a_win():
    # measured on demo/dinov2-vits14 block 9 unit 1242, pixel recipe, 60 steps: final -0.007, moon -0.040
    assert not unit(-0.007, -0.040).switched_on and not unit(-0.007, -0.040).beats_photos
    assert not unit(0.0, -0.007).beats_photos
    assert unit(1.669, 0.115).beats_photos and unit(1.669, 0.115).row()["switched_on"]
    assert not unit(0.05, 0.115).beats_photos  # on, but below a photo
    assert unit(-0.5, -0.9, site="q").beats_photos  # a signed site has no "off"


def test_judge_measures_every_image_in_fp32_against_its_references():
    """The judge's numbers on a random-weight ViT: the clean activation is re-measured in fp32 whatever
    rendered the image (here bf16 autocast), the percentile is over the reference images, the zoom
    and plausibility measures are filled in."""
    import numpy as np
    import torch

    from sweep.method.engine import Engine
    from sweep.method.recipe import Recipe
    from sweep.models.anatomy import anatomy_of
    from sweep.models.build import build
    from sweep.work.quality import judge_units, photo_batch
    from sweep.work.tuning import unit_activations

    torch.manual_seed(0)
    anatomy = anatomy_of("dev/vit-micro")
    net = build(anatomy.entry, "random")
    gen = np.random.default_rng(3)
    photos = {f"p{i}": gen.integers(0, 256, (40, 48, 3), dtype=np.uint8) for i in range(3)}
    references = {f"r{i}": gen.integers(0, 256, (36, 36, 3), dtype=np.uint8) for i in range(7)}
    units = [(0, 1), (0, 5), (1, 2)]
    out, images = judge_units(net, anatomy, units, Recipe(steps=2, defaults="paper"), photos,
                              engine=Engine(precision="bf16", compile="off"), references=references,
                              plausible=True)
    pre = anatomy.preprocess
    pool = photo_batch(references, pre.input_size, pre.resize_size, pre.interpolation)
    assert [(q.layer, q.feature) for q in out] == units
    for q, image in zip(out, images):
        clean = float(unit_activations(net, anatomy, q.layer, "mlp", [q.feature], image[None])[0, 0])
        assert abs(q.act_final - clean) < 1e-5  # fp32, on the returned image
        on_pool = unit_activations(net, anatomy, q.layer, "mlp", [q.feature], pool)[:, 0]
        assert q.references == 7 and q.percentile == 100.0 * float((on_pool < clean).float().mean())
        assert q.pre_final is not None and q.best_photo_pre is not None
        assert np.isfinite(q.scale_ratio) and (q.scale_ratio == 0.0) == (clean <= 0)
        assert -1.0 <= q.plausibility <= 1.0 + 1e-6 and -1.0 <= q.plausibility_reference <= 1.0 + 1e-6
    bare, _ = judge_units(net, anatomy, units[:1], Recipe(steps=2, defaults="paper"), photos)
    assert bare[0].percentile is None and bare[0].plausibility is None  # only when asked for
