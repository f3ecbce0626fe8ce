"""Sweep configs and plans, without Ray: expansion, feature selection, presets, the dispatcher."""

import pytest

from sweep.core.errors import SweepError
from sweep.work.plan import DEMO_MODEL, FeatureSelection, SweepConfig, expand, plan_summary


def test_smoke_preset_expands_deterministically(tmp_path):
    cfg = SweepConfig.from_dict({"preset": "smoke", "out": str(tmp_path)})
    tasks = expand(cfg)
    assert [t.key for t in tasks] == [t.key for t in expand(cfg)]
    triples = [tr for t in tasks for tr in t.triples()]
    assert len(triples) == len(set(triples)) == 2 * 3 * 4
    assert all(len(t.batch.features) == 2 for t in tasks)
    assert {t.batch.model for t in tasks} == {"dev/vit-micro", "dev/deit-micro-distilled"}
    assert all(t.cost > 0 for t in tasks)


def test_skip_removes_done_triples(tmp_path):
    cfg = SweepConfig.from_dict({"preset": "smoke", "out": str(tmp_path)})
    done = {("dev/vit-micro", 0, "mlp", 0), ("dev/vit-micro", 0, "mlp", 1), ("dev/vit-micro", 1, "mlp", 3)}
    left = [tr for t in expand(cfg, skip=done) for tr in t.triples()]
    assert len(left) == 24 - 3 and not done & set(left)


@pytest.mark.zoo
def test_paper_preset_and_summary(tmp_path):
    cfg = SweepConfig.from_dict({"preset": "paper", "out": str(tmp_path), "features": {"count": 2}})
    rows = {r["model"]: r for r in plan_summary(cfg, expand(cfg))}
    assert len(rows) == 38 + 7 + 2
    assert rows["vit_base_patch16_224.orig_in21k"]["features"] == 12 * 2
    # ViT-B/16 at 384 costs more than at 224 (more tokens), per feature
    assert rows["deit_base_patch16_384.fb_in1k"]["tflop"] > 3 * rows["deit_base_patch16_224.fb_in1k"]["tflop"]


def test_feature_selection_modes():
    assert FeatureSelection("all").pick(5, "m", 0) == [0, 1, 2, 3, 4]
    assert FeatureSelection("first", count=3).pick(100, "m", 0) == [0, 1, 2]
    assert FeatureSelection("first", count=30).pick(4, "m", 0) == [0, 1, 2, 3]
    assert FeatureSelection("list", indices=(7, 2)).pick(10, "m", 0) == [7, 2]
    s = FeatureSelection("sample", count=5, seed=1)
    a, b = s.pick(3072, "m", 3), s.pick(3072, "m", 3)
    assert a == b and len(set(a)) == 5 and a == sorted(a)
    assert s.pick(3072, "m", 4) != a and FeatureSelection("sample", count=5, seed=2).pick(3072, "m", 3) != a


@pytest.mark.parametrize("data, message", [
    ({"models": ["nope"]}, "unknown model 'nope'"),
    ({"models": []}, "names no models"),
    ({"preset": "everything"}, "preset: input should be 'paper' or 'smoke' or 'demo'; got 'everything'"),
    ({"models": ["dev/vit-micro"], "layerz": [1]}, "layerz: unknown key; allowed: base_seed, engine, features,"),
    ({"models": ["dev/vit-micro"], "layers": [5]}, "layer 5 out of range"),
    ({"models": ["dev/vit-micro"], "features": {"mode": "list", "indices": [99]}}, "feature 99 out of range"),
    ({"models": ["dev/vit-micro"], "features": {"mode": "best"}}, "features.mode: input should be 'all', 'first', 'list' or 'sample'; got 'best'"),
    ({"models": ["dev/vit-micro"], "recipe": {"stepz": 3}}, "recipe.stepz: unknown key; allowed: accentuate, accentuate_weight, beta1, beta2,"),
    ({"models": ["dev/vit-micro"], "site": "q", "layers": [0], "features": {"count": 1}}, None),
])
def test_bad_configs_fail_at_planning(tmp_path, data, message):
    def plan():
        return expand(SweepConfig.from_dict({"out": str(tmp_path), **data}))
    if message is None:
        assert len(plan()) == 1
        return
    with pytest.raises(SweepError) as err:
        plan()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_preset_sections_merge_key_by_key(tmp_path):
    cfg = SweepConfig.from_dict({"preset": "smoke", "out": str(tmp_path), "recipe": {"steps": 9},
                                 "resources": {"workers": 3}})
    assert (cfg.recipe.steps, cfg.recipe.jitter) == (9, 4)
    assert (cfg.resources.workers, cfg.resources.num_gpus) == (3, 0)


