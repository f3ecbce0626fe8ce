"""One owner of the results root's layout (sweep.store.layout): paths built and parsed in one place,
round-tripping any partition value, and no other module spelling `key=value` folders by hand."""

import re
from pathlib import Path

import fsspec
import pytest

from sweep.store.layout import DATASETS, FEATURES, MAP_FILES, TOP_IMAGES, image_relpath

HOSTILE = ["dev/vit-micro", "<script>alert(1)</script>", "..", "x=y", "a b%2F", "open_clip:ViT-B-32/openai"]


@pytest.mark.parametrize("value", HOSTILE)
def test_partition_values_round_trip_through_pyarrow(value):
    rel = TOP_IMAGES.part("part-00000.parquet", split=value, model=value)
    assert rel.count("/") == 3 and ".." not in rel.split("/")  # one folder per key, whatever the value
    assert TOP_IMAGES.keys_of(rel) == {"split": value, "model": value}
    assert FEATURES.keys_of(FEATURES.folder(model=value)) == {"model": value}
    png = image_relpath(value, 3, "mlp", 7)
    assert DATASETS["images"].keys_of(png) == {"model": value, "layer": "3"} and png.endswith("/mlp-7.png")


def test_values_and_drop(tmp_path):
    fs = fsspec.filesystem("file")
    for model in HOSTILE[:3]:
        path = tmp_path / MAP_FILES.part("mlp-0/img.png", model=model, layer=0)
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
    assert MAP_FILES.values(fs, str(tmp_path), "model") == sorted(HOSTILE[:3])
    assert MAP_FILES.drop(fs, str(tmp_path), model="..") and not MAP_FILES.drop(fs, str(tmp_path), model="..")
    assert MAP_FILES.values(fs, str(tmp_path), "model") == sorted(HOSTILE[:2])
    with pytest.raises(ValueError, match="keys in order"):
        TOP_IMAGES.folder(model="m")  # split is the outer key


def test_no_other_module_spells_partition_folders():
    """Where X is written is answered by one file: nobody else writes `model=` or `split=` paths."""
    root = Path(__file__).resolve().parents[1]
    spelled = re.compile(r"""["'](model|split|experiment|layer)=""")
    offenders = [str(p.relative_to(root)) for folder in ("sweep", "jobs", "analysis")
                 for p in (root / folder).rglob("*.py")
                 if p.name != "layout.py" and spelled.search(p.read_text())]
    assert offenders == []
