"""Top natural images (streaming, mergeable top-k on Ray Data) and activation maps."""


import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sweep_checks import job_main
from test_engine import PLANTED, plant_redness_unit

from sweep.data.imagenet import image_folder
from sweep.experiments.ablations import prepare_batch
from sweep.experiments.activation_maps import activation_maps, save_map
from sweep.experiments.top_images import TopImagesConfig
from sweep.experiments.topk import TopK
from sweep.method.render import ModelInput
from sweep.models.anatomy import anatomy_of
from sweep.models.build import build
from sweep.models.taps import read_sites
from sweep.pipelines.top_images import scan_top_images


def test_topk_equals_argsort_and_merges_in_any_split():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(50, 7, generator=g)
    acts[10, 3] = acts[20, 3] = acts[:, 3].max() + 1  # a tie: the smaller image index ranks first
    ids = torch.arange(50)
    whole = TopK(7, 5).update(acts, ids)
    order = torch.argsort(-acts.T, dim=1, stable=True)[:, :5]
    assert torch.equal(whole.ids, order)
    assert whole.ids[3, 0] == 10 and whole.ids[3, 1] == 20
    a = TopK(7, 5).update(acts[30:], ids[30:]).update(acts[:10], ids[:10])
    b = TopK(7, 5).update(acts[10:30], ids[10:30])
    merged = b.merge(a)
    assert torch.equal(merged.ids, whole.ids) and torch.equal(merged.values, whole.values)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(40):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(sub / f"img{i:02d}.png")
    (root / "b" / "broken.png").write_bytes(b"not a png")
    return root


def test_top_images_one_or_two_workers_equal_brute_force(image_dir, tmp_path, ray_local):
    listing = image_folder(str(image_dir))
    assert len(listing.records) == 41
    results = []
    for actors in (1, 2):
        cfg = TopImagesConfig("dev/vit-micro", str(tmp_path / f"w{actors}"), split="folder", k=4,
                              weights="random", batch_size=8, actors=actors)
        results.append(scan_top_images(cfg, listing))
    one, two = results
    pd.testing.assert_frame_equal(one, two)
    stored = pd.read_parquet(tmp_path / "w2" / "top_images")
    assert len(stored) == len(one) == 3 * 64 * 4 and set(stored["model"].astype(str)) == {"dev/vit-micro"}
    from sweep.store.layout import TOP_THUMBS, thumb_name

    thumbs = tmp_path / "w2" / TOP_THUMBS.folder(split="folder")
    assert sorted(p.name for p in thumbs.iterdir()) == sorted(thumb_name(i) for i in set(one["image_id"]))
    # Brute force: every activation of every image, sorted.
    anatomy = anatomy_of("dev/vit-micro")
    net = build(anatomy.entry, "random")
    good = [r for r in listing.records if r["image_id"] != "b/broken"]
    pre = anatomy.preprocess  # the model's own evaluation transform: 35 px bicubic, crop to 32 (crop_pct 0.9)
    assert (pre.resize_size, pre.interpolation) == (35, "bicubic")
    batch = prepare_batch({k: [r[k] for r in good] for k in ("image_id", "path", "label", "boxes")},
                          "foreground_background", ("original",), 32, resize=pre.resize_size,
                          interpolation=pre.interpolation)
    x = torch.as_tensor(batch["image"]).permute(0, 3, 1, 2)
    with torch.no_grad():
        acts = torch.cat(read_sites(net, [(b, "mlp") for b in anatomy.blocks], ModelInput(anatomy)(x)), 1)
    order = torch.argsort(-acts.T, dim=1, stable=True)[:, :4]
    top = one.sort_values(["layer", "feature", "rank"])
    expected_ids = [good[i]["image_id"] for i in order.flatten().tolist()]
    assert top["image_id"].tolist() == expected_ids
    np.testing.assert_allclose(top["activation"].to_numpy(), acts.T.gather(1, order).flatten().numpy(),
                               rtol=1e-5, atol=1e-6)
    assert "b/broken" not in set(one["image_id"])


