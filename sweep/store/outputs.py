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
from collections.abc import Iterable

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from sweep.core.errors import SweepError, one_line
from sweep.core.redact import Scrubber, redact, redact_text

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


def under_root(root: str, rel) -> str | None:
    """`root/rel` for a root-relative path read from data (a row's image_path), or None for anything
    that could point elsewhere: absolute paths, `..`, URL schemes, backslashes, NUL. Paths derived
    from data never leave their root."""
    try:
        bad = (not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel
               or bool(urllib.parse.urlsplit(rel).scheme) or rel.startswith("/") or ".." in rel.split("/"))
    except ValueError:
        bad = True
    return None if bad else posixpath.join(root, posixpath.normpath(rel))


def features_dir(model: str) -> str:
    return partition_path("features", model=model)


def atomic_write(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write so that a reader sees either nothing or the whole file, never a partial one.

    Local-like filesystems get a temporary sibling renamed into place (rename is atomic);
    object stores publish an object only when its upload completes, so they are written directly,
    and without makedirs: on s3fs that would create a missing bucket as a side effect.
    """
    parent = posixpath.dirname(path)
    try:
        if parent and bucket_of(fs, path) is None:
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
        raise SweepError(f"cannot write {path!r}: {storage_problem(exc)}") from None


def check_writable(fs: fsspec.AbstractFileSystem, root: str, url: str) -> None:
    """Check the bucket, then write and remove a probe file, so an unwritable root fails before any
    work, in one line. A missing bucket is reported, never created."""
    bucket = bucket_of(fs, root)
    if bucket is not None:
        check_bucket(fs, bucket, url)
    probe = posixpath.join(root, f"_probe-{uuid.uuid4().hex}")
    try:
        atomic_write(fs, probe, b"sweep write check")
        fs.rm(probe)
    except SweepError as exc:
        raise SweepError(f"results root {url!r} is not writable: {exc}") from None
    except Exception as exc:
        raise SweepError(f"results root {url!r} is not writable: {storage_problem(exc)}") from None


def bucket_of(fs: fsspec.AbstractFileSystem, path: str) -> str | None:
    """The bucket (container) of `path` on an object store (s3fs, gcsfs, adlfs: those with split_path);
    None for filesystems with real directories."""
    split = getattr(fs, "split_path", None)
    if split is None or is_local(fs):
        return None
    return split(path)[0] or None


def check_bucket(fs: fsspec.AbstractFileSystem, bucket: str, url: str) -> None:
    """Fail in one line when the bucket does not exist or the endpoint cannot be reached; other
    problems (credentials) are left to the probe write, whose error says more than a HEAD request's."""
    try:
        fs.info(bucket)
    except FileNotFoundError:
        raise SweepError(f"results root {url!r} is not writable: bucket {bucket!r} does not exist "
                         "(create it first; it is never created by this tool)") from None
    except Exception as exc:
        if _is_connection_error(exc):
            raise SweepError(f"results root {url!r} is not writable: {storage_problem(exc)}") from None


def storage_problem(exc: BaseException) -> str:
    """A storage library's error as one line that starts by saying, in words, what is wrong."""
    detail = one_line(redact_text(str(exc)) or type(exc).__name__)
    if _is_connection_error(exc):
        words = "cannot connect to the storage endpoint"
    elif isinstance(exc, PermissionError):
        words = "access denied (check the credentials and the bucket's permissions)"
    elif isinstance(exc, FileNotFoundError):
        words = "no such bucket, folder or object"
    else:
        return detail
    return f"{words}: {detail}"


#: botocore / aiohttp exception classes that mean the endpoint was not reached (matched by name, so
#: this module does not import them).
_CONNECTION_ERRORS = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ClientConnectorError",
                      "ServerDisconnectedError", "ClientConnectionError", "ProxyConnectionError"}


def _is_connection_error(exc: BaseException) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return isinstance(exc, (ConnectionError, TimeoutError)) or bool(names & _CONNECTION_ERRORS)


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


def parquet_bytes(rows: list[dict], schema: pa.Schema = FEATURE_SCHEMA, secrets: Iterable[str] = ()) -> bytes:
    """Row dicts as Parquet bytes with the given schema; user strings that land in rows (errors, weights
    paths, URLs) are stripped of credentials first (sweep.core.redact; `secrets`: values known besides the env's)."""
    return table_bytes(pa.Table.from_pylist(redact(rows, secrets, by_name=False), schema=schema))


def frame_parquet_bytes(frame, schema: pa.Schema | None = None, secrets: Iterable[str] = ()) -> bytes:
    """A pandas DataFrame as Parquet bytes, with an explicit schema when given (else inferred); string
    cells are stripped of credentials like parquet_bytes' rows."""
    scrub, frame = Scrubber(secrets), frame.copy(deep=False)
    for col in frame.select_dtypes(include=["object", "string"]).columns:
        frame[col] = frame[col].map(lambda v: scrub(v) if isinstance(v, str) else v)
    return table_bytes(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
