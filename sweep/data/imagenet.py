"""Readers for real ImageNet layouts, returning plain records (dicts) that any pipeline can use.

- ILSVRC2012 train: `<train>/<wnid>/<wnid>_<n>.JPEG`, boxes `<boxes>/<wnid>/<wnid>_<n>.xml` (PASCAL VOC).
- ILSVRC2012 val: `<val>/ILSVRC2012_val_<n>.JPEG` (flat) or `<val>/<wnid>/...` (class folders), with
  labels and boxes from the localization release's LOC_val_solution.csv, or labels only from the
  devkit's ILSVRC2012_validation_ground_truth.txt plus its meta.mat (ILSVRC2012_ID -> wnid).
Class indices come from the synset list timm ships (sorted wnids, the order of ImageFolder).

A record: {"image_id", "path", "wnid", "label", "boxes": [[xmin, ymin, xmax, ymax], ...]}.
Problems (unreadable XML, a label outside the 1000 classes) are collected, never raised midway.
"""

from __future__ import annotations

import csv
import io
import logging
import posixpath
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import lru_cache

import fsspec

from sweep.errors import SweepError, one_line

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


@lru_cache(maxsize=1)
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 wnids in class-index order, from timm's bundled list."""
    from importlib.resources import files

    text = files("timm.data").joinpath("_info/imagenet_synsets.txt").read_text()
    wnids = tuple(w.strip() for w in text.splitlines() if w.strip())
    assert len(wnids) == 1000, len(wnids)
    return wnids


def class_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet_synsets())}


@dataclass
class Listing:
    """Records plus what could not be used, with reasons (reported, never silently dropped)."""

    records: list[dict] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)  # {"path", "stage", "error"}

    def problem(self, path: str, stage: str, error: str) -> None:
        self.problems.append({"path": path, "stage": stage, "error": error})


def parse_voc(data: bytes, wnid: str | None = None) -> tuple[list[list[float]], tuple[int, int] | None]:
    """Boxes [xmin, ymin, xmax, ymax] of a PASCAL VOC annotation, only those named `wnid` if given;
    and the annotated (width, height) when present. Raises ValueError on malformed XML."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ValueError(f"malformed XML: {exc}") from None
    boxes = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if wnid is not None and name != wnid:
            continue
        bb = obj.find("bndbox")
        if bb is None:
            raise ValueError("object without bndbox")
        try:
            box = [float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            raise ValueError("bndbox with a missing or non-numeric coordinate") from None
        if box[2] < box[0] or box[3] < box[1]:
            raise ValueError(f"box with max < min: {box}")
        boxes.append(box)
    size = None
    w, h = root.findtext("size/width"), root.findtext("size/height")
    if w and h:
        size = (int(float(w)), int(float(h)))
    return boxes, size


def _fs(root: str, storage_options: dict | None):
    try:
        return fsspec.core.url_to_fs(root, **(storage_options or {}))
    except Exception as exc:
        raise SweepError(f"cannot open {root!r}: {one_line(exc)}") from None


def _stem(path: str) -> str:
    return posixpath.splitext(posixpath.basename(path))[0]


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_SUFFIXES)


def _url(fs, path: str) -> str:
    return fs.unstrip_protocol(path) if "file" not in _protocols(fs) else path


def _protocols(fs) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def train_with_boxes(train_root: str, boxes_root: str, storage_options: dict | None = None,
                     limit: int | None = None) -> Listing:
    """The paper's subset: train images with at least one box of their own class (482,632 in full)."""
    fs, train = _fs(train_root, storage_options)
    _, boxes = _fs(boxes_root, storage_options)
    if not fs.isdir(train):
        raise SweepError(f"ImageNet train folder {train_root!r} does not exist or is not a folder")
    if not fs.isdir(boxes):
        raise SweepError(f"box annotation folder {boxes_root!r} does not exist or is not a folder")
    index = class_index()
    out = Listing()
    for wnid in sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(train, detail=False)):
        if wnid not in index:
            continue
        images = {_stem(p): p for p in fs.ls(posixpath.join(train, wnid), detail=False) if _is_image(p)}
        ann_dir = posixpath.join(boxes, wnid)
        xmls = sorted(p for p in fs.ls(ann_dir, detail=False) if p.endswith(".xml")) if fs.isdir(ann_dir) else []
        for xml in xmls:
            stem = _stem(xml)
            if stem not in images:
                out.problem(_url(fs, xml), "image", "annotation without its image in the train folder")
                continue
            try:
                own, _ = parse_voc(fs.cat_file(xml), wnid)
            except (ValueError, OSError) as exc:
                out.problem(_url(fs, xml), "annotation", one_line(exc))
                continue
            if own:
                out.records.append({"image_id": stem, "path": _url(fs, images[stem]), "wnid": wnid,
                                    "label": index[wnid], "boxes": own})
            if limit is not None and len(out.records) >= limit:
                return out
    return out


