"""What a results root holds of the feature sweep: which (model, layer, site, feature) are done, and where.

A resume must know this for every planned feature, and at the paper's size (208,128 features in
1,626 parts, as many PNGs) it must not cost a request per file. So:

- Parts are read whole, one ranged-free GET each, many at a time (`fs.cat`), and checked in memory
  (PAR1 at both ends, a parseable footer); a damaged part costs its own rows, never the read.
- What was read is kept in the root's index cache (`layout.FEATURE_INDEX`), each part's rows under
  its fingerprint (size and ETag, or size and mtime). The next read lists the parts and reads only
  those whose fingerprint is not in the cache: a resume of a complete root reads one file.
  The cache is only ever a copy: a part that changed, vanished or appeared is seen by the listing,
  and a cache that is unreadable or of another format is ignored (and rewritten).
- Images are checked against a listing of the image folders (one request per 1,000 on S3): a PNG
  that is missing, or whose size is not the `image_bytes` its row recorded, is damaged. Rows of
  older roots without `image_bytes` have their last 12 bytes read instead (a complete PNG ends
  with IEND).
"""

from __future__ import annotations

import io
import logging
import posixpath
from typing import NamedTuple

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sweep.core.errors import SweepError, one_line, storage_error
from sweep.store.layout import FEATURE_INDEX, FEATURE_SCHEMA, FEATURES, IMAGES
from sweep.store.outputs import atomic_write, fingerprint, frame_parquet_bytes, parquet_bytes, under_root
from sweep.store.results import READ_ERRORS, _arrow_fs, byte_ranges, hidden, magic_problem, warn_damaged

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["layer", "site", "feature", "config_hash", "status", "image_path", "weights", "image_bytes"]
#: Bump when the cache's columns or meaning change: a cache of another version is ignored.
CACHE_VERSION = "1"
#: Parts read per batch of concurrent GETs (bounds the bytes held at once).
READ_CHUNK = 256
#: The last 12 bytes of every complete PNG: the empty IEND chunk and its CRC.
PNG_TRAILER = b"\x00\x00\x00\x00IEND\xaeB`\x82"
#: Where damaged files are moved, under the root; readers skip underscore folders.
DAMAGED_DIR = "_damaged"

Triple = tuple[str, int, str, int]
_COLUMNS = ["model", *INDEX_COLUMNS, "part"]
CACHE_SCHEMA = pa.schema([("model", pa.string()), ("layer", pa.int64()), ("site", pa.string()),
                          ("feature", pa.int64()), ("config_hash", pa.string()), ("status", pa.string()),
                          ("image_path", pa.string()), ("weights", pa.string()), ("image_bytes", pa.int64()),
                          ("part", pa.string()), ("fingerprint", pa.string())], metadata={"version": CACHE_VERSION})


class StoredIndex(NamedTuple):
    """What a root holds: one row per readable result, and the parts that could not be read."""

    index: pd.DataFrame
    damaged: list[str]


def list_parts(fs: fsspec.AbstractFileSystem, base: str) -> dict[str, str]:
    """Parquet parts under `base` with their fingerprints, without the `hidden` ones."""
    fs.invalidate_cache(base)  # parts are written by other processes: never trust an old listing
    try:
        found = fs.find(base, detail=True)
    except FileNotFoundError:
        return {}
    return {p: fingerprint(info) for p, info in sorted(found.items())
            if info.get("type") != "directory" and p.endswith(".parquet") and not hidden(base, p)}


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in _COLUMNS})


def _part_frame(data: bytes, model: str | None, part: str) -> pd.DataFrame:
    """The index columns of one part's bytes (columns it lacks, from older roots, are null)."""
    pf = pq.ParquetFile(io.BytesIO(data))
    have = [c for c in INDEX_COLUMNS if c in pf.schema_arrow.names]
    df = pf.read(columns=have).to_pandas()
    for c in INDEX_COLUMNS:
        if c not in df:
            df[c] = None
    df.insert(0, "model", model)
    df["part"] = part
    return df[_COLUMNS]


def read_parts(fs: fsspec.AbstractFileSystem, root: str, paths: list[str]) -> tuple[list[pd.DataFrame], dict[str, str]]:
    """The index rows of these parts, one GET each, READ_CHUNK at a time; and the damaged ones with
    the reason. A part gone since the listing is in neither; any other storage error is raised."""
    frames, damaged = [], {}
    for i in range(0, len(paths), READ_CHUNK):
        chunk = paths[i:i + READ_CHUNK]
        got = fs.cat(chunk, on_error="return")
        for path in chunk:
            data = got.get(path, FileNotFoundError(path))
            if isinstance(data, FileNotFoundError):
                continue
            if isinstance(data, BaseException):
                raise SweepError(storage_error(data, path)) from None
            problem = magic_problem(data[:4], data[-4:])
            if problem:
                damaged[path] = problem
                continue
            model = FEATURES.keys_of(path[len(root) + 1:]).get("model")
            try:
                frames.append(_part_frame(data, model, path))
            except READ_ERRORS as exc:
                damaged[path] = one_line(exc, 120)
    return frames, damaged


