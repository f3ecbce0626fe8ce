"""The speed benchmarks compare equals: the baseline is the same recipe, and the scripts run end to end."""

import csv

import pandas as pd
import pytest
import torch

from benchmarks import bench_engine, check_engine
from benchmarks.baseline import visualize_one
from sweep.method.engine import Engine
from sweep.method.recipe import Recipe
from sweep.method.render import render, seeds_for
from sweep.models.anatomy import anatomy_of
from sweep.models.build import build


@pytest.mark.parametrize("model", ["dev/vit-micro", "dev/deit-micro-distilled"])
def test_baseline_gives_the_engines_images(model):
    """One feature at a time through the whole network = the engine's batched, stopped forward."""
    anatomy = anatomy_of(model)
    net = build(anatomy.entry, "random")
    block = anatomy.block(1)
    recipe = Recipe(steps=10, jitter=4)
    feats = [3, 7, 11]
    engine = render(net, anatomy, block, "mlp", feats, recipe, seeds_for(feats), "cpu",
                    engine=Engine("fp32", features_per_pass=3))
    for i, f in enumerate(feats):
        image, losses = visualize_one(net, anatomy, block, f, recipe, f, torch.device("cpu"))
        torch.testing.assert_close(image, engine.images[i], rtol=0, atol=1e-6)
        assert losses[-1] == pytest.approx(float(engine.trace.loss[-1, i]), rel=1e-5)


def test_step_flops_count_forward_and_input_gradient():
    anatomy = anatomy_of("vit_base_patch16_224")
    first = bench_engine.step_flops_per_image(anatomy, anatomy.block(0))
    last = bench_engine.step_flops_per_image(anatomy, anatomy.block(-1))
    # ViT-B/16 forward is ~35 GFLOP per image; with the input gradient about twice that.
    assert 65e9 < last < 75e9
    assert first < last / 8  # the forward stops at the hooked block


def test_bench_engine_writes_one_row_per_variant(tmp_path, capsys):
    out = tmp_path / "bench.csv"
    assert bench_engine.main(["--models", "dev/vit-micro", "--layers", "0", "2", "--features", "3", "--iters", "1",
                              "--variants", "fp32", "bf16", "--csv", str(out)]) == 0
    rows = pd.read_csv(out)
    assert list(rows.variant) == ["baseline", "engine:fp32", "engine:bf16"] * 2
    assert (rows.step_s > 0).all() and (rows.features_per_hour > 0).all()
    assert (rows[rows.variant == "baseline"].speedup_vs_baseline == 1.0).all()
    assert set(rows.device) == {"cpu"}
    assert "mean speedup" in capsys.readouterr().out


@pytest.mark.compile
def test_check_engine_reports_per_feature_differences(tmp_path):
    out = tmp_path / "fidelity.csv"
    assert check_engine.main(["--cpu-model", "dev/vit-micro", "--model", "dev/vit-micro", "--cpu-layer", "0",
                              "--layer", "0", "--cpu-steps", "3", "--steps", "3", "--features", "2",
                              "--device", "cpu", "--variants", "bf16+compile", "bf16+step", "--csv", str(out)]) == 0
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    checks = [r["check"] for r in rows]
    assert checks.count("device-vs-cpu") == 2 and checks.count("bf16-vs-fp32") == 3 * 2
    assert {r["b"] for r in rows if r["check"] == "compile-vs-eager"} == {"bf16+compile", "bf16+step"}
    same = [r for r in rows if r["check"] == "device-vs-cpu"]
    assert all(float(r["image_max_abs_diff"]) == 0.0 for r in same)  # cpu against itself


def test_contact_sheet_tiles_methods_by_depth_and_tabulates(tmp_path, capsys):
    from PIL import Image

    from benchmarks import contact_sheet

    rows = []
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for layer, feature in ((0, 3), (0, 9), (5, 1)):
            Image.new("RGB", (20, 20), "blue").save(tmp_path / label / f"L{layer}-f{feature}.png")
            rows.append({"label": label, "layer": layer, "feature": feature, "beats_photos": label == "b" or layer == 5,
                         "shift_ratio": 0.5, "seconds_per_unit": 10.0})
    pd.DataFrame(rows).to_csv(tmp_path / "q.csv", index=False)
    out = tmp_path / "sheet.png"
    assert contact_sheet.main(["--images", str(tmp_path), "--labels", "a", "b", "--csv", str(tmp_path / "q.csv"),
                               "--out", str(out)]) == 0
    with Image.open(out) as sheet:
        assert sheet.size == (150 + 2 * 100, 24 + 2 * (2 * 100 + 12))  # 2 blocks; 2 methods of up to 2 units
    text = capsys.readouterr().out
    assert "| a | 0/2 | 1/1 | 1/3 (33%) |" in text and "| b | 2/2 | 1/1 | 3/3 (100%) |" in text
    assert "| a | 1/3 | ? | 0.50 | 10 |" in text  # rows without switched_on: "?", not 0


