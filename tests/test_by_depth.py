"""The best method per depth (issue 28): choosing it from benchmark scores, promoting it with the
family's tuned values, and `--recipe best` rendering each block with its range's method."""

import json

import pandas as pd
import pytest

from sweep import cli
from sweep.core.errors import SweepError
from sweep.method.by_depth import DepthMethod, family_methods, method_at, pick_method, promote_methods, split_by_depth
from sweep.method.recipe import Recipe
from sweep.method.tuned import family_defaults, promote, resolve_recipe
from sweep.models.anatomy import anatomy_of
from sweep.work.batch import batch_hash
from sweep.work.plan import SweepConfig, expand

MODEL = "dev/vit-micro"  # 3 blocks, family vit
METHODS = (DepthMethod(0.0, "pixel", "mlp", 0.1, 1.0), DepthMethod(0.5, "maco", "mlp_pre", 0.2, 1.0))


@pytest.fixture
def registry(tmp_path, monkeypatch):
    path = tmp_path / "tuned.json"
    monkeypatch.setattr("sweep.method.tuned.TUNED_PATH", path)
    return path


def test_split_by_depth_switches_only_where_it_visualizes_more():
    early, late = [(8, 100.0)] * 3 + [(2, 50.0)] * 3, [(3, 60.0)] * 3 + [(7, 99.0)] * 3
    assert split_by_depth({"pixel": early, "maco": late}) == ((0, "pixel"), (3, "maco"))
    assert split_by_depth({"maco": late, "pixel": early}) == ((0, "pixel"), (3, "maco"))
    # a split that only ties the best single method is not taken; ties go to the method listed first
    assert split_by_depth({"a": [(4, 10.0), (4, 10.0)], "b": [(4, 0.0), (3, 90.0)]}) == ((0, "a"),)
    assert split_by_depth({"a": [(1, 0.0), (1, 0.0)], "b": [(1, 0.0), (1, 0.0)]}) == ((0, "a"),)
    with pytest.raises(SweepError, match="every method needs a score for every block"):
        split_by_depth({"a": [(1, 0.0)], "b": [(1, 0.0), (1, 0.0)]})


def test_promoted_methods_and_tuned_values_live_side_by_side(registry):
    entry = anatomy_of(MODEL).entry
    assert family_methods(entry) == ()
    promote_methods("vit", METHODS, {"model": "demo/dinov2-vits14", "benchmark": "x.csv"})
    promote("vit", 0.05, 3.0, {"model": MODEL, "grid": "test"})  # a later tuning keeps the methods
    assert family_methods(entry) == METHODS
    assert (family_defaults(entry).lr, family_defaults(entry, "best").tv) == (0.05, 3.0)
    stored = json.loads(registry.read_text())["vit"]
    assert stored["by_depth"]["provenance"]["benchmark"] == "x.csv" and stored["provenance"]["grid"] == "test"
    assert [method_at(METHODS, i, 4).param for i in range(4)] == ["pixel", "pixel", "maco", "maco"]
    assert [method_at(METHODS, i, 3).param for i in range(3)] == ["pixel", "pixel", "maco"]  # 2/3 >= 0.5
    registry.write_text(json.dumps({"vit": {"by_depth": {"methods": [{"start": 0.2, "param": "pixel"}]}}}))
    with pytest.raises(SweepError, match="by_depth is malformed"):
        family_methods(entry)
    with pytest.raises(SweepError, match="must start at depth 0"):
        promote_methods("vit", METHODS[1:], {})


def test_recipe_best_picks_each_blocks_method(registry):
    anatomy = anatomy_of(MODEL)
    first, last = anatomy.block(0), anatomy.block(2)
    best = Recipe(defaults="best", steps=3)
    assert pick_method(best, None, anatomy, last) == ("mlp", best)  # nothing promoted: the recipe as it is
    promote_methods("vit", METHODS, {"model": "demo/dinov2-vits14"})
    assert pick_method(Recipe(steps=3), None, anatomy, last) == ("mlp", Recipe(steps=3))  # tuned: untouched
    site, recipe = pick_method(best, None, anatomy, first)
    assert (site, recipe.param, recipe.lr, recipe.tv) == ("mlp", "pixel", 0.1, 1.0)
    site, recipe = pick_method(best, None, anatomy, last)
    assert (site, recipe.param, recipe.lr, recipe.tv) == ("mlp_pre", "maco", 0.2, 1.0)
    site, recipe = pick_method(Recipe(defaults="best", lr=0.7), "mlp", anatomy, last)  # given values win
    assert (site, recipe.param, recipe.lr) == ("mlp", "maco", 0.7)
    resolved, source = resolve_recipe(recipe, anatomy.entry, 32)
    assert source.startswith("best:vit ") and "demo/dinov2-vits14" in source and resolved.lr == 0.7
    with pytest.raises(SweepError, match="recipe best picks the parametrization per depth"):
        pick_method(Recipe(defaults="best", param="fourier"), None, anatomy, last)
    with pytest.raises(SweepError, match="recipe best picks param maco at block 2 of dev/vit-micro"):
        pick_method(Recipe(defaults="best", accentuate="photo:coffee"), None, anatomy, last)


