"""Concept labels for units: the profile correlation on planted data, vocabularies, the hash that
separates vocabularies and judges, and the Ray Data job end to end with resume (random weights)."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from sweep.core.errors import SweepError
from sweep.data.imagenet import image_folder
from sweep.data.vocabulary import load_vocabulary
from sweep.experiments.judge import templates
from sweep.experiments.labels import LabelsConfig, ProfileStats, top_concepts, vocabulary_hash
from sweep.store.results import Results

CONCEPTS = ["music", "morbidity", "dog", "from above", "many", "before and after", "red", "water"]


def judged(n: int, dim: int, concepts: int, seed: int):
    """Planted judge output: n unit-norm image embeddings and `concepts` unit-norm text embeddings in
    `dim` dimensions, and the similarities (n, concepts) they give."""
    gen = torch.Generator().manual_seed(seed)
    embeds = torch.nn.functional.normalize(torch.randn(n, dim, generator=gen), dim=1)
    text = torch.nn.functional.normalize(torch.randn(concepts, dim, generator=gen), dim=1)
    return embeds, text, embeds @ text.T, gen


def test_a_unit_that_follows_a_concept_gets_it_first():
    """Unit 0's activations are an affine copy of concept 5's similarity profile: correlation 1, ranked
    first; streaming the images in batches gives the one-shot numbers; every score is numpy's Pearson
    correlation of the unit with the similarities, though the sums only ever saw the embeddings."""
    embeds, text, sims, gen = judged(300, 16, len(CONCEPTS), 0)
    acts = torch.randn(300, 4, generator=gen)
    acts[:, 0] = 3.0 * sims[:, 5] - 1.0
    acts[:, 1] = -sims[:, 2]  # anti-correlated with "dog": dog comes last for it
    whole = ProfileStats(4, 16)
    whole.update(acts, embeds)
    batched = ProfileStats(4, 16)
    for i in range(0, 300, 64):
        batched.update(acts[i:i + 64], embeds[i:i + 64])
    torch.testing.assert_close(batched.correlation(text), whole.correlation(text))
    values, index = top_concepts(whole.correlation(text), 3)
    assert index[0, 0] == 5 and values[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert whole.correlation(text)[1].argmin() == 2
    expected = np.corrcoef(acts.T.double().numpy(), sims.T.double().numpy())[:4, 4:]
    np.testing.assert_allclose(whole.correlation(text).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(whole.correlation(text, slice(1, 3)).numpy(), expected[1:3], atol=1e-6)
    flat = ProfileStats(1, 16)
    flat.update(torch.ones(10, 1), embeds[:10])
    assert (flat.correlation(text) == 0).all()  # a constant unit follows nothing
    same = ProfileStats(2, 16)
    same.update(torch.randn(10, 2, generator=gen), embeds[:1].repeat(10, 1))
    assert (same.correlation(text) == 0).all()  # nor anything a judge that sees one image every time


def test_vocabulary_and_judge_change_the_hash(tmp_path):
    simple, openai = templates("simple"), templates("openai")
    base = vocabulary_hash(CONCEPTS, simple, "ViT-B-32/openai", "pretrained")
    assert base == vocabulary_hash(list(CONCEPTS), simple, "ViT-B-32/openai", "pretrained")
    others = {vocabulary_hash(CONCEPTS[:-1], simple, "ViT-B-32/openai", "pretrained"),
              vocabulary_hash(CONCEPTS[::-1], simple, "ViT-B-32/openai", "pretrained"),
              vocabulary_hash(CONCEPTS, openai, "ViT-B-32/openai", "pretrained"),
              vocabulary_hash(CONCEPTS, simple, "ViT-B-16/openai", "pretrained"),
              vocabulary_hash(CONCEPTS, simple, "ViT-B-32/openai", "random")}
    assert len(others) == 5 and base not in others
    assert len(simple) == 7 and all("{}" in t for t in simple) and len(openai) == 80


def test_vocabularies_shipped_and_from_a_file(tmp_path):
    name, concepts = load_vocabulary("imagenet")
    assert name == "imagenet" and len(concepts) == 1000 and concepts[0] == "tench"
    name, common = load_vocabulary("common")  # wonderwords' nouns and adjectives (MIT), profanity removed
    assert name == "common" and len(common) > 7000 and len(set(common)) == len(common)
    assert {"music", "morbidity", "many", "cemetery", "speaker"} <= set(common)
    path = tmp_path / "mine.txt"
    path.write_text("# my concepts\nmusic\n\n  morbidity \nmusic\nfrom above\n")
    assert load_vocabulary(str(path)) == ("mine.txt", ("music", "morbidity", "from above"))
    for text, message in [("", "no concepts"), ("ok\n" + "x" * 101 + "\n", "line 2"), ("a\x07b\n", "line 1")]:
        path.write_text(text)
        with pytest.raises(SweepError, match=message):
            load_vocabulary(str(path))
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SweepError, match="not UTF-8"):
        load_vocabulary(str(path))
    with pytest.raises(SweepError, match="cannot read it"):
        load_vocabulary(str(tmp_path / "missing.txt"))
    with pytest.raises(SweepError, match="allowed: simple, openai"):
        templates("fancy")


@pytest.fixture(scope="module")
def probe(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("probe")
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(root / f"img{i:02d}.png")
    (root / "broken.png").write_bytes(b"not a png")
    vocab = tmp_path_factory.mktemp("vocab") / "concepts.txt"
    vocab.write_text("\n".join(CONCEPTS) + "\n")
    return root, vocab


def test_job_labels_every_unit_resumes_and_relabels_for_a_new_vocabulary(probe, tmp_path):
    from sweep.pipelines.labels import label_units

    images, vocab = probe
    listing = image_folder(str(images))
    config = LabelsConfig("dev/vit-micro", str(tmp_path), split="probe", layers=(0, 2), weights="random",
                          judge="ViT-B-32/openai", judge_weights="random", vocabulary=str(vocab), k=3, batch_size=8)
    memo = {}
    first = label_units(config, listing, memo)
    assert first["labelled"] == [0, 2] and first["skipped"] == [] and first["rows"] == 2 * 64 * 3
    assert memo[first["vocabulary_hash"]].shape == (len(CONCEPTS), 512)  # embedded once, kept for --method both
    rows = Results(str(tmp_path)).labels(model="dev/vit-micro")
    assert len(rows) == 2 * 64 * 3 and set(rows["layer"].astype(int)) == {0, 2}
    assert set(rows["concept"]) <= set(CONCEPTS) and (rows["images"] == 24).all()  # the broken file is skipped
    assert (rows.groupby(["layer", "feature"])["rank"].apply(list) == pd.Series([[0, 1, 2]] * 128).values).all()
    assert (rows.sort_values(["layer", "feature", "rank"]).groupby(["layer", "feature"])["score"]
            .apply(lambda s: s.is_monotonic_decreasing)).all()
    assert (rows["judge"] == "ViT-B-32/openai").all() and rows["vocabulary"].eq("concepts.txt").all()
    assert label_units(config, listing)["skipped"] == [0, 2]  # resumed: nothing to do
    # A new vocabulary labels layer 0 again, beside the old rows; layer 2 keeps its labels of the first.
    vocab2 = tmp_path / "other.txt"
    vocab2.write_text("music\ndog\n")
    other = LabelsConfig("dev/vit-micro", str(tmp_path), split="probe", layers=(0,), weights="random",
                         judge="ViT-B-32/openai", judge_weights="random", vocabulary=str(vocab2), k=1, batch_size=8)
    relabel = label_units(other, listing)
    assert relabel["labelled"] == [0] and relabel["vocabulary_hash"] != first["vocabulary_hash"]
    assert len(Results(str(tmp_path)).labels(vocabulary_hash=relabel["vocabulary_hash"])) == 64
    assert len(Results(str(tmp_path)).labels(vocabulary_hash=first["vocabulary_hash"])) == 2 * 64 * 3
    music = Results(str(tmp_path)).labels(model="dev/vit-micro", concept="music")
    assert len(music) > 0 and set(music["concept"]) == {"music"}


def test_bad_vocabulary_is_one_line_before_any_work(tmp_path, capsys):
    from sweep_checks import job_main

    bad = tmp_path / "bad.txt"
    bad.write_text("ok\n" + "y" * 200 + "\n")
    code = job_main("labels")(["--model", "dev/vit-micro", "--images", str(tmp_path), "--out", str(tmp_path / "out"),
                               "--vocabulary", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("labels.py: error: --vocabulary") and "line 2" in err[0]
    assert not (tmp_path / "out").exists()


def test_visualizations_labelled_from_the_root(probe, tmp_path):
    """Each unit's visualization PNG gets its k concepts by the judge's cosine; a missing or hostile image
    path is left out with a warning; a re-run skips the layer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sweep.pipelines.labels import label_visualizations
    from sweep.store.layout import FEATURE_SCHEMA, FEATURES, image_relpath

    _, vocab = probe
    rng = np.random.default_rng(1)
    rows = []
    for f in range(4):
        rel = image_relpath("dev/vit-micro", 1, "mlp", f)
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(tmp_path / rel)
        rows.append({"layer": 1, "layer_name": "blocks.1", "site": "mlp", "feature": f, "status": "ok",
                     "image_path": rel})
    rows.append({"layer": 1, "layer_name": "blocks.1", "site": "mlp", "feature": 9, "status": "ok",
                 "image_path": "../../etc/hostname"})
    part = tmp_path / FEATURES.part("part-x.parquet", model="dev/vit-micro")
    part.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=FEATURE_SCHEMA), part)
    config = LabelsConfig("dev/vit-micro", str(tmp_path), layers=(1,), weights="random", judge="ViT-B-32/openai",
                          judge_weights="random", vocabulary=str(vocab), k=2, batch_size=4)
    # the text embeddings come from the job's memo when it holds them (--method both embeds once):
    # planted ones where only concepts 1 and 2 (opposite directions) can score above 0
    vhash = vocabulary_hash(CONCEPTS, templates("simple"), "ViT-B-32/openai", "random")
    planted = np.zeros((len(CONCEPTS), 512), np.float32)
    planted[1], planted[2] = 1 / np.sqrt(512), -1 / np.sqrt(512)
    got = label_visualizations(config, {vhash: planted})
    assert got["labelled"] == [1] and got["rows"] == 4 * 2
    labels = Results(str(tmp_path)).labels(model="dev/vit-micro", layer=1)
    assert sorted(set(labels["feature"])) == [0, 1, 2, 3] and (labels["method"] == "visualization-zero-shot").all()
    assert set(labels["concept"]) <= set(CONCEPTS) and labels["score"].between(-1, 1).all()
    assert set(labels.loc[labels["rank"] == 0, "concept"]) <= {CONCEPTS[1], CONCEPTS[2]}
    assert label_visualizations(config)["skipped"] == [1]


