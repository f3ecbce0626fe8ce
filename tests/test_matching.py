"""Cross-model unit matching (jobs/matching.py): planted twins found with score 1, unrelated random
networks matched by nothing strong, sums in shards equal to the whole, resumable, bad inputs one line."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from sweep.experiments.matching import PairSums, ProfileWriter, moments, read_done, rosetta_sets, shards, unit_stats
from sweep.store.results import Results

BASE = "module:model_factories:relu_mixer"
TWIN = "module:model_factories:relu_mixer[twin=1]"
OTHER = "module:model_factories:relu_mixer[seed=5]"
#: Unrelated random networks on 200 noise images: their best mutual match stayed at 0.28 (max over
#: seeds tried: 0.28); a spurious correlation of 0.5 over 200 images is about 7 standard errors.
UNRELATED_BELOW = 0.5


def twin_of() -> dict:
    """(layer, base unit) -> the twin's unit, as relu_mixer(twin=1) permuted them."""
    t = torch.Generator().manual_seed(1001)
    out = {}
    for layer in range(2):
        perm = torch.randperm(32, generator=t)
        torch.rand(32, generator=t)  # the scales, drawn after each block's permutation
        for j, u in enumerate(perm.tolist()):
            out[(layer, u)] = j
    return out


def test_sums_in_shards_equal_the_whole_and_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 7)), rng.normal(size=(50, 5))
    b[:, 0] = 3 * a[:, 2] + 1  # an affine copy: correlation 1
    b[:, 1] = 4.0  # constant: correlates with nothing
    whole = PairSums(7, 5).update(a, b)
    parts = PairSums(7, 5)
    for i in range(0, 50, 13):
        parts.update(a[i:i + 13], b[i:i + 13])
    assert parts.n == whole.n == 50
    for name in ("sum_a", "sum_a2", "sum_b", "sum_b2", "sum_ab"):  # the products are float32's (see PairSums)
        assert torch.allclose(getattr(parts, name), getattr(whole, name), rtol=1e-6, atol=1e-5)
    corr = whole.correlation().numpy()
    expected = np.corrcoef(a.T, b.T)[:7, 7:]
    live = [0, 2, 3, 4]
    assert np.allclose(corr[:, live], expected[:, live], atol=1e-6)
    # standardized by the profile scan's moments: the same correlations (Pearson ignores the affine change)
    big = 1000 + 50 * a  # far from 0: raw float32 products would lose digits
    std = PairSums(7, 5, center_a=big.mean(0), scale_a=1 / big.std(0)).update(big, b)
    assert np.allclose(std.correlation().numpy()[:, live], expected[:, live], atol=1e-6)
    assert corr[2, 0] == pytest.approx(1.0) and (corr[:, 1] == 0).all()
    assert whole.live()[1].tolist() == [True, False, True, True, True]


def test_an_image_missing_in_either_model_is_left_out_of_both():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20, 3)), rng.normal(size=(20, 4))
    a[3], b[7] = np.nan, np.nan
    sums = PairSums(3, 4).update(a, b)
    keep = [i for i in range(20) if i not in (3, 7)]
    assert sums.n == 18
    assert np.allclose(sums.correlation().numpy(), np.corrcoef(a[keep].T, b[keep].T)[:3, 3:], atol=1e-6)


def test_profile_shards_hold_listing_order_whatever_order_batches_come(tmp_path):
    import fsspec

    fs = fsspec.filesystem("file")
    rng = np.random.default_rng(2)
    acts = rng.normal(size=(23, 7)).astype(np.float32)
    writer = ProfileWriter(fs, str(tmp_path), 23, [0, 3], [4, 3], chunk=5)
    order = rng.permutation(23)
    for i in range(0, 23, 4):
        idx = order[i:i + 4]
        writer.add(idx, acts[idx])
    done = writer.finish({"model": "m"})
    assert done == read_done(fs, str(tmp_path)) and done["shards"] == 5 and done["readable"] == 23
    mean, inv = moments(fs, str(tmp_path), done)[3]
    assert np.allclose(mean, acts[:, 4:].mean(0), atol=1e-6) and np.allclose(inv, 1 / acts[:, 4:].std(0), rtol=1e-5)
    assert np.array_equal(unit_stats(fs, str(tmp_path), done)[0][2], acts[:, :4].max(0))
    assert np.array_equal(np.concatenate(list(shards(fs, str(tmp_path), done, [0]))), acts[:, :4])
    assert np.array_equal(np.concatenate(list(shards(fs, str(tmp_path), done, [3]))), acts[:, 4:])
    assert np.array_equal(np.concatenate(list(shards(fs, str(tmp_path), done, [3, 0]))), acts[:, [4, 5, 6, 0, 1, 2, 3]])
    np.save(tmp_path / "layer-3-00001.npy", np.zeros((4, 3), np.float32))  # a damaged shard: one line
    with pytest.raises(Exception, match=r"float32 \(4, 3\), expected float32 \(5, 3\)"):
        list(shards(fs, str(tmp_path), done, [3]))