def test_activation_map_finds_the_planted_pattern(tmp_path):
    anatomy = anatomy_of("dev/vit-micro")
    net = plant_redness_unit(build(anatomy.entry, "random"))
    image = torch.full((1, 3, 32, 32), 0.5)
    image[0, :, 8:16, 16:24] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]   # patch (row 1, col 2)
    image[0, :, 16:24, 16:24] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # patch (row 2, col 2)
    amap = activation_maps(net, anatomy, anatomy.block(0), "mlp", PLANTED, image)[0]
    assert amap.shape == (4, 4)
    hot = {tuple(ix) for ix in torch.nonzero(amap > amap.max() / 2).tolist()}
    assert hot == {(1, 2), (2, 2)}
    png = save_map(str(tmp_path), anatomy.entry.key, 0, "mlp", PLANTED, "img/one",
                   image[0].permute(1, 2, 0).numpy(), amap.numpy())
    with Image.open(png) as im:
        assert im.size == (32, 32)
        rgb = np.asarray(im.convert("RGB")).astype(int)
    assert rgb[12, 20].sum() > rgb[4, 4].sum()  # hot patch brighter than a cold one in the overlay
    saved = np.load(png[:-4] + ".npy")
    np.testing.assert_allclose(saved, amap.numpy())


def test_jobs_for_a_folder_of_images(image_dir, tmp_path, ray_local, capsys):
    """Top images, activation maps and then unit invariance (which reads the top images), as the
    jobs' commands (their main(), on the test's Ray)."""
    common = ["--model", "dev/vit-micro", "--weights", "random", "--images", str(image_dir)]
    assert job_main("top_images")([*common, "--out", str(tmp_path), "--split", "folder", "--k", "2",
                                   "--layers", "0", "2"]) == 0
    assert "256 rows: top-2 images of 128 units over 41 images" in capsys.readouterr().out
    assert job_main("activation_maps")([*common, "--out", str(tmp_path), "--layer", "1", "--feature", "3", "4",
                                        "--limit", "3"]) == 0
    assert "6 activation map(s)" in capsys.readouterr().out
    assert len(list((tmp_path / "activation_maps").rglob("*.npy"))) == 6
    maps_table = pd.read_parquet(tmp_path / "activation_maps" / "table")
    assert len(maps_table) == 6 and (maps_table["side"] == 4).all()
    assert maps_table["values"].map(len).eq(16).all() and set(maps_table["feature"]) == {3, 4}
    assert job_main("unit_invariance")([*common, "--results", str(tmp_path), "--split", "folder",
                                        "--features-per-layer", "5"]) == 0
    out = capsys.readouterr().out
    frame = pd.read_parquet(tmp_path / "invariance")
    assert len(frame) == 2 * 5 and set(frame["layer"]) == {0, 2}
    np.testing.assert_allclose(frame["rotation_ratio"], frame["after_rotation"] / frame["before_rotation"])
    assert "rotation" in out and "shift" in out


def test_invariance_of_a_planted_colour_unit():
    from sweep.experiments.invariance import rotation_copies, shift_copies, unit_invariance

    anatomy = anatomy_of("dev/vit-micro")
    net = plant_redness_unit(build(anatomy.entry, "random"))
    red = torch.zeros(3, 32, 32)
    red[0] = 1.0
    units = pd.DataFrame({"layer": [0], "feature": [PLANTED], "image_id": ["red"]})
    row = unit_invariance(net, anatomy, "mlp", units, {"red": red}).iloc[0]
    # A uniformly red image is the same after any circular shift: the ratio is exactly 1.
    assert row["after_shift"] == pytest.approx(row["before_shift"]) and row["shift_ratio"] == pytest.approx(1.0)
    # Rotations bring in black corners, which are not red: the unit loses activation.
    assert 0 < row["rotation_ratio"] < 0.99
    copies = rotation_copies(red, torch.Generator().manual_seed(0))
    assert copies.shape == (18, 3, 32, 32) and torch.equal(shift_copies(red)[0], red)
    assert (copies[2, 0] == 0).any() and (copies[0, 0] == 1).all()  # 40 degrees: black corners; 0-1: none
