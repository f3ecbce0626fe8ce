"""Readers for real ImageNet layouts, returning plain records (dicts) that any pipeline can use.

- ILSVRC2012 train: `<train>/<wnid>/<wnid>_<n>.JPEG`, boxes `<boxes>/<wnid>/<wnid>_<n>.xml` (PASCAL VOC).
- ILSVRC2012 val: `<val>/ILSVRC2012_val_<n>.JPEG` (flat) or `<val>/<wnid>/...` (class folders), with
  labels and boxes from the localization release's LOC_val_solution.csv, or labels only from the
  devkit's ILSVRC2012_validation_ground_truth.txt plus its meta.mat (ILSVRC2012_ID -> wnid).
Class indices come from the synset list timm ships (sorted wnids, the order of ImageFolder).

A record: {"image_id", "path", "wnid", "label", "boxes": [[xmin, ymin, xmax, ymax], ...], "box_error"}.
Problems (unreadable XML, a label outside the 1000 classes) are collected, never raised midway.

Bad boxes: an own-class box with a missing, non-numeric, NaN, infinite or negative coordinate, or
with xmin >= xmax or ymin >= ymax, does not drop the image or abort the listing: the record keeps
no boxes and says what is wrong in `box_error` (naming the file, the box and the value), and the
box experiments turn all of that image's rows into `status = "corrupt"` rows with that error
(`sweep.experiments.ablations.prepare_batch`, which also rejects boxes outside the decoded image). The image
is thus counted in the summary's `corrupt_images` and excluded from every condition alike, rather
than masked with a box that silently means something else. Experiments that ignore boxes
(frequency, tokens, top images) ignore `box_error` too.
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

from sweep.core.errors import SweepError, one_line, storage_error, storage_reason
from sweep.data.boxes import BOX_FIELDS, box_problem

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


class BadBox(ValueError):
    """An own-class box with a bad coordinate: the image stays listed, its rows become corrupt."""


def parse_box(values, where: str) -> list[float]:
    """[xmin, ymin, xmax, ymax] as floats; BadBox naming `where` and the bad value otherwise."""
    problem = box_problem(values)
    if problem:
        raise BadBox(f"{where}: {problem}")
    return [float(v) for v in values]


def parse_voc(data: bytes, wnid: str | None = None) -> tuple[list[list[float]], tuple[int, int] | None]:
    """Boxes [xmin, ymin, xmax, ymax] of a PASCAL VOC annotation, only those named `wnid` if given;
    and the annotated (width, height) when present. Raises ValueError on malformed XML, BadBox on a
    box (of those asked for) with a bad coordinate."""
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
        boxes.append(parse_box([bb.findtext(k) for k in BOX_FIELDS], f"box {len(boxes) + 1} ({name})"))
    return boxes, _voc_size(root)


def _voc_size(root: ET.Element) -> tuple[int, int] | None:
    """The annotated (width, height), or None when absent or not positive finite numbers."""
    try:
        w, h = float(root.findtext("size/width") or "nan"), float(root.findtext("size/height") or "nan")
    except ValueError:
        return None
    return (int(w), int(h)) if min(w, h) > 0 and max(w, h) < float("inf") else None


def _record(image_id: str, path: str, wnid: str, label: int, boxes: list, box_error: str = "") -> dict:
    return {"image_id": image_id, "path": path, "wnid": wnid, "label": label,
            "boxes": [] if box_error else boxes, "box_error": box_error}


def _fs(root: str, storage_options: dict | None):
    try:
        return fsspec.core.url_to_fs(root, **(storage_options or {}))
    except Exception as exc:
        raise SweepError(f"cannot open {root!r}: {one_line(exc)}") from None


def _read(fs, path: str, address: str) -> bytes:
    """A whole file's bytes; a SweepError saying in words why not (no such object, access denied...)."""
    try:
        return fs.cat_file(path)
    except OSError as exc:
        raise SweepError(storage_error(exc, address)) from None


def _stem(path: str) -> str:
    return posixpath.splitext(posixpath.basename(path))[0]


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_SUFFIXES)


def url_of(fs, path: str) -> str:
    """A path of `fs` as a URL any process can open (the bare path on local disk)."""
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
                out.problem(url_of(fs, xml), "image", "annotation without its image in the train folder")
                continue
            own, box_error = [], ""
            try:
                own, _ = parse_voc(fs.cat_file(xml), wnid)
            except BadBox as exc:
                box_error = f"{url_of(fs, xml)}: {exc}"
            except ValueError as exc:
                out.problem(url_of(fs, xml), "annotation", one_line(exc))
                continue
            except OSError as exc:
                out.problem(url_of(fs, xml), "annotation", storage_reason(exc, url_of(fs, xml)))
                continue
            if own or box_error:
                out.records.append(_record(stem, url_of(fs, images[stem]), wnid, index[wnid], own, box_error))
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
    except UnicodeDecodeError:
        raise SweepError(f"cannot read val solution {solution_csv!r}: it is not text (a CSV was expected)") from None
    except OSError as exc:
        raise SweepError(f"cannot read val solution {solution_csv!r}: {storage_reason(exc, solution_csv)}") from None
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
        boxes, box_error = _solution_boxes(parts, wnid)
        if with_boxes_only and not boxes and not box_error:
            continue
        out.records.append(_record(image_id, url_of(fs, images[image_id]), wnid, index[wnid], boxes,
                                   box_error and f"{solution_csv}, {image_id}: {box_error}"))
        if limit is not None and len(out.records) >= limit:
            break
    return out


def _solution_boxes(parts: list[str], wnid: str) -> tuple[list[list[float]], str]:
    """Own-class boxes of a prediction string (`wnid xmin ymin xmax ymax` groups), and the first
    bad box's problem ("" when none)."""
    groups = [parts[i + 1:i + 5] for i in range(0, len(parts), 5) if parts[i] == wnid]
    try:
        return [parse_box(g, f"box {n}") for n, g in enumerate(groups, start=1)], ""
    except BadBox as exc:
        return [], str(exc)


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
    meta_bytes, gt_bytes = _read(mfs, meta, meta_mat), _read(gfs, gt, ground_truth)
    try:
        synsets = loadmat(io.BytesIO(meta_bytes), squeeze_me=True)["synsets"]
        id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
        ids = [int(x) for x in gt_bytes.decode().split()]
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
        out.records.append(_record(image_id, url_of(fs, images[image_id]), wnid, index[wnid], []))
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
        out.records.append(_record(posixpath.splitext(rel)[0], url_of(fs, p), "", -1, []))
        if limit is not None and len(out.records) >= limit:
            break
    if not out.records:
        raise SweepError(f"no images (.jpeg, .jpg, .png) under {root!r}")
    return out
