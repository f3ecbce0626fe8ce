"""A small ImageNet-layout dataset made on the fly, and a classifier that reads one known pixel.

Every image has a background colour and own-class boxes whose colours encode classes in the red
channel (class k <-> red = k/9). The classifier predicts from the centre pixel only, so what each
condition does to its prediction can be worked out by hand.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from sweep.data.imagenet import imagenet_synsets
from sweep.models.build import Preprocess

W, H = 64, 48
SIZE = 32
WNIDS = imagenet_synsets()[:10]


def red(k: int) -> int:
    return round(255 * k / 9)


class CenterPixelNet(torch.nn.Module):
    """logits[k] = -|9 * red(centre) - k| for the first 10 classes, very low for the others."""

    def forward(self, x):
        s = x.shape[-1] // 2
        v = x[:, 0, s - 1:s + 1, s - 1:s + 1].mean(dim=(1, 2)) * 9
        k = torch.arange(1000, device=x.device, dtype=x.dtype)
        logits = -(v[:, None] - k[None, :]).abs()
        logits[:, 10:] = -1e4
        return logits


def make_center_net():
    return CenterPixelNet(), Preprocess(SIZE, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def predicted(red_class: int) -> tuple[int, list[int]]:
    """What CenterPixelNet answers for a centre of colour class `red_class` (independent of it)."""
    order = sorted(range(10), key=lambda k: (abs(red_class - k), k))
    return order[0], order[:5]


@dataclass
class Sample:
    wnid: str
    stem: str
    label: int
    bg: int                     # colour class of the background
    boxes: list                 # own-class boxes [xmin, ymin, xmax, ymax] with their colour class
    other: list                 # boxes of another class, drawn but not own-class
    centre_owner: str           # "bg", "own" or "other": what covers the centre

    def centre_class(self, condition: str) -> int:
        if condition == "original":
            if self.centre_owner == "own":
                return self.boxes[-1][1]
            return self.other[-1][1] if self.centre_owner == "other" else self.bg
        if condition == "background":
            return 0 if self.centre_owner == "own" else self.centre_class("original")
        return self.centre_class("original") if self.centre_owner == "own" else 0


def _jpeg(sample: Sample) -> bytes:
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = red(sample.bg)
    img[..., 1] = 90
    img[..., 2] = 40
    for (x0, y0, x1, y1), k in sample.other + sample.boxes:
        img[int(y0):int(y1), int(x0):int(x1), 0] = red(k)
        img[int(y0):int(y1), int(x0):int(x1), 1] = 200
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=98)
    return buf.getvalue()


def _xml(sample: Sample) -> str:
    objs = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>"
        for name, b in [(sample.wnid, b) for b, _ in sample.boxes] + [(WNIDS[(sample.label + 1) % 10], b)
                                                                       for b, _ in sample.other])
    return (f"<annotation><filename>{sample.stem}</filename><size><width>{W}</width><height>{H}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")


CENTRE_BOX = [20, 12, 44, 36]   # covers the centre (32, 24) with margin
CORNER_BOX = [0, 0, 14, 10]     # far from the centre


def samples() -> list[Sample]:
    """Images covering: centre in an own box, in the second of two own boxes, in an other-class box,
    on the background; labels that agree or not with the colours."""
    out = []
    rng = np.random.default_rng(0)
    for i in range(24):
        label = i % 10
        wnid = WNIDS[label]
        kind = i % 4
        bg, k1, k2 = (int(v) for v in rng.integers(0, 10, 3))
        if kind == 0:
            s = Sample(wnid, f"{wnid}_{i}", label, bg, [(CENTRE_BOX, label)], [], "own")
        elif kind == 1:
            s = Sample(wnid, f"{wnid}_{i}", label, bg, [(CORNER_BOX, k1), (CENTRE_BOX, k2)], [], "own")
        elif kind == 2:
            s = Sample(wnid, f"{wnid}_{i}", label, bg, [(CORNER_BOX, k1)], [(CENTRE_BOX, k2)], "other")
        else:
            s = Sample(wnid, f"{wnid}_{i}", label, label if i % 8 == 3 else bg, [(CORNER_BOX, k1)], [], "bg")
        out.append(s)
    return out


def make_train(root) -> dict:
    """ImageNet train + box folders under `root`, with a corrupt JPEG, a bad XML and a missing image."""
    train, boxes = root / "train", root / "boxes"
    good = samples()
    for s in good:
        (train / s.wnid).mkdir(parents=True, exist_ok=True)
        (boxes / s.wnid).mkdir(parents=True, exist_ok=True)
        (train / s.wnid / f"{s.stem}.JPEG").write_bytes(_jpeg(s))
        (boxes / s.wnid / f"{s.stem}.xml").write_text(_xml(s))
    w = WNIDS[0]
    (train / w / f"{w}_corrupt.JPEG").write_bytes(b"\xff\xd8 this is not a JPEG")
    (boxes / w / f"{w}_corrupt.xml").write_text(_xml(Sample(w, f"{w}_corrupt", 0, 0, [(CENTRE_BOX, 0)], [], "own")))
    (train / w / f"{w}_badxml.JPEG").write_bytes(_jpeg(good[0]))
    (boxes / w / f"{w}_badxml.xml").write_text("<annotation><object><name>")
    (boxes / w / f"{w}_noimage.xml").write_text(_xml(good[0]))
    (train / w / f"{w}_nobox.JPEG").write_bytes(_jpeg(good[0]))  # no annotation: not in the subset
    return {"train": str(train), "boxes": str(boxes), "samples": good}


def make_val(root) -> dict:
    """A flat val folder with LOC_val_solution.csv."""
    val = root / "val"
    val.mkdir(parents=True)
    lines = ["ImageId,PredictionString"]
    good = samples()
    for n, s in enumerate(good, start=1):
        image_id = f"ILSVRC2012_val_{n:08d}"
        (val / f"{image_id}.JPEG").write_bytes(_jpeg(s))
        lines.append(f"{image_id}," + " ".join(f"{s.wnid} {b[0]} {b[1]} {b[2]} {b[3]}" for b, _ in s.boxes))
    (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    return {"val": str(val), "solution": str(root / "LOC_val_solution.csv"), "samples": good}
