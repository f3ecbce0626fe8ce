"""Parametrizations (sweep/method/param.py): each gives valid images in range, one per feature from
its own parameters (batched equals one at a time), seeded; the paper's `pixel` keeps every hash made
before there was a choice; `fourier`'s colour matrix is what the shipped photos give."""

import numpy as np
import pytest
import torch

from sweep.method.param import PARAMS, feature_generators, parametrization
from sweep.method.param_fourier import COLOR_SQRT, Fourier, frequencies
from sweep.method.recipe import Recipe


@pytest.mark.parametrize("name", PARAMS)
def test_images_are_in_range_seeded_and_per_feature(name):
    param = parametrization(name)
    p = param.init(feature_generators([3, 4, 5]), 24)
    images = param.image(p)
    assert images.shape == (3, 3, 24, 24) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(p, param.init(feature_generators([3, 4, 5]), 24))  # the seeds decide, nothing else
    alone = param.image(param.init(feature_generators([4]), 24))
    torch.testing.assert_close(alone[0], images[1])  # feature 4's image does not depend on its batch-mates
    p = p.clone().requires_grad_(True)
    param.image(p)[1].sum().backward()
    assert p.grad[1].abs().sum() > 0 and p.grad[0].abs().sum() == 0 and p.grad[2].abs().sum() == 0


def test_fourier_scales_low_frequencies_up_and_stays_in_range_when_pushed():
    param = Fourier()
    scale = param.scale(32, torch.device("cpu"))
    assert scale[0, 0] == 32 and scale[0, 1] == pytest.approx(32) and scale[16, 16] == pytest.approx(1 / 0.5 ** 0.5 * 1)
    assert frequencies(32).shape == (32, 17)
    big = param.init(feature_generators([0]), 32) * 1e4
    image = param.image(big)
    assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1


def test_fourier_colour_matrix_is_the_photos_covariance_root():
    pytest.importorskip("skimage")
    from sweep.data.photos import photos

    px = np.concatenate([a.reshape(-1, 3).astype(np.float64) / 255.0 for a in photos().values()])
    w, v = np.linalg.eigh(np.cov(px.T))
    root = v @ np.diag(np.sqrt(w)) @ v.T
    root /= np.linalg.norm(root, axis=0).max()
    np.testing.assert_allclose(COLOR_SQRT.numpy(), root, atol=1e-4)


def test_pixel_keeps_old_hashes_and_others_change_them():
    assert "param" not in Recipe().identity()
    assert Recipe(param="fourier").identity()["param"] == "fourier"
    with pytest.raises(ValueError):
        Recipe(param="maco-typo")


