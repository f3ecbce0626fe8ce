"""ImageNet ablations: readers, mask geometry, and the whole Ray Data pipeline on a made-up dataset."""

import imagenet_fixture as fx
import numpy as np
import pandas as pd
import pytest
import ray.cloudpickle
from sweep_checks import job_main

from sweep.core.errors import SweepError
from sweep.data.imagenet import parse_voc, train_with_boxes, val_from_solution
from sweep.experiments.ablations import ModelSpec, registry_model
from sweep.data.transforms import resize_center_crop
from sweep.experiments.conditions import apply_mask_condition, box_union_mask
from sweep.pipelines.ablations import AblationConfig, DataSpec, run_ablation

ray.cloudpickle.register_pickle_by_value(fx)  # Ray workers cannot import the tests folder


# --- geometry -----------------------------------------------------------------------------------

def test_box_edges_follow_the_paper():
    # int() truncates, the max row/column is excluded: [1.9, 2.2, 4.7, 5.0] covers cols 1..3, rows 2..4
    mask = box_union_mask(8, 8, [[1.9, 2.2, 4.7, 5.0]])
    rows, cols = np.nonzero(mask)
    assert set(rows) == {2, 3, 4} and set(cols) == {1, 2, 3}


def test_union_and_conditions_pixel_by_pixel():
    img = np.full((6, 8, 3), 200, np.uint8)
    boxes = [[0, 0, 3, 2], [2, 1, 5, 4]]  # overlapping
    inside = box_union_mask(6, 8, boxes)
    assert inside.sum() == 3 * 2 + 3 * 3 - 1 * 1  # union, overlap counted once
    bg = apply_mask_condition(img, boxes, "background")
    fg = apply_mask_condition(img, boxes, "foreground")
    assert (bg[inside] == 0).all() and (bg[~inside] == 200).all()
    assert (fg[inside] == 200).all() and (fg[~inside] == 0).all()
    assert np.array_equal(bg.astype(int) + fg.astype(int), img.astype(int))  # fg = original - bg
    assert apply_mask_condition(img, boxes, "original") is img


def test_voc_box_order_and_own_class_filter():
    xml = (b"<annotation><size><width>10</width><height>20</height></size>"
           b"<object><name>n1</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object>"
           b"<object><name>n2</name><bndbox><xmin>5</xmin><ymin>6</ymin><xmax>7</xmax><ymax>8</ymax></bndbox></object>"
           b"</annotation>")
    boxes, size = parse_voc(xml, "n1")
    assert boxes == [[1.0, 2.0, 3.0, 4.0]] and size == (10, 20)  # [xmin, ymin, xmax, ymax]
    assert len(parse_voc(xml)[0]) == 2
    with pytest.raises(ValueError, match="malformed XML"):
        parse_voc(b"<annotation><object>")


def test_masking_happens_before_resize():
    img = np.full((40, 40, 3), 255, np.uint8)
    boxes = [[0, 0, 21, 40]]  # left half and one column: an edge that falls between resized pixels
    before = resize_center_crop(apply_mask_condition(img, boxes, "background"), 16)
    after = resize_center_crop(img, 16).copy()
    after[:, : int(21 * 16 / 40)] = 0
    assert not np.allclose(before, after)  # the paper's order gives a blended edge column
    assert 0 < before[:, 8].mean() < 1


# --- readers ------------------------------------------------------------------------------------

def test_train_listing_counts_problems(tmp_path):
    data = fx.make_train(tmp_path)
    listing = train_with_boxes(data["train"], data["boxes"])
    ids = {r["image_id"] for r in listing.records}
    assert len(listing.records) == 24 + 1  # the corrupt JPEG is listed; decoding reports it later
    assert f"{fx.WNIDS[0]}_nobox" not in ids
    stages = sorted((p["stage"], p["path"].rsplit("/", 1)[-1]) for p in listing.problems)
    assert stages == [("annotation", f"{fx.WNIDS[0]}_badxml.xml"), ("image", f"{fx.WNIDS[0]}_noimage.xml")]
    two = next(r for r in listing.records if r["image_id"] == f"{fx.WNIDS[1]}_1")
    assert len(two["boxes"]) == 2 and two["label"] == 1


