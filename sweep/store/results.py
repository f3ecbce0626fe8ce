"""Read what a results root already holds: which (model, layer, site, feature) are done, and where."""

from __future__ import annotations

import errno
import logging
import posixpath
from typing import NamedTuple

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sweep.core.errors import SweepError, one_line, storage_error
from sweep.store.layout import DATASETS, FEATURE_SCHEMA, FEATURES
from sweep.store.outputs import atomic_write, parquet_bytes, under_root

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["layer", "site", "feature", "config_hash", "status", "image_path", "weights"]
PARQUET_MAGIC = b"PAR1"
#: The last 12 bytes of every complete PNG: the empty IEND chunk and its CRC.
PNG_TRAILER = b"\x00\x00\x00\x00IEND\xaeB`\x82"
#: Where damaged files are moved, under the root; readers skip underscore folders.
DAMAGED_DIR = "_damaged"
READ_ERRORS = (OSError, pa.ArrowException)

Triple = tuple[str, int, str, int]


class StoredIndex(NamedTuple):
    """What a root holds: one row per readable result, and the parts that could not be read."""

    index: pd.DataFrame
    damaged: list[str]


def _arrow_fs(fs: fsspec.AbstractFileSystem) -> pafs.FileSystem:
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def data_files(fs: fsspec.AbstractFileSystem, base: str) -> list[str]:
    """Parquet files of a hive dataset folder, skipping dot and underscore names (temporary files,
    summaries, set-aside damaged files) at any depth, as pyarrow's discovery does."""
    fs.invalidate_cache(base)  # parts are written by other processes: never trust an old listing
    skip = (".", "_")
    return sorted(p for p in fs.find(base)
                  if not any(c.startswith(skip) for c in p[len(base):].strip("/").split("/")))


def byte_ranges(fs: fsspec.AbstractFileSystem, paths: list[str], starts: list[int],
                ends: list[int | None]) -> list[bytes | None]:
    """Byte ranges of many files in one batch (concurrent on object stores): None for a file that is
    gone, b"" for an empty one. Any other error (network, access) is raised in one line, so a flaky
    store never makes good results look damaged."""
    got = fs.cat_ranges(paths, starts, ends, on_error="return") if paths else []
    out: list[bytes | None] = []
    for path, data in zip(paths, got):
        if isinstance(data, FileNotFoundError):
            data = None
        elif isinstance(data, OSError) and data.errno == errno.EINVAL:  # S3's 416: a range of an empty object
            data = b""
        elif isinstance(data, BaseException):
            raise SweepError(storage_error(data, path)) from None
        out.append(data)
    return out


def split_damaged(fs: fsspec.AbstractFileSystem, paths: list[str]) -> tuple[list[str], dict[str, str]]:
    """Readable-looking Parquet files, and damaged ones with the reason; files gone since the listing
    are in neither.

    Cheap first test: a Parquet file starts and ends with PAR1; a truncated or empty one does not.
    Both ends of every file come in one batch of ranged reads.
    """
    n = len(paths)
    ends = byte_ranges(fs, paths + paths, [0] * n + [-4] * n, [4] * n + [None] * n)
    good, damaged = [], {}
    for path, head, tail in zip(paths, ends[:n], ends[n:]):
        if head is None or tail is None:
            continue
        if head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
            damaged[path] = "empty" if not head else "truncated or not Parquet (no PAR1 magic at both ends)"
        else:
            good.append(path)
    return good, damaged


def footer_damaged(fs: fsspec.AbstractFileSystem, paths: list[str]) -> dict[str, str]:
    """Files whose Parquet footer cannot be parsed (the slower, second test), with the reason."""
    damaged = {}
    for path in paths:
        try:
            pq.read_metadata(path, filesystem=_arrow_fs(fs))
        except READ_ERRORS as exc:
            damaged[path] = one_line(exc, 120)
    return damaged