def test_method_table_summarizes_methods_by_block(tmp_path, capsys):
    from benchmarks import method_table

    rows = [{"label": label, "layer": layer, "feature": f, "beats_photos": won, "switched_on": on,
             "percentile": pct, "shift_ratio": 0.9, "scale_ratio": 0.8, "plausibility": 0.3, "seconds_per_unit": 12.0}
            for label, layer, f, won, on, pct in [("maco", 0, 1, True, True, 100.0), ("maco", 0, 2, False, False, 10.0),
                                                   ("maco", 3, 4, True, True, 100.0), ("pixel", 3, 4, False, True, 90.0)]]
    pd.DataFrame(rows).to_csv(tmp_path / "q.csv", index=False)
    assert method_table.main(["--csv", str(tmp_path / "q.csv"), "--summary", str(tmp_path / "s.csv")]) == 0
    text = capsys.readouterr().out
    assert "| maco | 1/2 | 1/1 | 2/3 (67%) |" in text and "| pixel |  | 0/1 | 0/1 (0%) |" in text
    assert "| maco | 2/3 | 1 | 100.00 | 0.90 | 0.80 | 0.30 | 12 |" in text
    summary = pd.read_csv(tmp_path / "s.csv")
    assert summary[["label", "layer", "units", "visualized", "switched_off"]].values.tolist() == [
        ["maco", 0, 2, 1, 1], ["maco", 3, 1, 1, 0], ["pixel", 3, 1, 0, 0]]
    assert summary["percentile"].tolist() == [55.0, 100.0, 90.0]
    assert method_table.main(["--csv", str(tmp_path / "q.csv"), "--labels", "nope"]) == 2
    assert "error: --labels: nope not in the CSV; allowed: maco, pixel" in capsys.readouterr().err


def test_demo_quality_methods_take_an_optional_learning_rate():
    from benchmarks.demo_quality import parse_method

    assert parse_method("maco:mlp_pre:0.2") == ("maco", "mlp_pre", 0.2)
    assert parse_method("pixel:mlp") == ("pixel", "mlp", None)
    for bad in ("pixel", "nope:mlp", "maco:mlp_pre:x", "maco:mlp_pre:-1", "maco:mlp_pre:0.2:9", "maco::0.2"):
        assert parse_method(bad)[0] is None, bad


def test_method_table_promotes_the_best_methods_by_depth(tmp_path, capsys):
    import json

    from benchmarks import method_table

    rows = []
    for label, param, site, lr, wins in (("paper", "pixel", "mlp", 0.1, [2, 2, 0]), ("maco", "maco", "mlp_pre", 0.2, [0, 1, 2])):
        for layer in range(3):  # dev/vit-micro: 3 blocks, 2 units each
            for unit in range(2):
                won = unit < wins[layer]
                rows.append({"label": label, "model": "dev/vit-micro", "layer": layer, "feature": unit, "param": param,
                             "site": site, "lr": lr, "tv": 1.0, "steps": 100, "beats_photos": won, "switched_on": True,
                             "percentile": 100.0 if won else 50.0})
    pd.DataFrame(rows).to_csv(tmp_path / "q.csv", index=False)
    registry = tmp_path / "tuned.json"
    assert method_table.main(["--csv", str(tmp_path / "q.csv"), "--promote", "--registry-file", str(registry)]) == 0
    assert "promoted vit --recipe best: pixel at mlp (lr 0.1) from depth 0, maco at mlp_pre (lr 0.2) from 0.667" \
        in capsys.readouterr().out
    stored = json.loads(registry.read_text())["vit"]["by_depth"]
    assert [(m["start"], m["param"], m["site"], m["lr"]) for m in stored["methods"]] == [
        (0.0, "pixel", "mlp", 0.1), (2 / 3, "maco", "mlp_pre", 0.2)]
    assert stored["provenance"]["visualized"] == "6/6" and stored["provenance"]["chosen"] == "paper from block 0, maco from block 2"
    pd.DataFrame([r for r in rows if not (r["label"] == "maco" and r["layer"] == 1)]).to_csv(tmp_path / "gap.csv", index=False)
    assert method_table.main(["--csv", str(tmp_path / "gap.csv"), "--promote", "--registry-file", str(registry)]) == 2
    assert "error: --promote: method maco was not measured on every block of dev/vit-micro (0-2)" in capsys.readouterr().err