def test_class_agreement_counts_units_labelled_with_their_own_class():
    from sweep.experiments.labels import class_agreement

    names = ["tench", "goldfish", "shark", "hen"]
    rows = pd.DataFrame({"feature": [0, 0, 1, 1, 2, 2, 3, 3], "rank": [0, 1, 0, 1, 1, 0, 0, 1],
                         "concept": ["tench", "hen", "shark", "goldfish", "hen", "tench", "goldfish", "shark"]})
    got = class_agreement(rows, names, k=2)
    assert got == {"units": 4, "top1": 0.25, "top2": 0.5}  # unit 0 top-1; unit 1 second; units 2, 3 never


def test_top_concepts_in_chunks_equal_the_whole():
    embeds, text, _, gen = judged(50, 8, 6, 3)
    stats = ProfileStats(10, 8)
    stats.update(torch.randn(50, 10, generator=gen), embeds)
    whole = top_concepts(stats.correlation(text), 3)
    chunked = stats.top(text, 3, chunk=4)
    assert torch.equal(whole[1], chunked[1]) and torch.allclose(whole[0], chunked[0])


def test_top_concepts_hold_their_k_columns_only():
    """A slice of the sorted scores would keep every chunk's whole (units x concepts) sort alive until
    the chunks are joined: 1.7 GB for ViT-S's 18,432 units and 7,609 concepts (benchmarks/results/
    2026-12-07-rehearsal-label-sums-cpu.csv)."""
    values, index = top_concepts(torch.randn(4, 100), 3)
    assert values.untyped_storage().nbytes() == 4 * 3 * 4 and index.untyped_storage().nbytes() == 4 * 3 * 8


