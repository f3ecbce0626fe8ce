"""CLIP text directions in a layer's space (issue 28): the pull-back recovers a planted linear map,
and the job writes directions the direction objective renders (random weights, a random judge)."""

import json

import numpy as np
import pytest

from sweep import cli
from sweep.core.errors import SweepError
from sweep.experiments.text_direction import fit_readout, top_units

JOB = ["--model", "dev/vit-micro", "--layer", "1", "--weights", "random", "--judge", "ViT-B-32/openai",
       "--judge-weights", "random", "--limit", "12", "--templates", "none"]


def planted(n: int, width: int, dim: int, seed: int, noise: float):
    gen = np.random.default_rng(seed)
    features = gen.normal(size=(n, width)) * gen.uniform(0.5, 3.0, width) + gen.normal(size=width)
    true_map = gen.normal(size=(width, dim))
    return features, features @ true_map + noise * gen.normal(size=(n, dim)), true_map, gen


def test_the_pull_back_recovers_a_planted_map():
    features, embeddings, true_map, gen = planted(300, 24, 6, 0, 0.5)
    readout = fit_readout(features, embeddings)
    assert readout.r2_heldout > 0.95 and readout.images == 300
    for _ in range(3):
        text = gen.normal(size=6)
        got, want = readout.pull_back(text[None])[0], true_map @ text  # the gradient of <F A, t> in F
        assert float(got @ want / np.linalg.norm(got) / np.linalg.norm(want)) > 0.98
    unrelated = fit_readout(features, gen.normal(size=(300, 6)))  # a layer that carries nothing of the judge
    assert unrelated.r2_heldout < 0.05
    assert top_units(np.array([0.1, -2.0, 3.0, 0.5]), 2) == [(2, pytest.approx(3 / np.sqrt(13.26))),
                                                            (3, pytest.approx(0.5 / np.sqrt(13.26)))]
    with pytest.raises(SweepError, match="at least 8 are needed"):
        fit_readout(features[:5], embeddings[:5])


def test_job_writes_directions_the_direction_objective_renders(tmp_path, capsys):
    from jobs import text_direction

    out = tmp_path / "dirs.npy"
    assert text_direction.main([*JOB, "--text", "a dog", "a red car", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fit on 12 probe images, held-out R²" in printed and "feature 1: 'a red car'" in printed
    directions = np.load(out, allow_pickle=False)
    assert directions.shape == (2, 64) and directions.dtype == np.float32 and np.isfinite(directions).all()
    described = json.loads((tmp_path / "dirs.json").read_text())
    assert [f["text"] for f in described["features"]] == ["a dog", "a red car"]
    assert (described["layer"], described["site"], described["images"], described["probe"]) == (1, "mlp", 12, "photos")
    assert cli.main(["visualize", "--model", "dev/vit-micro", "--layer", "1", "--weights", "random", "--steps", "2",
                     "--objective", "direction", "--direction", str(out), "--feature", "0", "1",
                     "--precision", "fp32", "--quiet", "--out", str(tmp_path / "r")]) == 0
    assert len(list((tmp_path / "r").rglob("*.png"))) == 2


@pytest.mark.parametrize("extra, message", [
    (["--text", "a dog", "--out", "dirs.txt"], "the directions are a .npy file"),
    (["--text", " ", "--out", "d.npy"], "--text: empty text"),
    (["--text", "a dog", "--out", "d.npy", "--judge", "Nope-B-32/openai"], "Nope-B-32"),
    (["--text", "a dog", "--out", "d.npy", "--layer", "9"], "layer"),
    (["--text", "a dog", "--out", "d.npy", "--site", "nowhere"], "nowhere"),
    (["--text", "a dog", "--out", "d.npy", "--limit", "0"], "--limit"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, extra, message):
    from jobs import text_direction

    args = [*JOB, *extra]
    args = [a if a not in ("d.npy", "dirs.txt") else str(tmp_path / a) for a in args]
    assert text_direction.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("text_direction.py: error:") and message in err[0], err
    assert not list(tmp_path.iterdir())  # nothing written
