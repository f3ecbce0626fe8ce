"""Results on disk or object storage: PNG images and Parquet metric rows, written atomically.

Where each dataset lives under a results root (a path or any fsspec URL), and its schema, is
`sweep.store.layout`'s business; this module writes bytes there safely.
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
from sweep.store.layout import FEATURE_SCHEMA


def open_root(root: str, storage_options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path of a results root (local path, file://, s3://, ...)."""
    try:
        fs, path = fsspec.core.url_to_fs(root, **(storage_options or {}))
    except Exception as exc:
        raise SweepError(f"cannot open results root {root!r}: {one_line(exc)}") from None
    return fs, path.rstrip("/")


def fingerprint(info: dict) -> str:
    """What identifies a file's version from a listing alone: its size and ETag (object stores) or
    modification time (disks); a file rewritten in place gets another."""
    stamp = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or ""
    return f"{info.get('size')}:{stamp}"


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


def replace_part(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write a partition's one current part, then remove its other `part-*.parquet` (made from older
    inputs): written first, so an interruption leaves the old part or both, never neither."""
    atomic_write(fs, path, data)
    for stale in fs.glob(posixpath.join(posixpath.dirname(path), "part-*.parquet")):
        if posixpath.basename(stale) != posixpath.basename(path):
            fs.rm(stale)


def check_writable(fs: fsspec.AbstractFileSystem, root: str, url: str, what: str = "results root") -> None:
    """Check the bucket, then write and remove a probe file, so an unwritable root fails before any
    work, in one line. A missing bucket is reported, never created; folders the probe had to make are
    removed again (the work makes them when it writes), so a command refused later leaves nothing."""
    bucket = bucket_of(fs, root)
    if bucket is not None:
        check_bucket(fs, bucket, url, what)
    made = []  # folders the probe makes (deepest first): removed again, so a refused command leaves nothing
    if bucket is None:
        folder = root
        while folder and folder != posixpath.dirname(folder) and not fs.exists(folder):
            made.append(folder)
            folder = posixpath.dirname(folder)
    probe = posixpath.join(root, f"_probe-{uuid.uuid4().hex}")
    try:
        atomic_write(fs, probe, b"sweep write check")
        fs.rm(probe)
    except SweepError as exc:
        raise SweepError(f"{what} {url!r} is not writable: {exc}") from None
    except Exception as exc:
        raise SweepError(f"{what} {url!r} is not writable: {storage_problem(exc)}") from None
    finally:
        for folder in made:
            try:
                fs.rmdir(folder)
            except (OSError, NotImplementedError):
                break


def bucket_of(fs: fsspec.AbstractFileSystem, path: str) -> str | None:
    """The bucket (container) of `path` on an object store (s3fs, gcsfs, adlfs: those with split_path);
    None for filesystems with real directories."""
    split = getattr(fs, "split_path", None)
    if split is None or is_local(fs):
        return None
    return split(path)[0] or None


def check_bucket(fs: fsspec.AbstractFileSystem, bucket: str, url: str, what: str = "results root") -> None:
    """Fail in one line when the bucket does not exist or the endpoint cannot be reached; other
    problems (credentials) are left to the probe write, whose error says more than a HEAD request's."""
    try:
        fs.info(bucket)
    except FileNotFoundError:
        raise SweepError(f"{what} {url!r} is not writable: bucket {bucket!r} does not exist "
                         "(create it first; it is never created by this tool)") from None
    except Exception as exc:
        if _is_connection_error(exc):
            raise SweepError(f"{what} {url!r} is not writable: {storage_problem(exc)}") from None


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