def test_val_listing(tmp_path):
    data = fx.make_val(tmp_path)
    listing = val_from_solution(data["val"], data["solution"])
    assert len(listing.records) == 24 and not listing.problems
    assert listing.records[0]["image_id"] == "ILSVRC2012_val_00000001"
    (tmp_path / "other.csv").write_text("id,label\n1,2\n")
    with pytest.raises(SweepError, match="is not a LOC_val_solution.csv"):
        val_from_solution(data["val"], str(tmp_path / "other.csv"))
    with pytest.raises(SweepError, match="cannot read val solution"):
        val_from_solution(data["val"], data["val"] + "/ILSVRC2012_val_00000001.JPEG")


# --- the pipeline -------------------------------------------------------------------------------

def expected_counts(samples, condition):
    top1 = top5 = 0
    for s in samples:
        first, five = fx.predicted(s.centre_class(condition))
        top1 += first == s.label
        top5 += s.label in five
    return top1, top5


def config(tmp_path, data, **over):
    spec = DataSpec("train_boxes", data["train"], boxes=data["boxes"])
    return AblationConfig("foreground_background", str(tmp_path / "out"), spec, batch_size=16, **over)


def test_pipeline_accuracy_equals_hand_computation(tmp_path, ray_local):
    data = fx.make_train(tmp_path)
    spec = ModelSpec("handbuilt", fx.make_center_net)
    summary = run_ablation(config(tmp_path, data), [spec])["handbuilt"]
    rows = pd.read_parquet(tmp_path / "out" / "ablations")
    assert set(rows["experiment"]) == {"foreground_background"} and set(rows["model"]) == {"handbuilt"}
    assert len(rows) == 25 * 3 and rows.groupby(["image_id", "condition"]).size().max() == 1
    corrupt = rows[rows["status"] == "corrupt"]
    assert len(corrupt) == 3 and corrupt["error"].str.len().min() > 0 and summary["corrupt_images"] == 1
    assert summary["weights"] == "factory", "a factory's weights are its own, not the config's default"
    assert len(summary["listing_problems"]) == 2
    ok = rows[rows["status"] == "ok"]
    for condition in ("original", "background", "foreground"):
        got = ok[ok["condition"] == condition]
        top1, top5 = expected_counts(data["samples"], condition)
        assert (int(got["correct1"].sum()), int(got["correct5"].sum())) == (top1, top5), condition
        assert summary["conditions"][condition]["top5"] == pytest.approx(100 * top5 / 24)
    # The conditions really differ on this data (otherwise the test would prove little).
    assert len({expected_counts(data["samples"], c) for c in ("original", "background", "foreground")}) == 3
    first = sorted(p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("part-*.parquet"))
    again = run_ablation(config(tmp_path, data), [spec])["handbuilt"]  # resumable: done models skip
    assert again["finished_at"] == summary["finished_at"]
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("part-*.parquet")) == first


def test_val_solution_and_frequency_experiment(tmp_path, ray_local):
    data = fx.make_val(tmp_path)
    spec = DataSpec("val_solution", data["val"], solution=data["solution"])
    cfg = AblationConfig("frequency", str(tmp_path / "out"), spec,
                         conditions=("original", "lowpass_gauss_1", "highpass_fft_0.25"))
    summary = run_ablation(cfg, [ModelSpec("handbuilt", fx.make_center_net)])["handbuilt"]
    assert set(summary["conditions"]) == {"original", "lowpass_gauss_1", "highpass_fft_0.25"}
    top1, _ = expected_counts(data["samples"], "original")
    # A mild blur keeps the solid centre colour, so the centre-pixel model answers the same.
    assert summary["conditions"]["lowpass_gauss_1"]["top1"] == pytest.approx(100 * top1 / 24)
    assert summary["conditions"]["original"]["top1"] == pytest.approx(100 * top1 / 24)


