"""What the atlas reads from a results root: a listing first (cheap), rows only where it changed.

A rebuild starts from the partition listing alone: each model's features parts, top-image parts and
activation-map files with their sizes and modification stamps (ETags on object stores). A model
whose listing matches the site's state is not read at all. Everything read is untrusted: damaged
parts cost their own rows (one warning), rows without a model or a whole layer and feature number
are dropped, and image paths are only ever resolved inside the root.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import posixpath
from dataclasses import dataclass, field

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from sweep.core.errors import one_line
from sweep.store.layout import (
    FEATURE_SCHEMA,
    FEATURES,
    LABEL_SCHEMA,
    LABELS,
    MAP_FILES,
    MATCHES,
    TOP_IMAGES,
    TOP_SCHEMA,
    TOP_THUMBS,
    TRANSFER,
    TRANSFER_SCHEMA,
    Dataset,
)
from sweep.store.outputs import fingerprint, is_local, under_root
from sweep.store.results import fit_schema
from sweep.views.atlas.publish import inside

log = logging.getLogger(__name__)

#: What a damaged or hostile file raises while read or decoded (UnidentifiedImageError is an OSError).
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
READ_ERRORS = (OSError, pa.ArrowException)


@dataclass
class ModelInputs:
    """One model's files under the root, each with its fingerprint (size and stamp)."""

    model: str
    parts: dict[str, str] = field(default_factory=dict)   # features/... part -> fingerprint
    tops: dict[str, str] = field(default_factory=dict)    # top_images/... part -> fingerprint
    maps: dict[str, str] = field(default_factory=dict)    # activation_maps/files/... png -> fingerprint
    thumbs: dict[str, str] = field(default_factory=dict)  # top_image_thumbs/... png of its splits -> fingerprint
    labels: dict[str, str] = field(default_factory=dict)  # labels/... part -> fingerprint
    # Where the root has matches (jobs/matching.py): every match part, and the other models' features
    # parts, since a unit's page links its counterparts' pages where those were visualized.
    matches: dict[str, str] = field(default_factory=dict)
    others: dict[str, str] = field(default_factory=dict)
    transfer: dict[str, str] = field(default_factory=dict)  # transfer/... part -> fingerprint (jobs/transfer.py)

    def digest(self, salt: str) -> str:
        h = hashlib.sha256(salt.encode())
        for kind in (self.parts, self.tops, self.maps, self.thumbs, self.labels, self.matches, self.others,
                     self.transfer):
            for rel in sorted(kind):
                h.update(f"{rel}\0{kind[rel]}\n".encode())
            h.update(b"|")
        return h.hexdigest()[:16]


def _listing(fs, base: str) -> dict[str, dict]:
    if not fs.exists(base):
        return {}
    found = fs.find(base, detail=True)
    return {p: i for p, i in found.items() if i.get("type") != "directory"}  # links too: refused later, with a warning




def list_inputs(fs, root: str) -> dict[str, ModelInputs]:
    """Every model's inputs, from folder listings only (nothing is opened)."""
    models: dict[str, ModelInputs] = {}

    def add(kind: str, dataset: Dataset, suffix: str | None = None) -> None:
        base = posixpath.join(root, dataset.folder())
        for path, info in sorted(_listing(fs, base).items()):
            names = path[len(base) + 1:].split("/")
            if any(n.startswith((".", "_")) for n in names) or (suffix and not path.endswith(suffix)):
                continue
            model = dataset.keys_of(path[len(root) + 1:]).get("model")
            if model is None:
                log.warning("atlas: skipping %r: not inside a model=<name> folder", path)
                continue
            entry = models.setdefault(model, ModelInputs(model))
            getattr(entry, kind)[path[len(root) + 1:]] = fingerprint(info)

    add("parts", FEATURES)
    add("tops", TOP_IMAGES)
    add("maps", MAP_FILES, ".png")
    add("labels", LABELS, ".parquet")
    add("transfer", TRANSFER, ".parquet")
    base = posixpath.join(root, TOP_THUMBS.folder())
    thumbs: dict[str, dict[str, str]] = {}  # split -> {png: fingerprint}
    for path, info in _listing(fs, base).items():
        split = TOP_THUMBS.keys_of(path[len(root) + 1:]).get("split")
        if split is not None and path.endswith(".png"):
            thumbs.setdefault(split, {})[path[len(root) + 1:]] = fingerprint(info)
    for entry in models.values():  # a model's pages show the thumbnails of its splits' top images
        for split in {TOP_IMAGES.keys_of(rel).get("split") for rel in entry.tops}:
            entry.thumbs.update(thumbs.get(split, {}))
    matches = match_parts(fs, root)
    if matches:
        for entry in models.values():
            entry.matches = matches
            entry.others = {rel: fp for other in models.values() if other is not entry for rel, fp in other.parts.items()}
    return {m: models[m] for m in sorted(models) if models[m].parts}