def val_from_solution(val_root: str, solution_csv: str, storage_options: dict | None = None,
                      limit: int | None = None, with_boxes_only: bool = False) -> Listing:
    """ImageNet val with labels (and own-class boxes) from LOC_val_solution.csv.

    Its rows are `ImageId,PredictionString` with `wnid xmin ymin xmax ymax` repeated; the label is the
    first wnid (all boxes of a val image are of its class).
    """
    fs, val = _fs(val_root, storage_options)
    sfs, sol = _fs(solution_csv, storage_options)
    if not fs.isdir(val):
        raise SweepError(f"ImageNet val folder {val_root!r} does not exist or is not a folder")
    try:
        text = sfs.cat_file(sol).decode()
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError(f"cannot read val solution {solution_csv!r}: {one_line(exc)}") from None
    images = {_stem(p): p for p in fs.find(val) if _is_image(p)}
    index = class_index()
    out = Listing()
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
        raise SweepError(f"{solution_csv!r} is not a LOC_val_solution.csv (expected the header "
                         "'ImageId,PredictionString')")
    for row in sorted(reader):
        if len(row) < 2:
            out.problem(solution_csv, "ground truth", f"short row {row!r}")
            continue
        image_id, parts = row[0], row[1].split()
        if len(parts) % 5 or not parts:
            out.problem(solution_csv, "ground truth", f"{image_id}: prediction string not in groups of 5")
            continue
        wnid = parts[0]
        if wnid not in index:
            out.problem(solution_csv, "ground truth", f"{image_id}: unknown class {wnid}")
            continue
        if image_id not in images:
            out.problem(image_id, "image", "listed in the solution but missing from the val folder")
            continue
        boxes = [[float(v) for v in parts[i + 1:i + 5]] for i in range(0, len(parts), 5) if parts[i] == wnid]
        if with_boxes_only and not boxes:
            continue
        out.records.append({"image_id": image_id, "path": _url(fs, images[image_id]), "wnid": wnid,
                            "label": index[wnid], "boxes": boxes})
        if limit is not None and len(out.records) >= limit:
            break
    return out


def val_from_devkit(val_root: str, ground_truth: str, meta_mat: str, storage_options: dict | None = None,
                    limit: int | None = None) -> Listing:
    """ImageNet val labels from the devkit: one ILSVRC2012_ID per line for val images 1..50000, and
    meta.mat mapping those IDs to wnids (read with scipy). No boxes."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise SweepError("reading the devkit's meta.mat needs scipy (pip install scipy); or use "
                         "LOC_val_solution.csv") from None
    fs, val = _fs(val_root, storage_options)
    mfs, meta = _fs(meta_mat, storage_options)
    gfs, gt = _fs(ground_truth, storage_options)
    try:
        synsets = loadmat(io.BytesIO(mfs.cat_file(meta)), squeeze_me=True)["synsets"]
        id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
        ids = [int(x) for x in gfs.cat_file(gt).decode().split()]
    except Exception as exc:
        raise SweepError(f"cannot read the devkit ground truth: {one_line(exc)}") from None
    images = {_stem(p): p for p in fs.find(val) if _is_image(p)}
    index = class_index()
    out = Listing()
    for n, ilsvrc_id in enumerate(ids, start=1):
        image_id = f"ILSVRC2012_val_{n:08d}"
        wnid = id_to_wnid.get(ilsvrc_id)
        if wnid not in index:
            out.problem(image_id, "ground truth", f"ILSVRC2012_ID {ilsvrc_id} is not one of the 1000 classes")
            continue
        if image_id not in images:
            out.problem(image_id, "image", "missing from the val folder")
            continue
        out.records.append({"image_id": image_id, "path": _url(fs, images[image_id]), "wnid": wnid,
                            "label": index[wnid], "boxes": []})
        if limit is not None and len(out.records) >= limit:
            break
    return out


def image_folder(root: str, storage_options: dict | None = None, limit: int | None = None) -> Listing:
    """Any folder of images (searched recursively), unlabelled (label -1), in sorted path order."""
    fs, path = _fs(root, storage_options)
    if not fs.isdir(path):
        raise SweepError(f"image folder {root!r} does not exist or is not a folder")
    out = Listing()
    for p in sorted(p for p in fs.find(path) if _is_image(p)):
        rel = posixpath.relpath(p, path)
        out.records.append({"image_id": posixpath.splitext(rel)[0], "path": _url(fs, p), "wnid": "",
                            "label": -1, "boxes": []})
        if limit is not None and len(out.records) >= limit:
            break
    if not out.records:
        raise SweepError(f"no images (.jpeg, .jpg, .png) under {root!r}")
    return out
