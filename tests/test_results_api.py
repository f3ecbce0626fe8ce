"""The results API: partition pruning (one model reads only its files), schema, and aliases."""

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem

from sweep.core.errors import SweepError
from sweep.store.layout import FEATURE_SCHEMA
from sweep.store.results import Results


class RecordingFS(LocalFileSystem):
    """A local filesystem that remembers every file opened for reading."""

    cachable = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.opened = []

    def _open(self, path, mode="rb", **kwargs):
        if "r" in mode:
            self.opened.append(path)
        return super()._open(path, mode, **kwargs)


@pytest.fixture(scope="module")
def root(smoke_root):
    return str(smoke_root)


def test_reading_one_model_opens_only_its_files(root):
    fs = RecordingFS()
    results = Results(root, filesystem=fs)
    df = results.features(model="dev/vit-micro")
    assert len(df) == 12 and set(df["model"]) == {"dev/vit-micro"}
    assert fs.opened and all("model=dev%2Fvit-micro" in p for p in fs.opened), fs.opened
    fs.opened.clear()
    assert results.models() == ["dev/deit-micro-distilled", "dev/vit-micro"]
    assert fs.opened == []  # listing models reads no file


def test_schema_and_filters(root):
    results = Results(root)
    df = results.features()
    assert len(df) == 24
    assert set(FEATURE_SCHEMA.names) <= set(df.columns) and "model" in df.columns
    one = results.features(model="dev/vit-micro", layer=1, columns=["feature", "act_final"])
    assert list(one.columns) == ["feature", "act_final"] and len(one) == 4
    assert list(results.features(model="dev/vit-micro", columns=["model", "layer"]).columns) == ["model", "layer"]
    assert results.features(model="resnet50").empty  # an alias resolves; no such partition: no rows
    with pytest.raises(SweepError, match="no ablations under"):
        results.ablations("foreground_background")
    with pytest.raises(SweepError, match="has no column 'colour'"):
        results._read("features", {"colour": "red"}, None)
    assert fsspec  # the API takes any fsspec filesystem (see RecordingFS)