def warn_damaged(root: str, damaged: dict[str, str]) -> None:
    """One warning line for all damaged files of a read (the first few named)."""
    if not damaged:
        return
    named = "; ".join(f"{p}: {why}" for p, why in list(damaged.items())[:5])
    more = f"; and {len(damaged) - 5} more" if len(damaged) > 5 else ""
    log.warning("skipping %d damaged Parquet file(s) under %s (their results count as missing): %s%s",
                len(damaged), root, named, more)


def hive_dataset(fs: fsspec.AbstractFileSystem, path: str, files: list[str]) -> ds.Dataset:
    """A hive-partitioned Parquet dataset of these files (under `path`) on any fsspec filesystem."""
    return ds.dataset(files, filesystem=_arrow_fs(fs), format="parquet",
                      partitioning=ds.HivePartitioning.discover(), partition_base_dir=path)


def readable_dataset(fs: fsspec.AbstractFileSystem, path: str) -> tuple[ds.Dataset | None, dict[str, str]]:
    """The dataset of the readable files under `path` (None when there are none) and the damaged
    files left out, with their reasons; so one truncated part never blocks a read."""
    good, damaged = split_damaged(fs, data_files(fs, path))
    try:
        dataset = hive_dataset(fs, path, good) if good else None
    except READ_ERRORS:  # a footer that the magic test let through: find it file by file
        bad = footer_damaged(fs, good)
        damaged.update(bad)
        good = [p for p in good if p not in bad]
        dataset = hive_dataset(fs, path, good) if good else None
    return dataset, damaged


def read_stored(fs: fsspec.AbstractFileSystem, root: str, model: str | None = None) -> StoredIndex:
    """One row per readable result (model, layer, site, feature, config_hash, status, part), of one
    model's partition when given, and the damaged parts that were skipped (warned about once)."""
    path = posixpath.join(root, FEATURES.folder(model=model) if model else FEATURES.folder())
    frames, damaged = [], {}
    if fs.exists(path):
        dataset, damaged = readable_dataset(fs, path)
        for frag in dataset.get_fragments() if dataset is not None else ():
            try:
                table = frag.to_table(columns=INDEX_COLUMNS)
            except READ_ERRORS as exc:
                damaged[frag.path] = one_line(exc, 120)
                continue
            df = table.to_pandas()
            df.insert(0, "model", model or ds.get_partition_keys(frag.partition_expression).get("model"))
            df["part"] = frag.path
            frames.append(df)
    warn_damaged(root, damaged)
    if not frames:
        return StoredIndex(pd.DataFrame(columns=["model", *INDEX_COLUMNS, "part"]), sorted(damaged))
    return StoredIndex(pd.concat(frames, ignore_index=True), sorted(damaged))


def read_index(fs: fsspec.AbstractFileSystem, root: str, model: str | None = None) -> pd.DataFrame:
    """One row per readable stored result: model, layer, site, feature, config_hash, status, part."""
    return read_stored(fs, root, model).index


def set_aside(fs: fsspec.AbstractFileSystem, root: str, paths: list[str]) -> None:
    """Move damaged files to `<root>/_damaged/<their path under root>`, out of every reader's way but
    kept for inspection; their results were planned again by the caller."""
    for path in paths:
        dest = posixpath.join(root, DAMAGED_DIR, posixpath.relpath(path, root))
        try:
            fs.makedirs(posixpath.dirname(dest), exist_ok=True)
            fs.mv(path, dest)
        except Exception as exc:
            raise SweepError(f"cannot move damaged file {path!r} aside to {dest!r}: {one_line(exc)}") from None
        log.warning("moved damaged %s to %s; its results are recomputed", path, dest)


