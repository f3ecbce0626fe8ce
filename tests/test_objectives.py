"""Objectives (sweep/method/objective.py): the paper's unit, the same unit before its GELU
(`mlp_pre`), one position (neuron), directions (a file or A-B) and negative. Each is batched like
one at a time, seeded, in every row's hash only when chosen; a planted direction is recovered; bad
specs are one line."""

import numpy as np
import pytest
import torch

from sweep.core.errors import SweepError
from sweep.method.engine import Engine
from sweep.method.objective import at_position, objective_for
from sweep.method.recipe import Recipe
from sweep.method.render import ModelInput, render
from sweep.models.anatomy import anatomy_of
from sweep.models.build import build
from sweep.models.taps import read_sites

EXACT = Engine(precision="fp32", compile="off", features_per_pass=1)


@pytest.fixture(scope="module")
def micro():
    anatomy = anatomy_of("dev/vit-micro")
    return anatomy, build(anatomy.entry, "random")


def site_tensor(net, anatomy, layer, site, images):
    return read_sites(net, [(anatomy.block(layer), site)], ModelInput(anatomy)(images), reduce=False)[0]


def test_mlp_pre_is_the_unit_before_its_gelu(micro):
    anatomy, net = micro
    block = anatomy.block(1)
    assert block.sites["mlp_pre"].module == block.sites["mlp"].module and block.width("mlp_pre") == block.width("mlp")
    x = torch.rand(2, 3, anatomy.preprocess.input_size, anatomy.preprocess.input_size)
    post, pre = (site_tensor(net, anatomy, 1, s, x) for s in ("mlp", "mlp_pre"))
    torch.testing.assert_close(torch.nn.functional.gelu(pre), post)


def test_identity_keeps_old_hashes_and_new_choices_change_them(tmp_path):
    old = Recipe().identity()
    assert Recipe(objective="unit", negative=False).identity() == old
    assert Recipe(negative=True).identity() != old
    assert Recipe(objective="neuron").identity() != Recipe(objective="neuron", position=3).identity()
    path = tmp_path / "d.npy"
    np.save(path, np.ones((2, 8)))
    a = Recipe(objective="direction", direction=str(path))
    np.save(path, np.full((2, 8), 2.0))
    b = Recipe(objective="direction", direction=str(path))
    assert a.direction != b.direction and a.identity() != b.identity()  # pinned to the bytes
    assert a.method.startswith("pixel direction:d.npy#") and Recipe(negative=True).method == "pixel -unit"


@pytest.mark.parametrize("spec", [dict(objective="neuron", position=2), dict(objective="neuron"),
                                  dict(objective="direction", direction="3-7"), dict(negative=True),
                                  dict(objective="unit", param="fourier", negative=True)])
