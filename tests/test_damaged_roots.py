"""Damaged and shared results roots: a truncated Parquet part or PNG never blocks reading, the atlas
or resume (its results are recomputed, exactly once), and `visualize --out` into a sweep's root
never replaces an image made another way unless asked to."""

import io
import logging
import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image
from sweep_checks import assert_exactly_once, stored

from sweep.cli import main
from sweep.pipelines.feature_sweep import run_sweep
from sweep.store.results import Results
from sweep.views.atlas import build_atlas
from sweep.work.plan import SweepConfig

MODEL = "dev/vit-micro"
#: 2 layers x 4 features in batches of 2: 8 results in 4 parts.
SWEEP = {"preset": "smoke", "models": [MODEL], "layers": [0, 1],
         "resources": {"num_gpus": 0, "num_cpus": 1, "workers": 1}}


def config(out) -> SweepConfig:
    return SweepConfig.from_dict({**SWEEP, "out": str(out)})


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory, ray_local):
    """A finished tiny sweep; tests work on copies of it."""
    root = tmp_path_factory.mktemp("sweep") / "root"
    assert run_sweep(config(root), progress=False).done == 8
    return root


@pytest.fixture
def root(sweep_root, tmp_path):
    copy = tmp_path / "root"
    shutil.copytree(sweep_root, copy)
    return copy


def key(row) -> tuple:
    return (row["model"], int(row["layer"]), row["site"], int(row["feature"]))


def test_damaged_part_and_images_are_skipped_then_recomputed_once(root, tmp_path, caplog):
    df = stored(root)
    part = sorted((root / "features").rglob("*.parquet"))[0]
    lost = {key(r) for _, r in pd.read_parquet(part).assign(model=MODEL).iterrows()}
    assert len(lost) == 2
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    others = df[[key(r) not in lost for _, r in df.iterrows()]].sort_values(["layer", "feature"])
    cut, empty = others.iloc[0], others.iloc[1]
    png = root / cut["image_path"]
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    (root / empty["image_path"]).write_bytes(b"")

    with caplog.at_level(logging.WARNING, logger="sweep.store.results"):
        good = Results(str(root)).features()
    warned = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warned) == 1 and part.name in warned[0] and "\n" not in warned[0]
    assert len(good) == 6 and not {key(r) for _, r in good.iterrows()} & lost

    build_atlas(str(root), str(tmp_path / "site"))  # damaged images and parts do not stop the atlas

    report = run_sweep(config(root), progress=False)
    redone = lost | {key(cut), key(empty)}
    assert (report.done, report.skipped, report.failed) == (len(redone), 8 - len(redone), 0) == (4, 4, 0)
    after = assert_exactly_once(config(root))  # every triple once, every ok PNG decodes
    fresh = after[after["created_at"] > df["created_at"].max()]
    assert {key(r) for _, r in fresh.iterrows()} == redone
    aside = root / "_damaged" / part.relative_to(root)
    assert aside.exists()  # kept for inspection, out of every reader's way
    assert len(pq.read_table(part)) == 2  # the same batch, recomputed, wrote its part again
    assert run_sweep(config(root), progress=False).done == 0  # nothing keeps causing trouble


def visualize(root, *args) -> list[str]:
    return ["visualize", "--model", MODEL, "--weights", "random", "--layer", "0", "--feature", "1",
            "--steps", "4", "--jitter", "4", "--quiet", "--out", str(root), *args]


@pytest.mark.parametrize("other", [["--seed", "7"], ["--steps", "5"]])
def test_visualize_refuses_to_overwrite_another_recipe(root, capsys, other):
    before = stored(root).sort_values(["layer", "feature"], ignore_index=True)
    image = root / before.loc[(before["layer"] == 0) & (before["feature"] == 1), "image_path"].item()
    png = image.read_bytes()
    code = main(visualize(root, *other))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("sweep: error: ")
    assert "different recipe" in err[0] and "use another --out" in err[0] and "--force" in err[0]
    assert image.read_bytes() == png
    pd.testing.assert_frame_equal(stored(root).sort_values(["layer", "feature"], ignore_index=True), before)


def test_visualize_same_settings_replace_in_place_and_force_replaces(root, capsys):
    before = stored(root)
    assert main(visualize(root)) == 0
    after = assert_exactly_once(config(root))  # still one row per feature: replaced, not added
    row = after[(after["layer"] == 0) & (after["feature"] == 1)].iloc[0]
    assert row["created_at"] > before["created_at"].max()
    # layer 0's row: parts are named by hashes, so the order of the root's rows says nothing
    assert row["config_hash"] == before.loc[(before["layer"] == 0) & (before["feature"] == 1), "config_hash"].item()

    assert main(visualize(root, "--seed", "7", "--force")) == 0
    forced = assert_exactly_once(config(root))
    row = forced[(forced["layer"] == 0) & (forced["feature"] == 1)].iloc[0]
    assert row["base_seed"] == 7 and row["config_hash"] not in set(before["config_hash"])
    with Image.open(io.BytesIO((root / row["image_path"]).read_bytes())) as im:
        im.load()
