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