def test_batched_equals_one_at_a_time(micro, spec):
    anatomy, net = micro
    recipe = Recipe(steps=3, copies=2, jitter=2, lr=0.05, tv=1.0, **spec)
    feats = [0] if spec.get("direction") else [1, 5]
    many = feats if len(feats) > 1 else [0, 0]
    both = render(net, anatomy, anatomy.block(1), "mlp", many, recipe, [11, 15], "cpu", engine=EXACT)
    alone = render(net, anatomy, anatomy.block(1), "mlp", [many[1]], recipe, [15], "cpu", engine=EXACT)
    torch.testing.assert_close(both.images[1], alone.images[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(both.act_final[1], alone.act_final[0], atol=1e-5, rtol=1e-4)
    per_pass = render(net, anatomy, anatomy.block(1), "mlp", many, recipe, [11, 15], "cpu",
                      engine=Engine(precision="fp32", compile="off", features_per_pass=2))
    torch.testing.assert_close(per_pass.images, both.images, atol=1e-5, rtol=1e-4)
    assert both.images.min() >= 0 and both.images.max() <= 1


def test_readouts_are_what_they_say(micro, tmp_path):
    """Clean activations the render records equal the objective computed by hand from the site's tensor."""
    anatomy, net = micro
    block = anatomy.block(1)
    rows = np.random.default_rng(0).normal(size=(3, block.width("mlp")))
    np.save(tmp_path / "dirs.npy", rows)
    cases = [(Recipe(steps=1, objective="neuron", position=4), [2], lambda t: at_position(t, block, 4)[:, 2]),
             (Recipe(steps=1, objective="direction", direction="2-6"), [0],
              lambda t: t[:, block.prefix_tokens:].mean(1)[:, 2] - t[:, block.prefix_tokens:].mean(1)[:, 6]),
             (Recipe(steps=1, objective="direction", direction=str(tmp_path / "dirs.npy")), [1],
              lambda t: t[:, block.prefix_tokens:].mean(1).double() @ torch.from_numpy(rows[1]))]
    for recipe, feats, by_hand in cases:
        made = render(net, anatomy, block, "mlp", feats, recipe, [3], "cpu", engine=EXACT)
        t = site_tensor(net, anatomy, 1, "mlp", made.images)
        assert float(made.act_final[0]) == pytest.approx(float(by_hand(t)[0]), rel=1e-4, abs=1e-5)


def test_negative_lowers_and_positive_raises(micro):
    anatomy, net = micro
    base = dict(steps=8, copies=1, jitter=0, color_mean=0.0, color_std=0.0, offset_std=0.0, lr=0.05, tv=0.0)
    up = render(net, anatomy, anatomy.block(1), "mlp_pre", [3], Recipe(**base), [3], "cpu", engine=EXACT)
    down = render(net, anatomy, anatomy.block(1), "mlp_pre", [3], Recipe(negative=True, **base), [3], "cpu",
                  engine=EXACT)
    assert up.act_init[0] == down.act_init[0]  # the same seed, the same start
    assert up.act_final[0] > up.act_init[0] and down.act_final[0] < down.act_init[0]


def test_a_planted_direction_is_recovered(micro, tmp_path):
    """Optimizing a direction made from unit 4 of the site (plus noise on others, scaled small)
    raises unit 4 far more than optimizing a random direction does."""
    anatomy, net = micro
    block = anatomy.block(1)
    width = block.width("mlp_pre")
    rng = np.random.default_rng(1)
    planted = np.zeros((2, width))
    planted[0, 4] = 1.0
    planted[0] += 0.05 * rng.normal(size=width)
    planted[1] = rng.normal(size=width) / np.sqrt(width)
    np.save(tmp_path / "p.npy", planted)
    recipe = Recipe(steps=12, copies=1, jitter=0, color_mean=0.0, color_std=0.0, offset_std=0.0, lr=0.05, tv=0.0,
                    objective="direction",
                    direction=str(tmp_path / "p.npy"))
    made = render(net, anatomy, block, "mlp_pre", [0, 1], recipe, [9, 9], "cpu", engine=EXACT)
    unit4 = site_tensor(net, anatomy, 1, "mlp_pre", made.images)[:, block.prefix_tokens:].mean(1)[:, 4]
    assert float(unit4[0]) > float(unit4[1]) + 0.1
    ranks = site_tensor(net, anatomy, 1, "mlp_pre", made.images[:1])[:, block.prefix_tokens:].mean(1)[0]
    initial = site_tensor(net, anatomy, 1, "mlp_pre", made.initial[:1])[:, block.prefix_tokens:].mean(1)[0]
    assert int((ranks - initial).argmax()) == 4  # of every unit, the planted one rose most


@pytest.mark.parametrize("kwargs, words", [
    (dict(position=3), "position is for objective neuron only"),
    (dict(objective="direction"), "objective direction needs a direction"),
    (dict(objective="direction", direction="4-4"), "minus itself"),
    (dict(objective="direction", direction="a.txt"), "neither A-B nor a .npy"),
    (dict(objective="direction", direction="missing.npy"), "cannot read recipe direction"),
    (dict(objective="direction", direction="x.npy#sha256=XYZ"), "malformed pin"),
    (dict(objective="nope"), "objective"),
])
def test_bad_specs_are_one_line(kwargs, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises((SweepError, ValueError)) as err:
        Recipe(**kwargs)
    assert words in str(err.value)


@pytest.mark.parametrize("content, words", [
    (b"not numpy", "not a readable .npy"),
    ("object", "not a readable .npy"),
    ("3d", "shape (2, 2, 2)"),
    ("nan", "NaN or infinite"),
    ("zero", "row 1 is all zeros"),
    ("wide", "has 5 columns"),
])
def test_bad_direction_files_are_one_line(content, words, micro, tmp_path):
    anatomy, _net = micro
    path = tmp_path / "d.npy"
    arrays = {"object": np.array([{"a": 1}], dtype=object), "3d": np.ones((2, 2, 2)),
              "nan": np.array([1.0, np.nan]), "zero": np.array([[1.0] * 5, [0.0] * 5]), "wide": np.ones((1, 5))}
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, arrays[content], allow_pickle=True)
    with pytest.raises(SweepError) as err:
        objective_for(Recipe(objective="direction", direction=str(path)), anatomy.block(1), "mlp")
    assert words in str(err.value) and "\n" not in str(err.value)


def test_out_of_range_features_and_units_are_one_line(micro):
    anatomy, net = micro
    block = anatomy.block(1)
    with pytest.raises(SweepError, match="has 1 direction.s., allowed 0..0"):
        objective_for(Recipe(objective="direction", direction="1-2"), block, "mlp").check(anatomy, block, "mlp", [1])
    with pytest.raises(SweepError, match="outside the site's"):
        objective_for(Recipe(objective="direction", direction=f"1-{block.width('mlp')}"), block, "mlp")
    with pytest.raises(SweepError, match="recipe position 999 is outside"):
        render(net, anatomy, block, "mlp", [0], Recipe(steps=1, objective="neuron", position=999), [0], "cpu",
               engine=EXACT)


def test_cli_records_the_method_and_both_sides_of_the_gelu(tmp_path, capsys):
    """`sweep visualize` with a direction file and with `--site mlp_pre --negative`: every row says its
    method, objective and direction pin, the pre- and post-GELU values; the directions' rows are the features."""
    from sweep.cli import main
    from sweep.store.results import Results

    np.save(tmp_path / "dirs.npy", np.random.default_rng(0).normal(size=(2, 64)))
    base = ["visualize", "--model", "dev/vit-micro", "--weights", "random", "--layer", "1", "--steps", "2",
            "--jitter", "2", "--quiet"]
    out = tmp_path / "dirs"
    assert main([*base, "--feature", "0", "1", "--objective", "direction", "--direction", str(tmp_path / "dirs.npy"),
                 "--out", str(out)]) == 0
    rows = Results(str(out)).features().sort_values("feature")
    assert list(rows["feature"]) == [0, 1] and set(rows["objective"]) == {"direction"}
    assert rows["direction"].str.contains("#sha256=").all() and rows["method"].str.startswith("pixel direction:").all()
    assert rows["pre_final"].notna().all() and rows["post_final"].notna().all()
    assert main([*base, "--feature", "2", "--objective", "direction", "--direction", str(tmp_path / "dirs.npy"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "feature 2 out of range" in capsys.readouterr().err and not (tmp_path / "x").exists()
    out = tmp_path / "neg"
    assert main([*base, "--feature", "3", "--site", "mlp_pre", "--negative", "--out", str(out)]) == 0
    row = Results(str(out)).features().iloc[0]
    assert row["site"] == "mlp_pre" and row["negative"] and row["method"] == "pixel -unit"
    assert row["pre_final"] == row["act_final"] and row["post_final"] >= -0.17  # a mean of GELUs: >= its minimum


def mean_gram_similarity(net, anatomy, layer, site, images, k):
    from sweep.method.objective_diversity import gram_similarity

    t = site_tensor(net, anatomy, layer, site, images)
    return float(gram_similarity(t, anatomy.block(layer), k, 1).mean())


def test_diversity_images_differ_more_than_independent_seeds(micro):
    """k images of one unit: with the penalty their Gram matrices are less alike than those of the same
    k seeds optimized without it (weight 0: independent images), and each still raises the unit."""
    anatomy, net = micro
    base = dict(steps=15, copies=2, jitter=1, lr=0.05, tv=0.0, diversity=4)
    apart = render(net, anatomy, anatomy.block(1), "mlp_pre", [6], Recipe(**base), [6], "cpu", engine=EXACT)
    alone = render(net, anatomy, anatomy.block(1), "mlp_pre", [6], Recipe(diversity_weight=0.0, **base), [6],
                   "cpu", engine=EXACT)
    assert apart.variants.shape == (1, 3, 3, 32, 32) and len(apart.variant_seeds[0]) == 3
    assert apart.variant_seeds == alone.variant_seeds and apart.seeds == [6]
    group = lambda r: torch.cat([r.images, r.variants[0]])  # noqa: E731
    sim_apart = mean_gram_similarity(net, anatomy, 1, "mlp_pre", group(apart), 4)
    sim_alone = mean_gram_similarity(net, anatomy, 1, "mlp_pre", group(alone), 4)
    assert sim_apart < sim_alone - 0.1, (sim_apart, sim_alone)  # measured: 0.28 against 0.44
    assert float(apart.act_final[0]) > float(apart.act_init[0]) + 0.1  # the default weight still raises the unit


def test_diversity_batched_equals_one_at_a_time(micro):
    anatomy, net = micro
    recipe = Recipe(steps=3, copies=2, jitter=2, lr=0.05, tv=1.0, diversity=3, diversity_weight=5.0)
    both = render(net, anatomy, anatomy.block(1), "mlp", [2, 7], recipe, [2, 7], "cpu", engine=EXACT)
    alone = render(net, anatomy, anatomy.block(1), "mlp", [7], recipe, [7], "cpu", engine=EXACT)
    torch.testing.assert_close(both.images[1], alone.images[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(both.variants[1], alone.variants[0], atol=1e-5, rtol=1e-4)
    wide = render(net, anatomy, anatomy.block(1), "mlp", [2, 7], recipe, [2, 7], "cpu",
                  engine=Engine(precision="fp32", compile="off", features_per_pass=2))
    torch.testing.assert_close(wide.variants, both.variants, atol=1e-5, rtol=1e-4)
    assert Recipe(diversity=1, diversity_weight=3.0).identity() == Recipe().identity()
    assert Recipe(diversity=3).method == "pixel unit x3 diverse"


def test_cli_writes_every_diverse_image_before_its_row(tmp_path):
    from sweep.cli import main
    from sweep.store.results import Results

    out = tmp_path / "div"
    assert main(["visualize", "--model", "dev/vit-micro", "--weights", "random", "--layer", "1", "--feature", "4",
                 "--steps", "2", "--diversity", "3", "--quiet", "--out", str(out)]) == 0
    row = Results(str(out)).features().iloc[0]
    assert row["diversity"] == 3 and len(row["variant_paths"]) == 2 and len(row["variant_seeds"]) == 2
    assert all((out / p).stat().st_size > 0 for p in [row["image_path"], *row["variant_paths"]])
    assert row["variant_paths"][0].endswith("mlp-4-v1.png")


def test_accentuation_starts_from_the_photo_and_stays_near_it(micro, tmp_path):
    """The first image is the photo (resized, centre-cropped); the anchor keeps the layer's features
    nearer the photo's than the same run without it, while the unit still rises."""
    from PIL import Image

    from sweep.method.accentuate import start_image

    anatomy, net = micro
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    base = dict(steps=12, copies=2, jitter=1, lr=0.05, tv=0.0, accentuate=str(tmp_path / "photo.png"))
    near = render(net, anatomy, anatomy.block(1), "mlp", [5], Recipe(accentuate_weight=5.0, **base), [5], "cpu",
                  engine=EXACT)
    free = render(net, anatomy, anatomy.block(1), "mlp", [5], Recipe(accentuate_weight=0.0, **base), [5], "cpu",
                  engine=EXACT)
    photo = start_image(Recipe(**base).accentuate, 32)
    torch.testing.assert_close(near.initial[0], photo)
    pooled = lambda x: site_tensor(net, anatomy, 1, "mlp", x[None])[:, 1:].mean(1)  # noqa: E731
    gap = lambda r: float((pooled(r.images[0]) - pooled(photo)).norm())  # noqa: E731
    assert gap(near) < 0.8 * gap(free), (gap(near), gap(free))
    assert float(near.act_final[0]) > float(near.act_init[0])
    assert Recipe(**base).accentuate.startswith(str(tmp_path / "photo.png") + "#sha256=")
    assert Recipe(**base).method.endswith("accentuating photo.png")


@pytest.mark.parametrize("kwargs, words", [
    (dict(accentuate="photo:nope"), "no such photo"),
    (dict(accentuate="missing.png"), "cannot read recipe accentuate"),
    (dict(accentuate="notes.txt"), "not a readable image"),
    (dict(accentuate="photo:coffee", param="fourier"), "param pixel only"),
])
def test_bad_accentuate_is_one_line(kwargs, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises((SweepError, ValueError)) as err:
        Recipe(**kwargs)
    assert words in str(err.value)


def test_rows_carry_the_measures(tmp_path):
    """Every row of a real render has its robustness to shifts and zooms and its plausibility, beside
    the photos' own; values recomputed here from the written PNG agree."""
    pytest.importorskip("skimage")
    from sweep.cli import main
    from sweep.method.measures import SCALES, zoom
    from sweep.store.results import Results

    out = tmp_path / "m"
    assert main(["visualize", "--model", "dev/vit-micro", "--weights", "random", "--layer", "1", "--feature", "2",
                 "7", "--steps", "3", "--quiet", "--out", str(out)]) == 0
    rows = Results(str(out)).features()
    for col in ("shift_robustness", "scale_robustness", "plausibility", "plausibility_reference"):
        assert rows[col].notna().all(), col
    assert rows["plausibility"].between(-1, 1).all() and 0 < rows["plausibility_reference"].iloc[0] <= 1
    torch.testing.assert_close(zoom(torch.arange(64.0).view(1, 1, 8, 8), 1.0), torch.arange(64.0).view(1, 1, 8, 8))
    from PIL import Image

    anatomy = anatomy_of("dev/vit-micro")
    net = build(anatomy.entry, "random")
    for row in rows.itertuples():
        png = torch.from_numpy(np.asarray(Image.open(out / row.image_path), dtype=np.float32) / 255).permute(2, 0, 1)
        zooms = torch.stack([zoom(png[None], s)[0] for s in SCALES])
        acts = site_tensor(net, anatomy, 1, "mlp", zooms)[:, 1:].mean(1)[:, row.feature]
        clean = float(site_tensor(net, anatomy, 1, "mlp", png[None])[:, 1:].mean(1)[0, row.feature])
        expected = float(acts.mean()) / clean if clean > 0 else 0.0
        assert row.scale_robustness == pytest.approx(expected, rel=0.05, abs=0.02)  # the PNG is 8-bit


def test_atlas_shows_the_method_its_measures_the_diversity_strip_and_the_start_photo(tmp_path):
    pytest.importorskip("skimage")
    from sweep.cli import main
    from sweep.views.atlas import build_atlas

    root, site = tmp_path / "root", tmp_path / "site"
    assert main(["visualize", "--model", "dev/vit-micro", "--weights", "random", "--layer", "1", "--feature", "4",
                 "--steps", "2", "--diversity", "2", "--accentuate", "photo:coffee", "--quiet",
                 "--out", str(root)]) == 0
    build_atlas(str(root), str(site), progress=False)
    (folder,) = (site / "features").iterdir()  # the model's slug
    page = (folder / "1" / "mlp-4.html").read_text()
    assert "pixel unit x2 diverse accentuating photo:coffee" in page and "shift robustness" in page
    assert "diverse image 2" in page and "the photo this accentuation started from" in page
    shown = sorted(p.name for p in (site / "img" / folder.name / "1").iterdir())
    assert "mlp-4-v1.png" in shown and any(n.startswith("start-") for n in shown)
    again = build_atlas(str(root), str(site), progress=False)
    assert again["written"] == []  # incremental: the strip and the start photo are not copied again


def test_maco_saves_its_attribution_map(tmp_path):
    pytest.importorskip("skimage")
    from sweep.cli import main
    from sweep.store.results import Results
    from sweep.views.atlas import build_atlas

    anatomy = anatomy_of("dev/vit-micro")
    net = build(anatomy.entry, "random")
    made = render(net, anatomy, anatomy.block(1), "mlp", [1, 2], Recipe(steps=3, param="maco", lr=0.2, tv=1.0),
                  [1, 2], "cpu", engine=EXACT)
    assert made.attribution.shape == (2, 32, 32) and made.attribution.min() >= 0
    assert torch.allclose(made.attribution.flatten(1).amax(1), torch.ones(2))  # each normalized to its peak
    assert render(net, anatomy, anatomy.block(1), "mlp", [1], Recipe(steps=1), [1], "cpu").attribution is None
    root = tmp_path / "r"
    assert main(["visualize", "--model", "dev/vit-micro", "--weights", "random", "--layer", "1", "--feature", "2",
                 "--steps", "2", "--param", "maco", "--quiet", "--out", str(root)]) == 0
    row = Results(str(root)).features().iloc[0]
    assert row["attribution_path"].endswith("mlp-2-attribution.png") and (root / row["attribution_path"]).exists()
    build_atlas(str(root), str(tmp_path / "site"), progress=False)
    (folder,) = (tmp_path / "site" / "features").iterdir()
    assert "attribution map of" in (folder / "1" / "mlp-2.html").read_text()
