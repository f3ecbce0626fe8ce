"""Read what a results root already holds: which (model, layer, site, feature) are done, and where."""

from __future__ import annotations

import posixpath

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sweep.errors import SweepError, one_line
from sweep.outputs import FEATURE_SCHEMA, atomic_write, parquet_bytes

INDEX_COLUMNS = ["layer", "site", "feature", "config_hash", "status"]


def hive_dataset(fs: fsspec.AbstractFileSystem, path: str) -> ds.Dataset:
    """A hive-partitioned Parquet dataset on any fsspec filesystem; dot and underscore files are skipped
    (temporary files, summaries)."""
    return ds.dataset(path, filesystem=pafs.PyFileSystem(pafs.FSSpecHandler(fs)), format="parquet",
                      partitioning="hive", exclude_invalid_files=False, ignore_prefixes=[".", "_"])


def read_index(fs: fsspec.AbstractFileSystem, root: str) -> pd.DataFrame:
    """One row per stored result: model, layer, site, feature, config_hash, status, part (its file)."""
    path = posixpath.join(root, "features")
    dataset = hive_dataset(fs, path) if fs.exists(path) else None
    frames = []
    if dataset is not None:
        try:
            for frag in dataset.get_fragments():
                keys = ds.get_partition_keys(frag.partition_expression)
                table = frag.to_table(columns=INDEX_COLUMNS)
                df = table.to_pandas()
                df.insert(0, "model", keys.get("model"))
                df["part"] = frag.path
                frames.append(df)
        except (OSError, pa.ArrowInvalid) as exc:
            raise SweepError(f"cannot read existing results under {root!r}: {one_line(exc)}") from None
    if not frames:
        return pd.DataFrame(columns=["model", *INDEX_COLUMNS, "part"])
    return pd.concat(frames, ignore_index=True)


def drop_triples(fs: fsspec.AbstractFileSystem, index: pd.DataFrame,
                 triples: set[tuple[str, int, str, int]]) -> int:
    """Remove these results from their parts (rewriting or deleting each part atomically).

    Used by --force, so that recomputed triples replace their old rows instead of duplicating
    them, while other rows in the same parts are kept. Returns the number of rows removed.
    """
    keys = list(zip(index["model"], index["layer"], index["site"], index["feature"]))
    hit = index[[k in triples for k in keys]]
    removed = 0
    for part, rows in hit.groupby("part"):
        table = pq.read_table(part, filesystem=pafs.PyFileSystem(pafs.FSSpecHandler(fs)), schema=FEATURE_SCHEMA)
        drop = set(rows["feature"].tolist())
        kept = [r for r in table.to_pylist() if r["feature"] not in drop]
        removed += table.num_rows - len(kept)
        if kept:
            atomic_write(fs, part, parquet_bytes(kept))
        else:
            fs.rm(part)
    return removed


class Results:
    """Query a results root with pandas: each dataset is read with partition filters, so asking for
    one model (or experiment, or split) opens only that partition's files.

        r = Results("s3://bucket/atlas", storage_options={...})
        r.models()                                   # from the partition folders, no file is read
        r.features(model="B_16_imagenet1k", columns=["layer", "feature", "act_final"])
        r.ablations("foreground_background", model="ResNet-50")
    """

    DATASETS = {"features": ("model",), "ablations": ("experiment", "model"),
                "top_images": ("split", "model"), "invariance": ("split", "model"), "tuning": ("model",)}

    def __init__(self, root: str, storage_options: dict | None = None,
                 filesystem: fsspec.AbstractFileSystem | None = None):
        from sweep.outputs import open_root

        if filesystem is None:
            self.fs, self.root = open_root(root, storage_options)
        else:
            self.fs, self.root = filesystem, root.rstrip("/")

    def _read(self, name: str, filters: dict, columns: list[str] | None) -> pd.DataFrame:
        from sweep.models.zoo import REGISTRY
        from sweep.outputs import partition_path

        path = posixpath.join(self.root, name)
        if not self.fs.exists(path):
            raise SweepError(f"no {name} under {self.root!r}")
        if filters.get("model") is not None and filters["model"] in REGISTRY:
            filters = {**filters, "model": REGISTRY.get(filters["model"]).key}
        # Leading partition keys that are given narrow the path itself: other partitions are never listed.
        fixed = {}
        for key in self.DATASETS[name]:
            if filters.get(key) is None:
                break
            fixed[key] = filters[key]
        path = posixpath.join(self.root, partition_path(name, **fixed))
        if not self.fs.exists(path):
            return pd.DataFrame(columns=[*fixed, *(columns or [])])
        dataset = hive_dataset(self.fs, path)
        expr = None
        for key, value in filters.items():
            if value is None or key in fixed:
                continue
            if key not in dataset.schema.names:
                raise SweepError(f"{name} has no column {key!r}; columns: {', '.join(dataset.schema.names)}")
            term = ds.field(key) == value
            expr = term if expr is None else expr & term
        own = [c for c in columns if c not in fixed] if columns is not None else None
        frame = dataset.to_table(columns=own, filter=expr).to_pandas()
        for key, value in fixed.items():
            if columns is None or key in columns:
                frame.insert(0, key, value)
        if columns is not None:
            frame = frame[list(columns)]
        for key in self.DATASETS[name]:
            if key in frame and isinstance(frame[key].dtype, pd.CategoricalDtype):
                frame[key] = frame[key].astype(str)
        return frame

    def models(self, dataset: str = "features") -> list[str]:
        """Models present in a dataset, read from its partition folder names only."""
        import urllib.parse

        base = posixpath.join(self.root, dataset)
        if not self.fs.exists(base):
            return []
        found = set()
        for path in self.fs.find(base, withdirs=True):
            for part in path[len(base):].split("/"):
                if part.startswith("model="):
                    found.add(urllib.parse.unquote(part[len("model="):]))
        return sorted(found)

    def features(self, model: str | None = None, layer: int | None = None, site: str | None = None,
                 columns: list[str] | None = None) -> pd.DataFrame:
        return self._read("features", {"model": model, "layer": layer, "site": site}, columns)

    def ablations(self, experiment: str | None = None, model: str | None = None,
                  columns: list[str] | None = None) -> pd.DataFrame:
        return self._read("ablations", {"experiment": experiment, "model": model}, columns)

    def top_images(self, split: str | None = None, model: str | None = None, layer: int | None = None,
                   columns: list[str] | None = None) -> pd.DataFrame:
        return self._read("top_images", {"split": split, "model": model, "layer": layer}, columns)

    def invariance(self, split: str | None = None, model: str | None = None) -> pd.DataFrame:
        return self._read("invariance", {"split": split, "model": model}, None)

    def tuning(self, model: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
        """Recipe-tuning trials (`sweep tune`), one row per trial with its (lr, tv) and scores."""
        return self._read("tuning", {"model": model}, columns)