@pytest.mark.parametrize("name", ["fourier", "maco"])
def test_render_is_batched_like_one_at_a_time(name):
    """The whole render (augmentation, objective, loop) with each spectral parametrization: two
    features together give the images and activations each gives alone, in range."""
    if name == "maco":
        pytest.importorskip("skimage")
    from sweep.method.engine import Engine
    from sweep.method.render import render
    from sweep.models.anatomy import anatomy_of
    from sweep.models.build import build

    anatomy = anatomy_of("dev/vit-micro")
    net = build(anatomy.entry, "random")
    block = anatomy.block(1)
    recipe = Recipe(steps=3, copies=2, jitter=2, param=name, lr=0.05, tv=1.0)
    engine = Engine(precision="fp32", compile="off", features_per_pass=1)
    both = render(net, anatomy, block, "mlp", [0, 5], recipe, [0, 5], "cpu", engine=engine)
    alone = render(net, anatomy, block, "mlp", [5], recipe, [5], "cpu", engine=engine)
    assert both.images.min() >= 0 and both.images.max() <= 1
    torch.testing.assert_close(both.images[1], alone.images[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(both.act_final[1], alone.act_final[0], atol=1e-5, rtol=1e-4)
    assert not torch.equal(both.images[0], both.images[1])


def test_cli_records_the_parametrization_and_keeps_roots_apart(tmp_path, capsys):
    """`--param fourier` is in every row and in the visualization hash: the same features made with
    pixels into the same root are refused as a different recipe (the root never mixes them)."""
    from sweep.cli import main
    from sweep.store.results import Results

    base = ["visualize", "--model", "dev/vit-micro", "--weights", "random", "--layer", "1", "--feature", "0", "3",
            "--steps", "2", "--jitter", "2", "--quiet", "--out", str(tmp_path)]
    assert main([*base, "--param", "fourier"]) == 0
    rows = Results(str(tmp_path)).features()
    assert len(rows) == 2 and set(rows["param"]) == {"fourier"} and (rows["status"] == "ok").all()
    assert main([*base, "--param", "pixel"]) == 2
    assert "different recipe" in capsys.readouterr().err
    assert main([*base[:-1], str(tmp_path / "pixels")]) == 0
    pixels = Results(str(tmp_path / "pixels")).features()
    assert set(pixels["param"]) == {"pixel"} and set(pixels["config_hash"]).isdisjoint(rows["config_hash"])


def test_maco_keeps_the_natural_magnitude_spectrum():
    """Only the phase moves: after any change of the phases the image's spectrum has the photos'
    magnitude (the columns irfft2 keeps as they are: all but the real-valued first and last)."""
    pytest.importorskip("skimage")
    from sweep.method.param_maco import Maco, spectrum_hash

    param = Maco()
    phase = param.init(feature_generators([1, 2]), 32) + 0.3 * torch.randn(2, 3, 32, 17)
    spectrum = torch.fft.rfft2(param.raw(phase), norm="ortho").abs()
    natural = param.spectrum(32, torch.device("cpu"))
    torch.testing.assert_close(spectrum[..., 1:-1], natural.expand_as(spectrum)[..., 1:-1], atol=1e-5, rtol=1e-4)
    assert natural[:, 1, 1].mean() > natural[:, 8, 8].mean() > natural[:, 16, 16].mean()  # natural images' 1/f fall
    assert spectrum_hash(natural) == spectrum_hash(Maco().spectrum(32, torch.device("cpu")))


def test_maco_spectrum_from_a_folder_is_pinned_and_kept(tmp_path):
    """A user's folder gives its own mean magnitude spectrum (the images keep it), pinned to its listing:
    another image in the folder is another pin, hence another config hash."""
    from PIL import Image

    from sweep.core.errors import SweepError
    from sweep.method.param_maco import Maco, magnitude

    rng = np.random.default_rng(0)
    folder = tmp_path / "natural"
    folder.mkdir()
    for i in range(3):  # smooth images: low frequencies dominate
        noise = rng.normal(size=(8, 8, 3)).cumsum(0).cumsum(1)
        arr = ((noise - noise.min()) / np.ptp(noise) * 255).astype(np.uint8)
        Image.fromarray(arr).resize((40, 30)).save(folder / f"{i}.png")
    recipe = Recipe(param="maco", spectrum=str(folder))
    assert recipe.spectrum.startswith(str(folder) + "#sha256=") and "spectrum" in recipe.identity()
    param = Maco(recipe.spectrum)
    natural = param.spectrum(16, torch.device("cpu"))
    torch.testing.assert_close(natural, magnitude(16, recipe.spectrum))
    phase = param.init(feature_generators([4]), 16)
    spectrum = torch.fft.rfft2(param.raw(phase), norm="ortho").abs()
    torch.testing.assert_close(spectrum[..., 1:-1], natural.expand_as(spectrum)[..., 1:-1], atol=1e-5, rtol=1e-4)
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(folder / "3.png")
    assert Recipe(param="maco", spectrum=str(folder)).spectrum != recipe.spectrum
    for kwargs, words in ((dict(param="maco", spectrum=str(tmp_path / "none")), "not a folder"),
                          (dict(param="pixel", spectrum=str(folder)), "param maco only")):
        with pytest.raises((SweepError, ValueError), match=words):
            Recipe(**kwargs)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SweepError, match="holds no images"):
        Recipe(param="maco", spectrum=str(tmp_path / "empty"))
