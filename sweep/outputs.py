"""Results on disk or object storage: PNG images and Parquet metric rows, written atomically.

Layout under a results root (a path or any fsspec URL):
    images/model=<model>/layer=<layer>/<site>-<feature>.png
    features/model=<model>/part-<hash>.parquet     (hive-partitioned; `model` lives in the path)
Model keys may contain '/', so partition values are URI-encoded, which pyarrow decodes on read.
"""

from __future__ import annotations

import io
import posixpath
import urllib.parse
import uuid

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from sweep.errors import SweepError, one_line

#: Columns of a feature row, in order, with their Arrow types (the `model` column is the partition).
FEATURE_SCHEMA = pa.schema([
    ("weights", pa.string()),
    ("layer", pa.int32()),
    ("layer_name", pa.string()),
    ("site", pa.string()),
    ("feature", pa.int32()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("seed", pa.int64()),
    ("base_seed", pa.int64()),
    ("steps", pa.int32()),
    ("copies", pa.int32()),
    ("lr", pa.float64()),
    ("tv", pa.float64()),
    ("tv_coef", pa.float64()),
    ("recipe_source", pa.string()),
    ("beta1", pa.float64()),
    ("beta2", pa.float64()),
    ("eps", pa.float64()),
    ("color_mean", pa.float64()),
    ("color_std", pa.float64()),
    ("offset_std", pa.float64()),
    ("jitter", pa.int32()),
    ("image_size", pa.int32()),
    ("reference_scale", pa.bool_()),
    ("act_init", pa.float64()),
    ("act_final", pa.float64()),
    ("loss_final", pa.float64()),
    ("curve_steps", pa.list_(pa.int32())),
    ("loss_curve", pa.list_(pa.float32())),
    ("act_curve", pa.list_(pa.float32())),
    ("batch_features", pa.int32()),
    ("wall_s", pa.float64()),
    ("device", pa.string()),
    ("precision", pa.string()),
    ("features_per_pass", pa.int32()),
    ("versions", pa.string()),
    ("config_hash", pa.string()),
    ("image_path", pa.string()),
    ("created_at", pa.timestamp("ms", tz="UTC")),
])


def open_root(root: str, storage_options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path of a results root (local path, file://, s3://, ...)."""
    try:
        fs, path = fsspec.core.url_to_fs(root, **(storage_options or {}))
    except Exception as exc:
        raise SweepError(f"cannot open results root {root!r}: {one_line(exc)}") from None
    return fs, path.rstrip("/")


def partition_value(value: str) -> str:
    """URI-encode a hive partition value (pyarrow decodes it back when reading)."""
    return urllib.parse.quote(str(value), safe="")


def partition_path(dataset: str, **keys) -> str:
    """`dataset/key=value/...` in the order given, values URI-encoded: the layout of every dataset
    of a results root, read back by pyarrow's hive partitioning."""
    return posixpath.join(dataset, *(f"{k}={partition_value(v)}" for k, v in keys.items()))


def image_relpath(model: str, layer: int, site: str, feature: int) -> str:
    return posixpath.join(partition_path("images", model=model, layer=layer), f"{site}-{feature}.png")


def features_dir(model: str) -> str:
    return partition_path("features", model=model)


def atomic_write(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write so that a reader sees either nothing or the whole file, never a partial one.

    Local-like filesystems get a temporary sibling renamed into place (rename is atomic);
    object stores publish an object only when its upload completes, so they are written directly.
    """
    parent = posixpath.dirname(path)
    try:
        if parent:
            fs.makedirs(parent, exist_ok=True)
        if is_local(fs):
            tmp = posixpath.join(parent, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(path)}")
            with fs.open(tmp, "wb") as fh:
                fh.write(data)
            fs.mv(tmp, path)
        else:
            with fs.open(path, "wb") as fh:
                fh.write(data)
    except SweepError:
        raise
    except Exception as exc:
        raise SweepError(f"cannot write {path!r}: {one_line(exc)}") from None


def check_writable(fs: fsspec.AbstractFileSystem, root: str, url: str) -> None:
    """Write and remove a probe file, so an unwritable root fails before any work, in one line."""
    probe = posixpath.join(root, f"_probe-{uuid.uuid4().hex}")
    try:
        atomic_write(fs, probe, b"sweep write check")
        fs.rm(probe)
    except SweepError as exc:
        raise SweepError(f"results root {url!r} is not writable: {exc}") from None
    except Exception as exc:
        raise SweepError(f"results root {url!r} is not writable: {one_line(exc)}") from None


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether paths of `fs` are on this machine's disk (so rename is atomic, and not shared)."""
    proto = fs.protocol
    return "file" in ((proto,) if isinstance(proto, str) else tuple(proto))


def png_bytes(image: torch.Tensor) -> bytes:
    """A (3, H, W) image in [0, 1] as 8-bit PNG bytes (rounded like torchvision's save_image)."""
    arr = image.detach().cpu().float().mul(255).add(0.5).clamp(0, 255).to(torch.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr.permute(1, 2, 0).numpy())).save(buf, format="PNG")
    return buf.getvalue()


def table_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def parquet_bytes(rows: list[dict], schema: pa.Schema = FEATURE_SCHEMA) -> bytes:
    """Row dicts as Parquet bytes with the given schema."""
    return table_bytes(pa.Table.from_pylist(rows, schema=schema))


def frame_parquet_bytes(frame, schema: pa.Schema | None = None) -> bytes:
    """A pandas DataFrame as Parquet bytes, with an explicit schema when given (else inferred)."""
    return table_bytes(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
