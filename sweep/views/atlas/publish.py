"""Where the atlas is written: one folder or URL (any fsspec filesystem), and nothing outside it.

Local sites are written atomically (a temporary file renamed over the old one); object stores get one
PUT per file with its content type, so a bucket website serves the pages as pages. What the site
holds is known from its own state files (`_atlas/`), so deciding whether a file changed never reads
the file back: a rebuild costs no round trip per unchanged file.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath

import fsspec

from sweep.core.errors import SweepError, one_line
from sweep.store.outputs import is_local

#: Content types by suffix: an object store serves what it was told at upload.
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".png": "image/png", ".json": "application/json",
                 ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".svg": "image/svg+xml", ".pdf": "application/pdf"}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def inside(path: str, folder: str) -> bool:
    """Whether a normalised path (realpath, or posix-normalised on an object store) is `folder` or under it."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def safe_rel(rel) -> str | None:
    """A site-relative posix path, normalised, or None for anything that could leave the site:
    absolute paths, `..`, backslashes, NUL, empty or `.`."""
    if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel or rel.startswith("/"):
        return None
    norm = posixpath.normpath(rel)
    if norm in (".", "..") or norm.startswith("../") or "://" in rel:
        return None
    return norm


class SiteWriter:
    """Writes files under the site's folder or URL only; `written` lists what one build wrote."""

    def __init__(self, site: str, storage_options: dict | None = None):
        try:
            self.fs, root = fsspec.core.url_to_fs(site, **(storage_options or {}))
        except Exception as exc:
            raise SweepError(f"atlas: cannot open the site {site!r}: {one_line(exc)}") from None
        self.site, self.root = site, root.rstrip("/") or root
        self.local = is_local(self.fs)
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.options = storage_options
        self.written: list[str] = []
        self.deleted: list[str] = []

    def path(self, rel: str) -> str:
        """The file for a site-relative path; a path that would leave the site is refused (locally,
        links planted in the site folder that lead out of it too)."""
        norm = safe_rel(rel)
        if norm is None:
            raise SweepError(f"atlas: refusing to write {rel!r}: outside the site folder {self.site!r}")
        if not self.local:
            return posixpath.join(self.root, norm)
        base = os.path.realpath(self.root)
        path = os.path.realpath(os.path.join(base, norm))
        if path == base or not inside(path, base):
            raise SweepError(f"atlas: refusing to write {rel!r}: outside the site folder {self.site!r}")
        return path

    def write(self, rel: str, data: bytes) -> None:
        path = self.path(rel)
        try:
            if self.local:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                tmp = f"{path}.tmp-{os.getpid()}"
                with open(tmp, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            else:
                extra = {}
                if self.protocol in ("s3", "s3a"):
                    extra["ContentType"] = CONTENT_TYPES.get(posixpath.splitext(rel)[1], "application/octet-stream")
                self.fs.pipe_file(path, data, **extra)
        except OSError as exc:
            raise SweepError(f"atlas: cannot write {rel!r} to {self.site!r}: {one_line(exc)}") from None
        self.written.append(rel)

    def delete(self, rel: str) -> None:
        """Remove a file the site no longer needs (a feature that left the results root)."""
        path = self.path(rel)
        try:
            if self.fs.exists(path):
                self.fs.rm_file(path)
        except OSError as exc:
            raise SweepError(f"atlas: cannot delete {rel!r} from {self.site!r}: {one_line(exc)}") from None
        self.deleted.append(rel)

    def discard(self, rel: str, report: bool = True) -> None:
        """Delete a file if the site has it; recorded in `deleted` only then, and only if `report`
        (bookkeeping files are not pages)."""
        if self.read_bytes(rel) is not None:
            self.delete(rel)
            if not report:
                self.deleted.pop()

    def read_bytes(self, rel: str) -> bytes | None:
        """A file of the site, or None when it is missing or unreadable."""
        try:
            with self.fs.open(self.path(rel), "rb") as fh:
                return fh.read()
        except OSError:
            return None

    def read_json(self, rel: str) -> dict | None:
        """A state file of the site, or None when it is missing or unreadable (then the part of the
        site it describes is simply built again)."""
        try:
            with self.fs.open(self.path(rel), "rb") as fh:
                value = json.loads(fh.read())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def write_json(self, rel: str, value: dict) -> None:
        self.write(rel, json.dumps(value, separators=(",", ":"), sort_keys=True).encode())
        self.written.pop()  # bookkeeping, not a page: not reported as written