def test_bad_inputs(tmp_path, ray_local):
    data = fx.make_train(tmp_path)
    with pytest.raises(SweepError, match="AblationConfig.experiment: input should be 'foreground_background', 'frequency' or 'tokens'; got 'colour'"):
        run_ablation(AblationConfig("colour", str(tmp_path), DataSpec("train_boxes", data["train"],
                                                                       boxes=data["boxes"])), [])
    with pytest.raises(SweepError, match="does not exist"):
        run_ablation(config(tmp_path, {"train": str(tmp_path / "nope"), "boxes": data["boxes"]}),
                     [ModelSpec("h", fx.make_center_net)])
    with pytest.raises(SweepError, match="without an ImageNet classifier head"):
        registry_model("ViT-B/32")
    with pytest.raises(SweepError, match="no ImageNet-1k head"):
        registry_model("B_16")


def test_job_with_a_model_outside_the_zoo(tmp_path, ray_local, capsys):
    """jobs/ablations.py end to end with a timm classifier the zoo does not list (random weights)."""
    data = fx.make_train(tmp_path)
    code = job_main("ablations")(["--experiment", "foreground_background", "--train", data["train"], "--boxes",
                                  data["boxes"], "--models", "tf_efficientnet_lite0", "--weights", "random",
                                  "--out", str(tmp_path / "o")])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    assert "tf_efficientnet_lite0: 72 rows, 1 corrupt image(s), 2 listing problem(s)" in out.out
    rows = pd.read_parquet(tmp_path / "o" / "ablations")
    assert len(rows) == 75 and set(rows["model"].astype(str)) == {"tf_efficientnet_lite0"}
    ok = rows[rows["status"] == "ok"]
    assert ok["top5"].map(len).eq(5).all() and ok["loss"].notna().all()


def test_devkit_ground_truth(tmp_path):
    from scipy.io import savemat

    from sweep.data.imagenet import val_from_devkit

    data = fx.make_val(tmp_path)
    # The devkit numbers classes by ILSVRC2012_ID, an order unlike the sorted wnids: reverse it here.
    ids = {w: 1000 - i for i, w in enumerate(fx.imagenet_synsets())}
    synsets = np.array([(ids[w], w) for w in fx.imagenet_synsets()],
                       dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O")])
    savemat(tmp_path / "meta.mat", {"synsets": synsets})
    labels = [s.label for s in data["samples"]] + [5]  # one more line than images: reported missing
    (tmp_path / "gt.txt").write_text("\n".join(str(ids[fx.WNIDS[y]]) for y in labels) + "\n")
    listing = val_from_devkit(data["val"], str(tmp_path / "gt.txt"), str(tmp_path / "meta.mat"))
    assert [r["label"] for r in listing.records] == labels[:-1]
    assert [p["stage"] for p in listing.problems] == ["image"]


def test_token_experiments_on_ray_data(tmp_path, ray_local):
    """Every image through every token variant; variants that equal the intact model score the same."""
    data = fx.make_val(tmp_path)
    cfg = AblationConfig("tokens", str(tmp_path / "out"), DataSpec("val_solution", data["val"],
                                                                   solution=data["solution"]),
                         weights="random", batch_size=8)
    summary = run_ablation(cfg, [registry_model("dev/vit-micro", "random")])["dev/vit-micro"]
    variants = summary["conditions"]
    assert "cls_isolated_after:3" in variants and "pos:zero" in variants and "pool:patch:120" not in variants
    rows = pd.read_parquet(tmp_path / "out" / "ablations" / "experiment=tokens")
    assert len(rows) == 24 * len(variants) and (rows["status"] == "ok").all()
    by = {c: g.sort_values("image_id")["top5"].map(list).tolist() for c, g in rows.groupby("condition")}
    assert by["cls_isolated_after:3"] == by["intact"] == by["cls_apart_until:0"]
    assert len({tuple(map(tuple, v)) for v in by.values()}) > 1  # the surgery changes predictions
    with pytest.raises(SweepError, match="unknown token variant"):
        run_ablation(AblationConfig("tokens", str(tmp_path / "x"), cfg.data, conditions=("tearing",)),
                     [registry_model("dev/vit-micro", "random")])