def test_yaml_config(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("preset: smoke\nout: %s\nfeatures: {mode: sample, count: 2, seed: 3}\n" % (tmp_path / "r"))
    cfg = SweepConfig.from_yaml(str(path))
    assert cfg.features.mode == "sample" and cfg.weights == "random" and cfg.recipe.steps == 4
    assert SweepConfig.from_yaml(str(path), out="elsewhere").out == "elsewhere"
    bad = tmp_path / "bad.yaml"
    bad.write_text("out: [unclosed\n")
    with pytest.raises(SweepError, match="cannot read sweep config"):
        SweepConfig.from_yaml(str(bad))


def test_engine_and_recipe_defaults_sections(tmp_path):
    from sweep.cli import build_parser, sweep_config_from_args
    from sweep.method.engine import Engine

    cfg = SweepConfig.from_dict({"preset": "smoke", "out": str(tmp_path), "recipe": {"defaults": "paper"},
                                 "engine": {"precision": "fp32", "features_per_pass": 3}})
    assert cfg.engine == Engine("fp32", "auto", 3)
    assert cfg.recipe.defaults == "paper" and cfg.recipe.steps == 4  # the preset's recipe keys are kept
    assert SweepConfig.from_dict({"preset": "paper", "out": str(tmp_path)}).features_per_batch == 128
    with pytest.raises(SweepError, match="engine.speed: unknown key; allowed: adam, compile, compile_mode, "):
        SweepConfig.from_dict({"preset": "smoke", "out": str(tmp_path), "engine": {"speed": "max"}})
    with pytest.raises(SweepError, match="engine.precision: input should be 'auto', 'fp32' or 'bf16'; got 'fp16'"):
        SweepConfig.from_dict({"preset": "smoke", "out": str(tmp_path), "engine": {"precision": "fp16"}})
    args = build_parser().parse_args(["run", "--preset", "smoke", "--out", str(tmp_path), "--precision", "bf16",
                                      "--compile", "off", "--recipe", "paper"])
    cfg = sweep_config_from_args(args)
    assert cfg.engine == Engine("bf16", "off") and cfg.recipe.defaults == "paper"


def test_duplicates_are_planned_once(tmp_path):
    """A model by key and alias, a layer by index, text and name, a feature twice: each computed once."""
    cfg = SweepConfig.from_dict({"out": str(tmp_path), "weights": "random",
                                 "models": ["vit_tiny_patch16_224", "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
                                            "dev/vit-micro", "dev/vit-micro"],
                                 "layers": [1, "1", "blocks.1"], "features": [3, 3, 5]})
    assert cfg.models == ("vit_tiny_patch16_224", "vit_tiny_patch16_224.augreg_in21k_ft_in1k", "dev/vit-micro")
    assert cfg.layers == (1, "blocks.1") and cfg.features.indices == (3, 5)  # the name meets its index in expand
    triples = [tr for t in expand(cfg) for tr in t.triples()]
    assert len(triples) == len(set(triples)) == 4
    assert {m for m, *_ in triples} == {"vit_tiny_patch16_224.augreg_in21k_ft_in1k", "dev/vit-micro"}


def test_yaml_spellings_are_coerced(tmp_path):
    """PyYAML reads `1e-2` as text and `.5` as a float: both are the numbers the author meant."""
    path = tmp_path / "c.yaml"
    path.write_text(f"out: {tmp_path}\nmodels: dev/vit-micro\nlayers: 2\nfeatures: all\n"
                    "recipe: {lr: 1e-2, tv: '10', steps: '5'}\nresources: {num_cpus: .5}\n")
    cfg = SweepConfig.from_yaml(str(path))
    assert cfg.recipe.lr == 0.01 and cfg.recipe.tv == 10.0 and cfg.recipe.steps == 5
    assert cfg.models == ("dev/vit-micro",) and cfg.layers == (2,) and cfg.features.mode == "all"
    assert cfg.resources.num_cpus == 0.5
    flags = SweepConfig.from_yaml(str(path), recipe={"steps": 7})  # a flag overrides one key of the section
    assert flags.recipe.steps == 7 and flags.recipe.lr == 0.01


def test_demo_preset_adds_a_few_units_of_the_trained_model(tmp_path):
    """The README's first command: the smoke preset plus four units of the packaged ViT-S/14 with its
    own weights (pretrained), layers, features and steps, each at the paper's site and before its GELU
    (`sites`); the micro models keep the smoke settings."""
    cfg = SweepConfig.from_dict({"preset": "demo", "out": str(tmp_path)})
    tasks = expand(cfg)
    demo = [t.batch for t in tasks if t.batch.model == DEMO_MODEL]
    assert [(b.site, b.layer, b.features, b.weights, b.recipe.steps, b.recipe.jitter) for b in demo] == [
        (site, layer, (0, 1), "pretrained", 40, 32) for site in ("mlp", "mlp_pre") for layer in (1, 5)]
    # mlp_pre takes --recipe best: the vit_ssl family's promoted methods (sweep/method/tuned_recipes.json)
    assert [(b.site, b.layer, b.recipe.param, b.recipe.lr) for b in demo] == [
        ("mlp", 1, "pixel", None), ("mlp", 5, "pixel", None), ("mlp_pre", 1, "pixel", 0.1), ("mlp_pre", 5, "maco", 0.2)]
    micro = [t.batch for t in tasks if t.batch.model != DEMO_MODEL]
    assert len(micro) == 12 and {(b.weights, b.recipe.steps, b.recipe.jitter) for b in micro} == {("random", 4, 4)}
    summary = {r["model"]: r for r in plan_summary(cfg, tasks)}
    assert summary[DEMO_MODEL]["tflop"] > 1000 * summary["dev/vit-micro"]["tflop"]  # 40 steps at 224 px
    # The preset's per-model settings follow only the models still in the sweep.
    assert SweepConfig.from_dict({"preset": "demo", "out": str(tmp_path), "models": ["dev/vit-micro"]}).per_model == {}


def test_per_model_settings(tmp_path):
    cfg = SweepConfig.from_dict({
        "models": ["dev/vit-micro", "dev/deit-micro-distilled"], "out": str(tmp_path), "recipe": {"steps": 7, "tv": 2},
        "per_model": {"dev/deit-micro-distilled": {"layers": 0, "features": [3], "site": "q", "recipe": {"steps": 3}}}})
    batches = [t.batch for t in expand(cfg)]
    deit = [b for b in batches if b.model == "dev/deit-micro-distilled"]
    assert [(b.layer, b.site, b.features, b.recipe.steps, b.recipe.tv) for b in deit] == [(0, "q", (3,), 3, 2.0)]
    assert {(b.recipe.steps, b.site) for b in batches if b.model == "dev/vit-micro"} == {(7, "mlp")}
    # A key by alias-free name with model args folded in, as the models are.
    folded = SweepConfig.from_dict({"models": ["dev/vit-micro"], "model_args": ["depth=2"], "out": str(tmp_path),
                                    "per_model": {"dev/vit-micro": {"layers": [1]}}})
    assert [t.batch.layer for t in expand(folded)] == [1]
    both = SweepConfig.from_dict({"models": ["dev/vit-micro"], "out": str(tmp_path), "features": {"mode": "first", "count": 2},
                                  "per_model": {"dev/vit-micro": {"layers": [1], "sites": ["mlp", "mlp_pre", "mlp"]}}})
    assert [(t.batch.site, t.batch.features) for t in expand(both)] == [("mlp", (0, 1)), ("mlp_pre", (0, 1))]


@pytest.mark.parametrize("per_model, message", [
    ({"dev/deit-micro-distilled": {}}, "per_model names 'dev/deit-micro-distilled', which is not one of the sweep's"),
    ({"dev/vit-micro": {"weights": ""}}, "per_model.dev/vit-micro.weights"),
    ({"dev/vit-micro": {"layers": [9]}}, "layer 9 out of range"),
    ({"dev/vit-micro": {"recipe": {"stepz": 1}}}, "recipe.stepz: unknown key"),
    ({"dev/vit-micro": {"width": 1}}, "per_model.dev/vit-micro.width: unknown key; allowed: features, layers,"),
    ({"dev/vit-micro": {"weights": "pretrained"}}, "dev/vit-micro has no pretrained weights"),
    ({"dev/vit-micro": {"sites": []}}, "per_model.dev/vit-micro.sites"),
    ({"dev/vit-micro": {"sites": ["mlp", "nope"]}}, "nope"),
])
def test_bad_per_model_settings_are_one_line(tmp_path, per_model, message):
    from sweep.work.plan import check_plan

    with pytest.raises(SweepError) as err:
        check_plan(SweepConfig.from_dict({"models": ["dev/vit-micro"], "out": str(tmp_path), "weights": "random",
                                          "per_model": per_model}))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_count_above_some_widths_takes_theirs_with_a_word(tmp_path, caplog):
    """Layers 64 and 32 wide, the first 40 features asked: all 32 of the narrow one, and a warning
    that says so; above every width (65) it is refused (tests/test_bad_inputs_surfaces.py)."""
    config = SweepConfig.from_dict({"out": str(tmp_path), "weights": "random", "features": 40,
                                    "models": ["dev/vit-micro[tap=blocks.0.mlp.fc1|blocks.0.mlp.fc2]"]})
    with caplog.at_level("WARNING", logger="sweep.work.plan"):
        tasks = expand(config)
    planned = {t.batch.layer: 0 for t in tasks}
    for t in tasks:
        planned[t.batch.layer] += len(t.batch.features)
    assert planned == {0: 40, 1: 32}
    assert any("1 of 2 layer(s) have fewer than 40 features (the narrowest 32)" in r.getMessage()
               for r in caplog.records)