def test_a_sweep_with_recipe_best_plans_each_block_with_its_method(registry, tmp_path):
    promote_methods("vit", METHODS, {"model": "demo/dinov2-vits14"})
    config = {"out": str(tmp_path), "models": [MODEL], "weights": "random", "features": {"mode": "first", "count": 2}}
    tasks = expand(SweepConfig.from_dict({**config, "recipe": {"defaults": "best", "steps": 3}}))
    planned = {(t.batch.layer, t.batch.site, t.batch.recipe.param) for t in tasks}
    assert planned == {(0, "mlp", "pixel"), (1, "mlp", "pixel"), (2, "mlp_pre", "maco")}
    # the same images as the method given by hand: one config hash
    by_hand = expand(SweepConfig.from_dict({**config, "layers": [2], "site": "mlp_pre",
                                            "recipe": {"param": "maco", "lr": 0.2, "tv": 1.0, "steps": 3}}))
    assert batch_hash(by_hand[0].batch) == batch_hash(next(t.batch for t in tasks if t.batch.layer == 2))
    both = expand(SweepConfig.from_dict({**config, "per_model": {MODEL: {"sites": ["mlp", "mlp_pre"]}},
                                         "recipe": {"defaults": "best"}}))  # sites given: the user's
    assert {(t.batch.layer, t.batch.site, t.batch.recipe.param) for t in both} >= {(2, "mlp", "maco"), (2, "mlp_pre", "maco"),
                                                                                   (0, "mlp_pre", "pixel")}


def test_cli_visualize_recipe_best_records_the_method_it_used(registry, tmp_path):
    promote_methods("vit", METHODS, {"model": "demo/dinov2-vits14"})
    common = ["visualize", "--model", MODEL, "--feature", "4", "--weights", "random", "--steps", "2",
              "--precision", "fp32", "--recipe", "best", "--quiet"]
    assert cli.main([*common, "--layer", "2", "--out", str(tmp_path / "r")]) == 0
    rows = pd.concat(pd.read_parquet(p) for p in (tmp_path / "r").rglob("*.parquet") if "features" in str(p))
    row = rows.iloc[0]
    assert (row["site"], row["param"], row["lr"], row["recipe_source"].split()[0]) == ("mlp_pre", "maco", 0.2, "best:vit")
    assert cli.main([*common, "--layer", "2", "--param", "fourier", "--out", str(tmp_path / "s")]) == 2


def test_site_recipes_give_one_site_its_own_recipe(registry, tmp_path):
    """The demo's way of showing the paper's image beside the best method's: one site each."""
    promote_methods("vit", METHODS, {"model": "demo/dinov2-vits14"})
    config = {"out": str(tmp_path), "models": [MODEL], "weights": "random", "features": {"mode": "first", "count": 1},
              "recipe": {"steps": 3}}
    per_model = {MODEL: {"sites": ["mlp", "mlp_pre"], "recipe": {"jitter": 4}, "site_recipes": {"mlp_pre": {"defaults": "best"}}}}
    tasks = expand(SweepConfig.from_dict({**config, "per_model": per_model}))
    got = {(t.batch.layer, t.batch.site): (t.batch.recipe.param, t.batch.recipe.steps, t.batch.recipe.jitter) for t in tasks}
    assert got == {(0, "mlp"): ("pixel", 3, 4), (1, "mlp"): ("pixel", 3, 4), (2, "mlp"): ("pixel", 3, 4),
                   (0, "mlp_pre"): ("pixel", 3, 4), (1, "mlp_pre"): ("pixel", 3, 4), (2, "mlp_pre"): ("maco", 3, 4)}
    assert {t.batch.recipe.defaults for t in tasks if t.batch.site == "mlp"} == {"tuned"}
    stray = {MODEL: {"sites": ["mlp"], "site_recipes": {"mlp_pre": {"defaults": "best"}}}}
    with pytest.raises(SweepError, match="site_recipes names site 'mlp_pre', which is not one of the model's sites"):
        SweepConfig.from_dict({**config, "per_model": stray})