def test_sums_are_exact_sums_of_the_batches():
    """And they are units x d, whatever the vocabulary's size: ViT-S's 18,432 units under ViT-B-32 hold
    75 MB on the driver, not the 1.1 GB of units x 7,609 concepts (README, "What a paper-size run costs")."""
    gen = torch.Generator().manual_seed(5)
    a, e = torch.randn(40, 7, generator=gen), torch.randn(40, 3, generator=gen)
    stats = ProfileStats(7, 3)
    for i in range(0, 40, 16):
        stats.update(a[i:i + 16], e[i:i + 16])
    assert torch.allclose(stats.sum_ae, a.double().T @ e.double(), atol=1e-12)
    assert torch.allclose(stats.sum_ee, e.double().T @ e.double(), atol=1e-12)
    assert stats.n == 40 and stats.sum_ae.shape == (7, 3)


def test_a_random_judge_is_the_same_in_every_process():
    """The job embeds the concepts in one Ray task and the images in its actors: with random weights
    (tests, dry runs) both must hold the same judge, whatever the process's random state."""
    from sweep.experiments.judge import ClipJudge

    torch.manual_seed(1)
    first = ClipJudge("ViT-B-32/openai", "random", torch.device("cpu"))
    torch.manual_seed(2)
    second = ClipJudge("ViT-B-32/openai", "random", torch.device("cpu"))
    assert all(torch.equal(p, q) for p, q in zip(first.model.state_dict().values(), second.model.state_dict().values()))
    after = torch.rand(1)
    torch.manual_seed(2)
    assert first.dim == 512 and torch.equal(after, torch.rand(1))  # the caller's random state is left alone