def _load_cache(fs: fsspec.AbstractFileSystem, root: str) -> pd.DataFrame | None:
    """The cached rows with their part's fingerprint, or None when there is no usable cache."""
    path = posixpath.join(root, FEATURE_INDEX)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - a cache never stops a read: the parts are the truth
        log.warning("feature index cache %s unreadable (%s): reading the parts", path, one_line(exc, 120))
        return None
    try:
        table = pq.read_table(io.BytesIO(data))
        if (table.schema.metadata or {}).get(b"version") != CACHE_VERSION.encode() or \
                not table.schema.remove_metadata().equals(CACHE_SCHEMA.remove_metadata()):
            log.warning("feature index cache %s is of another format: reading the parts", path)
            return None
        return table.to_pandas()
    except READ_ERRORS as exc:
        log.warning("feature index cache %s damaged (%s): reading the parts", path, one_line(exc, 120))
        return None


def _save_cache(fs: fsspec.AbstractFileSystem, root: str, index: pd.DataFrame, prints: dict[str, str]) -> None:
    frame = index.assign(fingerprint=index["part"].map(prints))
    try:
        data = frame_parquet_bytes(frame[CACHE_SCHEMA.names], CACHE_SCHEMA)
        atomic_write(fs, posixpath.join(root, FEATURE_INDEX), data)
    except (SweepError, pa.ArrowException, ValueError, TypeError) as exc:
        log.warning("feature index cache not written (%s): the next resume reads the parts again", one_line(exc, 200))


def read_stored(fs: fsspec.AbstractFileSystem, root: str, model: str | None = None,
                cache: bool = False) -> StoredIndex:
    """One row per readable result (model, layer, site, feature, config_hash, status, image_path,
    weights, image_bytes, part), of one model's partition when given, and the damaged parts that
    were skipped (warned about once). cache=True reads and refreshes the root's index cache (the
    caller writes to the root anyway; the whole root only, model None); without it every part is read."""
    cache = cache and model is None
    base = posixpath.join(root, FEATURES.folder(model=model) if model else FEATURES.folder())
    prints = list_parts(fs, base)
    cached = _load_cache(fs, root) if cache and prints else None
    frames, fresh = [], set()
    if cached is not None:
        keep = cached[cached["part"].map(prints) == cached["fingerprint"]]
        fresh = set(keep["part"])
        if len(keep):
            frames.append(keep[_COLUMNS])
    read, damaged = read_parts(fs, root, [p for p in prints if p not in fresh])
    frames += read
    warn_damaged(root, damaged)
    frames = [f for f in frames if len(f)]
    index = pd.concat(frames, ignore_index=True) if frames else _empty()
    if cache and (read or cached is None or len(fresh) != len(set(cached["part"]))):
        _save_cache(fs, root, index, prints)
    return StoredIndex(index, sorted(damaged))


def read_index(fs: fsspec.AbstractFileSystem, root: str, model: str | None = None) -> pd.DataFrame:
    """One row per readable stored result: model, layer, site, feature, config_hash, status, part..."""
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


def image_sizes(fs: fsspec.AbstractFileSystem, root: str, models: set[str]) -> dict[str, int]:
    """Size of every file in these models' image folders, from listings (one request per 1,000 on S3)."""
    sizes: dict[str, int] = {}
    for model in sorted(models):
        base = posixpath.join(root, IMAGES.folder(model=model))
        fs.invalidate_cache(base)
        try:
            found = fs.find(base, detail=True)
        except FileNotFoundError:
            continue
        sizes.update((p, int(info.get("size") or 0)) for p, info in found.items() if info.get("type") != "directory")
    return sizes


def damaged_images(fs: fsspec.AbstractFileSystem, root: str, index: pd.DataFrame,
                   triples: set[Triple]) -> set[Triple]:
    """The triples among `triples` whose `ok` row's PNG is missing, of another size than its row
    recorded, or (rows without image_bytes) empty or truncated."""
    if index.empty or not triples:
        return set()
    ok = index[index["status"] == "ok"]
    keys = list(zip(ok["model"], ok["layer"].astype(int), ok["site"], ok["feature"].astype(int)))
    nbytes = pd.to_numeric(ok["image_bytes"], errors="coerce") if "image_bytes" in ok else [None] * len(ok)
    rows = [(k, path, n) for k, path, n in zip(keys, ok["image_path"], nbytes) if k in triples]
    if not rows:
        return set()
    outside = {k for k, path, _ in rows if under_root(root, path) is None}  # recomputed to its own path
    rows = [(k, under_root(root, path), n) for k, path, n in rows if k not in outside]
    sizes = image_sizes(fs, root, {k[0] for k, _, _ in rows})
    bad = set(outside)
    unsized = []
    for k, path, n in rows:
        size = sizes.get(path)
        if size is None:
            bad.add(k)
        elif n is None or n != n:  # an older row (or a value that is no size): read the PNG's end
            unsized.append((k, path))
        elif size != int(n):
            bad.add(k)
    if unsized:
        tails = byte_ranges(fs, [p for _, p in unsized], [-len(PNG_TRAILER)] * len(unsized), [None] * len(unsized))
        bad |= {k for (k, _), tail in zip(unsized, tails) if tail != PNG_TRAILER}
    if bad:
        m, layer, site, f = sorted(bad)[0]
        log.warning("%d stored image(s) under %s are missing, empty or truncated (e.g. %s layer %d %s %d); "
                    "their results are recomputed", len(bad), root, m, layer, site, f)
    return bad


def drop_triples(fs: fsspec.AbstractFileSystem, index: pd.DataFrame, triples: set[Triple]) -> int:
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
