"""The feature index a resume reads (sweep.store.index): parts read once and cached by fingerprint,
images checked against a listing, and a cache that is stale, damaged or hostile never believed."""

import logging
import posixpath

import fsspec
import pytest

from sweep.store import index as store_index
from sweep.store.index import damaged_images, drop_triples, read_stored
from sweep.store.layout import FEATURE_INDEX, FEATURES, image_relpath
from sweep.store.outputs import atomic_write, parquet_bytes, png_bytes

MODEL = "dev/vit-micro"


def write_batch(fs, root: str, layer: int, features: list[int], sized: bool = True) -> str:
    """A part and its PNGs as the sweep writes them (image_bytes recorded unless sized=False)."""
    import torch

    rows = []
    for f in features:
        rel = image_relpath(MODEL, layer, "mlp", f)
        png = png_bytes(torch.full((3, 4, 4), f / 10))
        atomic_write(fs, posixpath.join(root, rel), png)
        rows.append({"layer": layer, "site": "mlp", "feature": f, "status": "ok", "config_hash": "h",
                     "weights": "random:0", "image_path": rel, "image_bytes": len(png) if sized else None})
    part = posixpath.join(root, FEATURES.part(f"part-{layer}-{features[0]}.parquet", model=MODEL))
    atomic_write(fs, part, parquet_bytes(rows))
    return part


@pytest.fixture
def root(tmp_path):
    fs = fsspec.filesystem("file")
    root = str(tmp_path / "root")
    write_batch(fs, root, 0, [0, 1, 2])
    write_batch(fs, root, 1, [0, 1])
    return fs, root


@pytest.fixture
def reads(monkeypatch):
    """The parts each read_parts call was asked for."""
    calls = []
    real = store_index.read_parts

    def counting(fs, root, paths):
        calls.append(list(paths))
        return real(fs, root, paths)

    monkeypatch.setattr(store_index, "read_parts", counting)
    return calls


def test_a_second_read_takes_every_row_from_the_cache_and_a_changed_part_is_read_again(root, reads):
    fs, path = root
    first = read_stored(fs, path, cache=True).index
    assert len(first) == 5 and len(reads[-1]) == 2
    assert fs.exists(posixpath.join(path, FEATURE_INDEX))
    second = read_stored(fs, path, cache=True).index
    assert reads[-1] == [], "nothing read but the cache"
    cols = ["model", "layer", "site", "feature", "config_hash", "status", "image_path", "image_bytes", "part"]
    key = ["layer", "feature"]
    assert second.sort_values(key)[cols].astype(str).values.tolist() == first.sort_values(key)[cols].astype(str).values.tolist()
    # a part rewritten in place (as --force and damaged images do) is read again; a new one too
    drop_triples(fs, second, {(MODEL, 0, "mlp", 1)})
    write_batch(fs, path, 2, [5])
    third = read_stored(fs, path, cache=True).index
    assert len(reads[-1]) == 2 and sorted(map(posixpath.basename, reads[-1])) == ["part-0-0.parquet", "part-2-5.parquet"]
    assert sorted(zip(third["layer"], third["feature"])) == [(0, 0), (0, 2), (1, 0), (1, 1), (2, 5)]
    # a deleted part's rows leave the index though the cache still holds them
    fs.rm(posixpath.join(path, FEATURES.part("part-1-0.parquet", model=MODEL)))
    assert sorted(read_stored(fs, path, cache=True).index["layer"]) == [0, 0, 2]


@pytest.mark.parametrize("cache", [b"not parquet", b"PAR1" + b"\0" * 40 + b"PAR1", "other schema"])
def test_a_damaged_or_foreign_cache_is_ignored_and_replaced(root, reads, cache, caplog):
    fs, path = root
    read_stored(fs, path, cache=True)
    if cache == "other schema":  # parses, but claims rows in another shape: not believed
        cache = parquet_bytes([{"layer": 0, "feature": 9}])
    atomic_write(fs, posixpath.join(path, FEATURE_INDEX), cache)
    with caplog.at_level(logging.WARNING):
        got = read_stored(fs, path, cache=True).index
    assert len(reads[-1]) == 2 and len(got) == 5, "every part read again"
    assert "feature index cache" in caplog.text
    read_stored(fs, path, cache=True)
    assert reads[-1] == [], "the rewritten cache is used"


def test_without_cache_every_part_is_read_and_nothing_is_written(root, reads):
    fs, path = root
    read_stored(fs, path)
    read_stored(fs, path)
    assert [len(r) for r in reads] == [2, 2]
    assert not fs.exists(posixpath.join(path, FEATURE_INDEX))


def test_images_are_checked_by_listing_size_and_old_rows_by_their_png_end(root, tmp_path):
    fs, path = root
    write_batch(fs, path, 3, [0, 1], sized=False)  # rows of a root written before image_bytes
    index = read_stored(fs, path).index
    triples = {(MODEL, int(r.layer), r.site, int(r.feature)) for r in index.itertuples()}
    assert damaged_images(fs, path, index, triples) == set()
    img = lambda layer, f: tmp_path / "root" / image_relpath(MODEL, layer, "mlp", f)  # noqa: E731
    img(0, 0).unlink()                                               # missing
    img(0, 1).write_bytes(img(0, 1).read_bytes() + b"x")              # another size than its row says
    img(3, 0).write_bytes(img(3, 0).read_bytes()[:-5])                # unsized row, truncated PNG
    assert damaged_images(fs, path, index, triples) == {(MODEL, 0, "mlp", 0), (MODEL, 0, "mlp", 1),
                                                         (MODEL, 3, "mlp", 0)}


def test_a_hostile_image_size_or_path_is_recomputed_not_trusted(root):
    fs, path = root
    index = read_stored(fs, path).index
    index["image_bytes"] = index["image_bytes"].astype(object)
    index.loc[index["feature"] == 0, "image_bytes"] = "many"  # no size: its PNG's end is read instead
    index.loc[index["feature"] == 1, "image_path"] = "../../etc/passwd"
    triples = {(MODEL, int(r.layer), r.site, int(r.feature)) for r in index.itertuples()}
    assert damaged_images(fs, path, index, triples) == {(MODEL, 0, "mlp", 1), (MODEL, 1, "mlp", 1)}
