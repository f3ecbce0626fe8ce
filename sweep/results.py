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


def _dataset(fs: fsspec.AbstractFileSystem, root: str) -> ds.Dataset | None:
    path = posixpath.join(root, "features")
    if not fs.exists(path):
        return None
    arrow_fs = pafs.PyFileSystem(pafs.FSSpecHandler(fs))
    return ds.dataset(path, filesystem=arrow_fs, format="parquet", partitioning="hive",
                      exclude_invalid_files=False, ignore_prefixes=[".", "_"])


def read_index(fs: fsspec.AbstractFileSystem, root: str) -> pd.DataFrame:
    """One row per stored result: model, layer, site, feature, config_hash, status, part (its file)."""
    dataset = _dataset(fs, root)
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
