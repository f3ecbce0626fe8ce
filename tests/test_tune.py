"""Recipe tuning: scores on images of known statistics, Tune trials on local Ray with resume,
tuned family defaults with provenance, and `--recipe paper` restoring the paper's images exactly."""

import json
import math
import os

import pytest
import torch
from PIL import Image

from sweep import cli
from sweep.core.errors import SweepError
from sweep.method.engine import Engine
from sweep.method.recipe import Recipe
from sweep.method.render import render, seeds_for
from sweep.method.scores import combined_score, saturated_fraction, spectrum_slope, total_variation
from sweep.method.tuned import family_defaults, promote, resolve_recipe
from sweep.models.anatomy import anatomy_of
from sweep.models.build import build
from sweep.pipelines.tune import TuneJob, best_trial, parse_grid, promote_best, run_tune
from sweep.store.results import Results
from sweep.views.figures import tuning_sheet
from sweep.work.tuning import noise_references

MODEL = "dev/vit-micro"


def one_over_f(size: int, seed: int) -> torch.Tensor:
    """A grey image whose amplitude spectrum falls as 1/f (power as 1/f^2), scaled to [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    f = torch.sqrt(torch.fft.fftfreq(size)[:, None] ** 2 + torch.fft.fftfreq(size)[None, :] ** 2)
    spectrum = torch.exp(1j * torch.rand((size, size), generator=gen) * 2 * math.pi) / f.clamp_min(1 / size)
    img = torch.fft.ifft2(spectrum).real
    return ((img - img.min()) / (img.max() - img.min())).expand(3, size, size)


def test_scores_on_images_of_known_statistics():
    flat, black = torch.full((3, 96, 96), 0.5), torch.zeros(3, 96, 96)
    noise = torch.rand((3, 128, 128), generator=torch.Generator().manual_seed(0))
    pink = one_over_f(128, 1)
    assert total_variation(flat) == 0 and saturated_fraction(flat) == 0 and math.isnan(spectrum_slope(flat))
    assert saturated_fraction(black) == 1.0
    assert total_variation(noise) == pytest.approx(1 / 3, abs=0.01)        # E|U1 - U2| = 1/3
    assert saturated_fraction(noise) == pytest.approx(2 / 255, abs=0.003)  # both 1/255 ends of U[0, 1)
    assert abs(spectrum_slope(noise)) < 0.15                               # white: flat spectrum
    assert spectrum_slope(pink) == pytest.approx(-2.0, abs=0.15)           # natural-image-like
    assert total_variation(pink) < total_variation(noise) / 3
    # Same drive, the 1/f image scores higher than noise; saturation and flatness cost.
    assert combined_score(1, 1, saturated_fraction(pink), spectrum_slope(pink)) > \
        combined_score(1, 1, saturated_fraction(noise), spectrum_slope(noise)) + 0.4
    assert combined_score(1, 1, 0, -2) == 1.0
    assert combined_score(1, 1, 0, math.nan) == 0.5
    assert combined_score(5, 3, 0, -2) == 2.0  # capped drive


def test_noise_references_are_seeded_with_the_intended_spectra():
    refs = noise_references(4, 64, seed=3)
    assert refs.shape == (4, 3, 64, 64) and refs.min() >= 0 and refs.max() <= 1
    assert torch.equal(refs, noise_references(4, 64, seed=3))
    assert abs(spectrum_slope(refs[0])) < 0.3 and spectrum_slope(refs[3]) == pytest.approx(-2, abs=0.3)


def test_grid_parsing_and_bad_grids():
    assert parse_grid(["lr=0.1,1", "tv=1"]) == {"lr": (0.1, 1.0), "tv": (1.0,)}
    assert parse_grid(["lr=0.01;tv=10,100"]) == {"lr": (0.01,), "tv": (10.0, 100.0)}
    for bad, match in (["beta=1"], "expected lr="), (["lr=a,b"], "give numbers"), (["tv=0"], "positive"):
        with pytest.raises(SweepError, match=match):
            parse_grid(bad)


def test_search_points_are_seeded_and_in_range():
    job = TuneJob(MODEL, "unused", search=5, search_seed=1)
    points = job.points()
    assert points == TuneJob(MODEL, "unused", search=5, search_seed=1).points()
    assert points != TuneJob(MODEL, "unused", search=5, search_seed=2).points()
    assert all(0.01 <= lr <= 1 and 0.01 <= tv <= 100 for lr, tv in points)
    assert len(TuneJob(MODEL, "unused").points()) == 25  # the paper's 5 x 5 grid by default


@pytest.fixture(scope="module")
def tuned_root(tmp_path_factory, ray_local):
    """A 2 x 2 grid on local Ray (random micro ViT, CPU trials), run once for the module."""
    out = tmp_path_factory.mktemp("tune")
    job = TuneJob(MODEL, str(out), lrs=(0.05, 0.5), tvs=(0.1, 10.0), layers=(1,), features=2, weights="random",
                  recipe=Recipe(steps=4), reference_count=6, robustness_draws=2, num_cpus=0.5)
    return job, run_tune(job)


def test_grid_writes_one_row_per_trial_and_resumes(tuned_root):
    job, first = tuned_root
    assert (first.ran, first.skipped, first.errors) == (4, 0, [])
    frame = Results(job.out).tuning(model=MODEL)
    assert len(frame) == 4 and sorted(zip(frame.lr, frame.tv)) == [(0.05, 0.1), (0.05, 10), (0.5, 0.1), (0.5, 10)]
    assert set(frame.status) == {"ok"} and frame["combined"].notna().all()
    for paths in frame["image_paths"]:
        for p in paths:
            assert Image.open(os.path.join(job.out, p)).size == (32, 32)
    assert all(list(u) == [1, 1] for u in frame["unit_layer"])
    again = run_tune(job)
    assert (again.ran, again.skipped) == (0, 4)
    # Lose one trial's row: only that trial runs again, and it scores the same (seeded, CPU).
    victim = frame.iloc[0]
    os.remove(os.path.join(job.out, "tuning", "model=dev%2Fvit-micro", f"trial-{victim.trial}.parquet"))
    third = run_tune(job)
    assert (third.ran, third.skipped) == (1, 3)
    redo = Results(job.out).tuning(model=MODEL).set_index("trial").loc[victim.trial]
    assert redo["combined"] == pytest.approx(victim["combined"], rel=1e-6)


def test_contact_sheet_of_the_grid(tuned_root, tmp_path):
    job, _ = tuned_root
    sheet, table = tuning_sheet(Results(job.out), MODEL, cell=64)
    assert sheet.size == (110 + 2 * 64, 16 + 2 * (64 + 16))  # row labels, tv header, 2 x 2 captioned cells
    assert list(table.index) == [0.05, 0.5] and list(table.columns) == [0.1, 10.0]
    from analysis import tune_sheet

    out = tmp_path / "sheet.png"
    assert tune_sheet.main(["--results", job.out, "--model", MODEL, "--out", str(out)]) == 0
    assert out.exists() and (tmp_path / "sheet.csv").exists()
    assert tune_sheet.main(["--results", job.out, "--model", MODEL, "--unit", "0:0", "--out", str(out)]) == 2


def test_cli_tune_promotes_the_best_trial_with_provenance(tuned_root, tmp_path, capsys):
    job, _ = tuned_root
    registry = tmp_path / "tuned.json"
    code = cli.main(["tune", "--model", MODEL, "--weights", "random", "--out", job.out, "--grid", "lr=0.05,0.5",
                     "tv=0.1,10", "--layers", "1", "--features", "2", "--steps", "4", "--reference-count", "6",
                     "--robustness-draws", "2", "--cpus-per-trial", "0.5", "--quiet", "--promote",
                     "--registry-file", str(registry)])
    out = capsys.readouterr().out
    assert code == 0 and "0 trial(s) run, 4 already present" in out
    best = best_trial(Results(job.out).tuning(model=MODEL))
    stored = json.loads(registry.read_text())["vit"]
    assert (stored["lr"], stored["tv"]) == (best.lr, best.tv)
    prov = stored["provenance"]
    assert prov["model"] == MODEL and prov["grid"] == "grid lr=0.05,0.5 tv=0.1,10.0"
    assert prov["score"].startswith("combined-v1") and prov["trials"] == 4 and prov["date"]
    assert promote_best(job, Results(job.out).tuning(model=MODEL), registry)["lr"] == best.lr


def test_tuned_defaults_are_used_and_recipe_paper_restores_the_paper(tmp_path, monkeypatch):
    anatomy = anatomy_of(MODEL)
    net = build(anatomy.entry, "random")
    block, feats = anatomy.block(1), [3, 8]
    exact = Engine("fp32", "off", 2)

    def image(recipe: Recipe) -> torch.Tensor:
        return render(net, anatomy, block, "mlp", feats, recipe, seeds_for(feats), "cpu", engine=exact).images

    registry = tmp_path / "tuned.json"
    monkeypatch.setattr("sweep.method.tuned.TUNED_PATH", registry)
    base = Recipe(steps=5, jitter=4)
    default_before = image(base)
    assert torch.equal(image(Recipe(steps=5, jitter=4, defaults="paper")), default_before)  # no tuning: same
    promote("vit", 0.5, 10.0, {"model": MODEL, "grid": "test"})
    assert family_defaults(anatomy.entry).source.startswith("tuned:vit")
    assert family_defaults(anatomy.entry, "paper").source == "paper"
    tuned = image(base)
    assert not torch.equal(tuned, default_before)
    assert torch.equal(tuned, image(Recipe(steps=5, jitter=4, lr=0.5, tv=10.0)))
    assert torch.equal(image(Recipe(steps=5, jitter=4, defaults="paper")), default_before)  # bit for bit
    resolved, source = resolve_recipe(Recipe(tv=3.0, lr=0.2), anatomy.entry, 32)
    assert (resolved.lr, resolved.tv, source) == (0.2, 3.0, "given")
    with pytest.raises(SweepError, match="Recipe.defaults: input should be 'tuned', 'paper' or 'best'; got 'mine'"):
        Recipe(defaults="mine")


def test_cli_recipe_paper_is_bit_for_bit_the_default(tmp_path):
    common = ["visualize", "--model", MODEL, "--layer", "1", "--feature", "4", "--weights", "random",
              "--steps", "3", "--jitter", "2", "--precision", "fp32", "--quiet"]
    assert cli.main([*common, "--out", str(tmp_path / "a")]) == 0
    assert cli.main([*common, "--recipe", "paper", "--out", str(tmp_path / "b")]) == 0
    rel = "images/model=dev%2Fvit-micro/layer=1/mlp-4.png"
    assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    rows = Results(str(tmp_path / "b")).features(model=MODEL)
    assert list(rows["recipe_source"]) == ["paper"] and list(rows["tv"]) == [1.0]


def test_bad_tuning_input_fails_before_any_trial(tmp_path):
    with pytest.raises(SweepError, match="has no pretrained weights"):
        run_tune(TuneJob(MODEL, str(tmp_path / "a"), lrs=(0.1,), tvs=(1.0,)))
    with pytest.raises(SweepError, match="does not exist or is not a folder"):
        run_tune(TuneJob(MODEL, str(tmp_path / "b"), lrs=(0.1,), tvs=(1.0,), weights="random",
                         reference=str(tmp_path / "missing")))
    with pytest.raises(SweepError, match="allowed"):
        TuneJob("no-such-model", str(tmp_path)).specs()