def match_parts(fs, root: str) -> dict[str, str]:
    """Every part of the matches dataset (`matches/pair=<a>~<b>/part-*.parquet`) with its fingerprint."""
    base = posixpath.join(root, MATCHES.folder())
    return {path[len(root) + 1:]: fingerprint(info) for path, info in sorted(_listing(fs, base).items())
            if path.endswith(".parquet") and not any(n.startswith((".", "_")) for n in path[len(base) + 1:].split("/"))}


def read_feature_parts(fs, root: str, rels: list[str]) -> pd.DataFrame:
    """The usable feature rows of these parts, with `model` and `part` columns; a part that cannot be
    read is skipped with one warning. Parts are joined as Arrow tables and converted once. A feature
    written twice is left for the caller to settle (`build._plan_model`: the newest row wins)."""
    tables = []
    for rel in sorted(rels):
        try:
            with fs.open(posixpath.join(root, rel), "rb") as fh:
                table = fit_schema(pq.read_table(fh), FEATURE_SCHEMA)  # the rule `Results` reads by
        except (*READ_ERRORS, ValueError) as exc:
            log.warning("atlas: skipping %r: cannot be read (%s)", rel, one_line(exc))
            continue
        n = table.num_rows
        model = FEATURES.keys_of(rel).get("model")
        tables.append(table.append_column("model", pa.array([model] * n, pa.string()))
                      .append_column("part", pa.array([rel] * n, pa.string())))
    if not tables:
        return pd.DataFrame(columns=["model", "part", *FEATURE_SCHEMA.names])
    frame = pa.concat_tables(tables).to_pandas()  # one schema: every table was fitted to the layout's
    for name in ("layer", "feature"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    usable = frame["model"].notna() & (frame["layer"] % 1 == 0) & (frame["feature"] % 1 == 0)
    if not usable.all():
        log.warning("atlas: skipping %d row(s) without a model or a whole layer and feature number",
                    int((~usable).sum()))
    frame = frame[usable].astype({"layer": int, "feature": int})
    frame["site"] = frame["site"].map(lambda v: "" if v is None or v != v else str(v))
    return frame


def read_part(fs, root: str, rel: str, schema: pa.Schema, what: str, columns: list[str] | None = None):
    """One part of a side dataset (top images, labels, matches, transfer) as a frame in the layout's
    `schema` (`fit_schema`, the rule `Results` reads by; only `columns` when given, which must all be
    there), or None after one warning naming it when it cannot be read."""
    try:
        with fs.open(posixpath.join(root, rel), "rb") as fh:
            table = fit_schema(pq.read_table(fh, columns=columns), schema)
    except (*READ_ERRORS, ValueError) as exc:
        log.warning("atlas: %s %r cannot be read (%s); left out", what, rel, one_line(exc))
        return None
    return (table.select(columns) if columns else table).to_pandas()


def read_top_images(fs, root: str, rels: list[str]) -> dict:
    """(layer, site, feature) -> [{split, rank, image, activation}] from one model's top-image parts."""
    found: dict = {}
    for rel in sorted(rels):
        split = TOP_IMAGES.keys_of(rel).get("split", "")
        top = read_part(fs, root, rel, TOP_SCHEMA, "top images")
        if top is None:
            continue
        for c in ("layer", "feature", "rank"):
            top[c] = pd.to_numeric(top[c], errors="coerce")
        top = top.dropna(subset=["layer", "feature", "rank"])
        for r in top.sort_values("rank").itertuples(index=False):
            found.setdefault((int(r.layer), "" if r.site is None else str(r.site), int(r.feature)), []).append(
                {"split": split, "rank": int(r.rank) + 1, "image": "" if r.image_id is None else str(r.image_id),
                 "activation": _float(r.activation)})
    return found


def read_labels(fs, root: str, rels: list[str]) -> dict:
    """(layer, site, feature) -> [{concept, score, rank, method, vocabulary, judge}] from one model's label
    parts: the profile-correlation labels first (the unit's best concept is its first), then by method,
    vocabulary and rank; a part that cannot be read is left out with one warning."""
    found: dict = {}
    for rel in sorted(rels):
        try:
            layer = int(LABELS.keys_of(rel).get("layer"))
        except (TypeError, ValueError) as exc:
            log.warning("atlas: labels %r cannot be read (%s); left out", rel, one_line(exc))
            continue
        rows = read_part(fs, root, rel, LABEL_SCHEMA, "labels")
        if rows is None:
            continue
        rows = rows.fillna({c: "" for c in ("site", "vocabulary", "judge", "method")})
        for c in ("feature", "rank", "score"):
            rows[c] = pd.to_numeric(rows[c], errors="coerce")
        rows = rows.dropna(subset=["feature", "rank"])
        for r in rows.itertuples(index=False):
            found.setdefault((layer, "" if r.site is None else str(r.site), int(r.feature)), []).append(
                {"concept": "" if r.concept is None else str(r.concept), "score": _float(r.score),
                 "rank": int(r.rank) + 1, "method": str(r.method or ""), "vocabulary": str(r.vocabulary or ""),
                 "judge": str(r.judge or "")})
    for labels in found.values():
        labels.sort(key=lambda c: (c["method"] != "profile-correlation", c["method"], c["vocabulary"], c["rank"]))
    return found


def read_transfer(fs, root: str, rels: list[str]) -> dict:
    """(layer, site, feature) -> the median z of its counterparts over the other models its image was
    shown to (`jobs/transfer.py`), from one model's transfer parts; a part that cannot be read is left
    out with one warning."""
    frames = [f for f in (read_part(fs, root, rel, TRANSFER_SCHEMA, "transfer") for rel in sorted(rels)) if f is not None]
    if not frames:
        return {}
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[(rows["error"].fillna("") == "") & rows["layer"].notna() & rows["feature"].notna()]
    rows = rows.assign(site=rows["site"].fillna(""), z=pd.to_numeric(rows["z"], errors="coerce"))
    return {(int(k[0]), str(k[1]), int(k[2])): float(v) for k, v in rows.groupby(["layer", "site", "feature"])["z"].median()
            .dropna().items()}


def _float(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def map_files(rels) -> dict:
    """(layer, site, feature) -> [root-relative png] from activation_maps/files/model=<m>/layer=<l>/<site>-<f>/."""
    found: dict = {}
    for rel in sorted(rels):
        parts = rel[len(MAP_FILES.name) + 1:].split("/")  # model=<m>/layer=<l>/<site>-<f>/<image>.png
        try:
            site, _, feat = parts[2].rpartition("-")  # written unquoted by save_map
            key = (int(MAP_FILES.keys_of(rel)["layer"]), site, int(feat))
        except (IndexError, KeyError, ValueError):
            log.warning("atlas: skipping %r: not activation_maps/files/model=<m>/layer=<l>/<site>-<f>/<image>.png",
                        rel)
            continue
        found.setdefault(key, []).append(rel)
    return found


@dataclass
class RootImages:
    """PNGs read from inside the results root only, published only when they decode."""

    fs: fsspec.AbstractFileSystem
    root: str

    def locate(self, rel) -> str | None:
        """The root's file for a root-relative path, or None for anything that could point elsewhere:
        absolute paths, `..`, URL schemes, backslashes, NUL, and (locally) links leading out."""
        path = under_root(self.root, rel)
        if path is not None and is_local(self.fs):
            root = os.path.realpath(self.root)
            if not inside(os.path.realpath(path), root):
                return None
        return path

    def read(self, rel) -> tuple[bytes, bytes] | None:
        """(the PNG, its thumbnail) once it decodes, or None with one warning (outside the root, damaged)."""
        if not isinstance(rel, str) or not rel:
            log.warning("atlas: a result has no image path; shown as unavailable")
            return None
        path = self.locate(rel)
        if path is None:
            log.warning("atlas: image path %r is not inside the results root; shown as unavailable", rel)
            return None
        try:
            data = self.fs.cat_file(path)
            return data, thumbnail(data)
        except IMAGE_ERRORS as exc:
            why = "not a decodable image" if isinstance(exc, UnidentifiedImageError) else one_line(exc)
            log.warning("atlas: image %r cannot be read (%s); shown as unavailable", rel, why)
            return None


#: Thumbnail side on layer pages, in pixels.
THUMB = 128


def thumbnail(png: bytes, size: int = THUMB) -> bytes:
    """A small PNG of an image (decoding it fully: a file that does not decode raises here)."""
    with Image.open(io.BytesIO(png)) as im:
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()