def damaged_images(fs: fsspec.AbstractFileSystem, root: str, index: pd.DataFrame,
                   triples: set[Triple]) -> set[Triple]:
    """The triples among `triples` whose `ok` row's PNG is missing, empty or truncated.

    Only the last 12 bytes of each image are read (one batch of ranged reads, concurrent on
    object stores): a complete PNG ends with its IEND chunk.
    """
    if index.empty or not triples:
        return set()
    ok = index[index["status"] == "ok"]
    keys = list(zip(ok["model"], ok["layer"].astype(int), ok["site"], ok["feature"].astype(int)))
    rows = [(k, path) for k, path in zip(keys, ok["image_path"]) if k in triples]
    if not rows:
        return set()
    outside = {k for k, path in rows if under_root(root, path) is None}  # recomputed to its own path
    rows = [(k, under_root(root, path)) for k, path in rows if k not in outside]
    tails = byte_ranges(fs, [p for _, p in rows], [-len(PNG_TRAILER)] * len(rows), [None] * len(rows))
    bad = outside | {k for (k, _), tail in zip(rows, tails) if tail != PNG_TRAILER}
    if bad:
        m, layer, site, f = sorted(bad)[0]
        log.warning("%d stored image(s) under %s are missing, empty or truncated (e.g. %s layer %d %s %d); "
                    "their results are recomputed", len(bad), root, m, layer, site, f)
    return bad


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
        table = pq.read_table(part, filesystem=_arrow_fs(fs), schema=FEATURE_SCHEMA)
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

    #: The datasets read here, with their partition keys (sweep.store.layout).
    DATASETS = {name: DATASETS[name].keys
                for name in ("features", "ablations", "top_images", "invariance", "labels", "tuning")}

    def __init__(self, root: str, storage_options: dict | None = None,
                 filesystem: fsspec.AbstractFileSystem | None = None):
        from sweep.store.outputs import open_root

        if filesystem is None:
            self.fs, self.root = open_root(root, storage_options)
        else:
            self.fs, self.root = filesystem, root.rstrip("/")

    def _read(self, name: str, filters: dict, columns: list[str] | None) -> pd.DataFrame:
        from sweep.models.zoo import REGISTRY

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
        path = posixpath.join(self.root, DATASETS[name].folder(**fixed))
        if not self.fs.exists(path):
            return pd.DataFrame(columns=[*fixed, *(columns or [])])
        dataset, damaged = readable_dataset(self.fs, path)
        if dataset is None:
            warn_damaged(self.root, damaged)
            return pd.DataFrame(columns=[*fixed, *(columns or [])])
        expr = None
        for key, value in filters.items():
            if value is None or key in fixed:
                continue
            if key not in dataset.schema.names:
                raise SweepError(f"{name} has no column {key!r}; columns: {', '.join(dataset.schema.names)}")
            term = ds.field(key) == value
            expr = term if expr is None else expr & term
        own = [c for c in columns if c not in fixed] if columns is not None else None
        try:
            table = dataset.to_table(columns=own, filter=expr)
        except READ_ERRORS:  # a file damaged inside, past the magic test: find it, read the others
            files = list(dataset.files)
            damaged.update(footer_damaged(self.fs, files))
            kept = [f for f in files if f not in damaged]
            table = (hive_dataset(self.fs, path, kept).to_table(columns=own, filter=expr) if kept
                     else dataset.schema.empty_table().select(own or dataset.schema.names))
        warn_damaged(self.root, damaged)
        frame = table.to_pandas()
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
        if dataset not in DATASETS or "model" not in DATASETS[dataset].keys:
            raise SweepError(f"unknown dataset {dataset!r}; allowed: "
                             f"{', '.join(n for n, d in DATASETS.items() if 'model' in d.keys)}")
        return DATASETS[dataset].values(self.fs, self.root, "model")

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

    def labels(self, model: str | None = None, layer: int | None = None, concept: str | None = None,
               vocabulary_hash: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
        """Concept labels per unit (`jobs/labels.py`): one row per (unit, rank) with the concept, its
        score, the method, the judge and the vocabulary's hash; filter by concept to find its units."""
        return self._read("labels", {"model": model, "layer": layer, "concept": concept,
                                     "vocabulary_hash": vocabulary_hash}, columns)

    def tuning(self, model: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
        """Recipe-tuning trials (`sweep tune`), one row per trial with its (lr, tv) and scores."""
        return self._read("tuning", {"model": model}, columns)