def test_rosetta_sets_are_mutual_matches_across_models():
    rows = []

    def link(a, b, score):
        for x, y in ((a, b), (b, a)):
            rows.append({"model_a": x[0], "layer_a": x[1], "site_a": "mlp", "unit_a": x[2], "model_b": y[0],
                         "layer_b": y[1], "site_b": "mlp", "unit_b": y[2], "score": score, "rank": 0, "mutual": True})

    link(("A", 0, 1), ("B", 2, 5), 0.9)
    link(("B", 2, 5), ("C", 1, 0), 0.8)
    link(("A", 3, 3), ("B", 0, 0), 0.7)  # two models only
    link(("A", 0, 7), ("C", 0, 1), 0.95)
    link(("C", 0, 1), ("A", 1, 1), 0.95)  # two units of A in one group: not a set
    sets = rosetta_sets(pd.DataFrame(rows), min_models=3)
    assert sets["set"].nunique() == 1
    assert set(zip(sets["model"], sets["layer"], sets["unit"])) == {("A", 0, 1), ("B", 2, 5), ("C", 1, 0)}
    assert sets["score_min"].iloc[0] == pytest.approx(0.8)
    assert rosetta_sets(pd.DataFrame(rows), min_models=2)["set"].nunique() == 2


@pytest.fixture(scope="module")
def probe(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("probe")
    rng = np.random.default_rng(0)
    for i in range(200):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(root / f"img{i:03d}.png")
    (root / "broken.png").write_bytes(b"not a png")
    return root


def run_job(*argv):
    from sweep_checks import job_main

    return job_main("matching")([*map(str, argv)])


def test_planted_twin_found_first_with_score_one_unrelated_matches_nothing_strong(probe, tmp_path, capsys):
    out = tmp_path / "root"
    code = run_job("--model", BASE, TWIN, OTHER, "--weights", "random", "--images", probe, "--out", out,
                   "--k", 3, "--chunk", 64, "--batch-size", 32, "--min-models", 2)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "3 pair(s): matched 3, skipped 0" in printed
    results = Results(str(out))
    base = results.matches(model=BASE, other=TWIN)
    assert set(base["images"]) == {200}  # the broken file left out
    best = base[base["rank"] == 0]
    twins = twin_of()
    live = len(best)
    assert live >= 48  # of 64 units: the rest never fire on these images (dead ReLUs), and match nothing
    assert ((best["layer_b"] == best["layer_a"]).all()
            and [twins[(la, ua)] for la, ua in zip(best["layer_a"], best["unit_a"])] == best["unit_b"].tolist())
    assert (best["score"] > 0.9999).all() and best["mutual"].all()
    back = results.matches(model=TWIN, other=BASE, mutual=True)
    assert len(back) == live and (back["score"] > 0.9999).all()
    unrelated = results.matches(model=BASE, other=OTHER, mutual=True)
    assert len(unrelated) > 0 and unrelated["score"].max() < UNRELATED_BELOW
    ranks = results.matches(model=BASE, layer=1, unit=int(best["unit_a"].iloc[-1]), other=OTHER)
    assert ranks["rank"].tolist() == [0, 1, 2] and ranks["score"].is_monotonic_decreasing
    assert set(results.matches()["weights_a"]) == {"random"}
    # the twins' units are Rosetta sets of two models (min 2): one per live unit
    assert f"{live} Rosetta set(s) across at least 2 models" in printed
    # resumed: nothing recomputed
    assert run_job("--model", BASE, TWIN, OTHER, "--weights", "random", "--images", probe, "--out", out,
                   "--k", 3, "--chunk", 64) == 0
    assert "matched 0, skipped 3" in capsys.readouterr().out
    # a new probe set (the first 120 files, the broken one among them): matched again, one part per pair
    assert run_job("--model", BASE, TWIN, "--weights", "random", "--images", probe, "--limit", 120, "--out", out,
                   "--k", 3, "--chunk", 64) == 0
    again = Results(str(out)).matches(model=BASE, other=TWIN)
    assert set(again["images"]) == {119} and len(list((out / "matches").glob("*/part-*.parquet"))) == 3


def test_bad_inputs_are_one_line_and_write_nothing(probe, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "keep.txt").write_text("mine")
    cases = [
        (["--model", "no_such_model_xyz", BASE], root, "no_such_model_xyz"),
        (["--model", BASE], root, "models: matching needs at least two models"),
        (["--model", BASE, BASE], root, "name each model once"),
        (["--model", BASE, TWIN, "--images", empty], root, "no images"),
        (["--model", BASE, TWIN, "--k", 0], root, "--k"),
        (["--model", BASE, TWIN, "--weights", "random", "random", "random"], root, "weights: give one"),
        (["--model", BASE, TWIN, "--layers", 9], root, "9"),
    ]  # weights other than a root's rows were made with: in the transfer test, which has such a root
    for argv, out, needle in cases:
        before = sorted(p.relative_to(out) for p in out.rglob("*"))
        argv = argv + ([] if "--weights" in argv else ["--weights", "random"])
        code = run_job(*argv, "--out", out)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("matching.py: error:"), (argv, err)
        assert needle in err[0], (needle, err[0])
        assert sorted(p.relative_to(out) for p in out.rglob("*")) == before, argv


def test_layer_groups_fit_the_budget_and_give_the_same_matches():
    from sweep.experiments.matching import layer_groups, match_pair

    assert layer_groups([4, 4, 4], 10, budget_bytes=8 * 10 * 8) == [[0, 1], [2]]
    assert layer_groups([4, 4, 4], 10, budget_bytes=1) == [[0], [1], [2]]  # a layer alone even when over
    rng = np.random.default_rng(3)
    a = {0: rng.normal(size=(40, 6)), 1: rng.normal(size=(40, 5)), 2: rng.normal(size=(40, 4))}
    b = {0: rng.normal(size=(40, 3)), 1: np.column_stack([a[1][:, 2] * 2, rng.normal(size=(40, 6))])}

    def reader(profile):
        return lambda layers: (np.concatenate([profile[layer][i:i + 9] for layer in layers], 1) for i in range(0, 40, 9))

    runs = [match_pair(reader(a), [0, 1, 2], [6, 5, 4], reader(b), [0, 1], [3, 7], 2, budget_bytes=budget)
            for budget in (1, 1e9)]
    for (top_a1, top_b1, n1), (top_a2, top_b2, n2) in [runs]:
        assert n1 == n2 == 40
        for one, two in ((top_a1, top_a2), (top_b1, top_b2)):
            for layer in one:
                assert torch.equal(one[layer].ids, two[layer].ids)
                assert torch.allclose(one[layer].values, two[layer].values, atol=1e-6)
    top_a = runs[0][0]
    assert top_a[1].ids[2, 0] == 3 and top_a[1].values[2, 0] == pytest.approx(1.0)  # b's unit 3 = layer 1 unit 0


def test_transfer_scores_a_visualization_on_its_twin_as_on_its_own_model(probe, tmp_path, capsys):
    """The twin computes the same function with rescaled units, so the counterpart's z on each of the
    base model's images equals the base unit's own z, and so does beating every probe image."""
    import fsspec

    from sweep.experiments.matching import read_done
    from sweep.experiments.transfer import TransferScanner, profile_folder, transfer_scores
    from sweep.method.recipe import Recipe
    from sweep.work.visualize import VisualizeJob, run_visualize
    from sweep_checks import job_main

    out = tmp_path / "root"
    run_visualize(VisualizeJob(BASE, 1, tuple(range(8)), weights="random", recipe=Recipe(steps=4, jitter=2)), str(out))
    transfer = job_main("transfer")
    assert transfer(["--model", BASE, "--other", TWIN, "--out", str(out)]) == 2  # no matches yet: one line
    assert "run jobs/matching.py" in capsys.readouterr().err
    assert run_job("--model", BASE, TWIN, "--weights", "random", "--images", probe, "--limit", 60, "--out", out,
                   "--layers", 1, "--chunk", 25) == 0
    done = [json.loads(p.read_text()) for p in (out / "_profiles").rglob("done.json")]
    assert len(done) == 2 and all(d["images"] == 60 and d["shards"] == 3 and d["layers"] == [1] for d in done)
    # the root's rows of BASE were made with random weights: matching it with others is one line, nothing written
    weights = tmp_path / "w.pt"
    from model_factories import relu_mixer

    torch.save(relu_mixer()[0].state_dict(), weights)
    before = sorted(out.rglob("*"))
    capsys.readouterr()
    assert run_job("--model", BASE, TWIN, "--weights", weights, "random", "--images", probe, "--layers", 1,
                   "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has rows made with weights 'random" in err[0] and sorted(out.rglob("*")) == before
    assert transfer(["--model", BASE, "--other", TWIN, "--out", str(out)]) == 0
    assert "visualization(s) scored" in capsys.readouterr().out
    rows = Results(str(out)).transfer(model=BASE, other=TWIN).sort_values("feature")
    twins = twin_of()
    assert len(rows) >= 4 and (rows["error"] == "").all()
    assert [twins[(1, f)] for f in rows["feature"]] == rows["unit_b"].tolist()
    # the base model's own z on the same PNGs, by the same scanner
    fs = fsspec.filesystem("file")
    scanner = TransferScanner(str(out), None, BASE, "random", "mlp", [1])
    own = scanner({"image_path": rows["image_path"].to_numpy(), "layer_b": rows["layer"].to_numpy(),
                   "unit_b": rows["feature"].to_numpy()})["act_b"]
    folder = profile_folder(fs, str(out), BASE, rows["probe_hash"].iloc[0], "random", "mlp")
    from sweep.experiments.matching import unit_stats

    mean, std, top = unit_stats(fs, folder, read_done(fs, folder))[1]
    f = rows["feature"].to_numpy()
    z, beats = transfer_scores(own.astype(np.float64), mean[f], std[f], top[f])
    assert np.allclose(rows["z"].to_numpy(), z, atol=1e-3) and (rows["beats_probe"].to_numpy() == beats).all()
    quality = Results(str(out)).quality(model=BASE)
    scored = quality[quality["transfer_models"] == 1]
    assert len(scored) == len(rows) and np.allclose(scored.sort_values("feature")["transfer_z"], z, atol=1e-3)
    assert transfer(["--model", BASE, "--other", TWIN, "--out", str(out)]) == 0  # nothing changed: skipped
    assert "skipped" in capsys.readouterr().out
    assert transfer(["--model", BASE, "--other", BASE, "--out", str(out)]) == 2
    assert "the model itself" in capsys.readouterr().err


def test_a_pair_resumes_at_the_layer_group_it_stopped_in(tmp_path):
    """Each finished group of a's layers is checkpointed; a run that dies in a later group redoes only
    that group, and gives what one uninterrupted run gives."""
    import fsspec

    from sweep.experiments.matching import GroupCheckpoint, match_pair

    rng = np.random.default_rng(4)
    a = {0: rng.normal(size=(30, 5)), 1: rng.normal(size=(30, 4)), 2: rng.normal(size=(30, 6))}
    b = {0: rng.normal(size=(30, 3)), 1: rng.normal(size=(30, 7))}
    reads = []

    def reader(profile, side, fail_at=None):
        def read(layers):
            reads.append((side, tuple(layers)))
            if fail_at is not None and tuple(layers) == fail_at:
                raise RuntimeError("worker lost")
            return (np.concatenate([profile[layer][i:i + 8] for layer in layers], 1) for i in range(0, 30, 8))
        return read

    args = ([0, 1, 2], [5, 4, 6])
    whole = match_pair(reader(a, "a"), *args, reader(b, "b"), [0, 1], [3, 7], 2, budget_bytes=1)
    point = GroupCheckpoint(fsspec.filesystem("file"), str(tmp_path), "pairkey")
    with pytest.raises(RuntimeError):
        match_pair(reader(a, "a", fail_at=(2,)), *args, reader(b, "b"), [0, 1], [3, 7], 2, budget_bytes=1,
                   checkpoint=point)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairkey-0.npz", "pairkey-1.npz"]
    reads.clear()
    again = match_pair(reader(a, "a"), *args, reader(b, "b"), [0, 1], [3, 7], 2, budget_bytes=1, checkpoint=point)
    assert [r for r in reads if r[0] == "a"] == [("a", (2,))]  # only the group that died
    for one, two in zip(whole[:2], again[:2]):
        for layer in one:
            assert torch.equal(one[layer].ids, two[layer].ids)
            assert torch.allclose(one[layer].values, two[layer].values)
    point.clear()
    assert list(tmp_path.iterdir()) == []
