"""ImageNet ablations: per-image top-1/top-5/CE of classifiers under image conditions.

The stages are plain functions and classes (no Ray here): `prepare_batch` decodes images and applies
the conditions on the CPU, `Classifier` runs a model on what it gets. `sweep.pipelines.ablations`
wires them into Ray Data. Corrupt images become rows with status "corrupt" and their error: they
are counted and reported, never dropped and never fatal. So do images of the box experiment whose
own-class boxes are bad (NaN, infinite, negative, non-numeric, reversed, or outside the image; see
`sweep.data.imagenet`): every condition of such an image is a corrupt row naming the bad value,
so all conditions are scored on the same images.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field
from typing import Callable

import fsspec
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from sweep.core.errors import SweepError, choices, one_line, storage_error
from sweep.data.boxes import box_problem
from sweep.data.transforms import resize_center_crop
from sweep.experiments.conditions import (
    MASK_CONDITIONS,
    apply_mask_condition,
    frequency_condition,
    frequency_conditions,
)
from sweep.models.sources import Preprocess
from sweep.store.layout import ABLATION_SCHEMA

EXPERIMENTS = {
    "foreground_background": MASK_CONDITIONS,
    "frequency": frequency_conditions(),
    "tokens": ("intact",),  # model variants (sweep.experiments.surgery); the default grid depends on the model's depth
}

#: The paper's tables: 4 original ViTs and 4 CNNs (registry aliases).
PAPER_MODELS = ("B_32_imagenet1k", "L_16_imagenet1k", "L_32_imagenet1k", "B_16_imagenet1k",
                "ResNet-50", "ResNet-152", "MobileNetV2", "DenseNet121")

ROW_SCHEMA = ABLATION_SCHEMA  # the row of sweep.store.layout.ABLATIONS


def conditions_of(experiment: str, conditions=None) -> tuple[str, ...]:
    if experiment not in EXPERIMENTS:
        raise SweepError(f"unknown experiment {experiment!r}; allowed: {', '.join(EXPERIMENTS)}")
    allowed = EXPERIMENTS[experiment]
    if experiment == "tokens":
        from sweep.experiments.surgery import check_variant

        return tuple(check_variant(c) for c in conditions) if conditions else ()
    if experiment == "frequency" and conditions:
        for c in conditions:  # any grid of named filters is fine, checked by parsing
            try:
                frequency_condition(np.zeros((4, 4, 3), np.float32), c)
            except (ValueError, IndexError):
                raise SweepError(f"bad frequency condition {c!r}; e.g. {choices(allowed[:4])}") from None
        return tuple(conditions)
    conditions = tuple(conditions or allowed)
    bad = [c for c in conditions if c not in allowed]
    if bad:
        raise SweepError(f"unknown condition {bad[0]!r} for {experiment}; allowed: {choices(allowed)}")
    return conditions


def decode(path: str, storage_options: dict | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file (any fsspec URL). Raises ValueError with one line that
    names the file and says what is wrong (missing, empty, not an image, damaged), because these
    messages end up in result rows and logs where a bare PIL or botocore message means little."""
    try:
        with fsspec.open(path, "rb", **(storage_options or {})) as fh:
            data = fh.read()
    except Exception as exc:
        raise ValueError(storage_error(exc, path)) from None
    if not data:
        raise ValueError(f"image {path} is an empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except UnidentifiedImageError:
        raise ValueError(f"{path} is not an image (not a format PIL can read, e.g. JPEG or PNG)") from None
    except Exception as exc:  # truncated or damaged data, decompression bombs...
        raise ValueError(f"image {path} is damaged: {one_line(exc, 160)}") from None


def prepare_batch(batch: dict, experiment: str, conditions: tuple[str, ...], size: int,
                  storage_options: dict | None = None, resize: int | None = None,
                  interpolation: str = "bilinear") -> dict:
    """Records -> one row per (image, condition) with the conditioned, resized, cropped image.

    Mask conditions act on the full-resolution image before resize and crop (as the paper);
    frequency conditions on the model-resolution image. The resize is the paper's (short side to
    `size`, bilinear) unless `resize`/`interpolation` give a model's own (`resize_center_crop`).
    """
    out: dict[str, list] = {k: [] for k in ("image_id", "label", "condition", "status", "error", "image")}
    blank = np.zeros((size, size, 3), np.float32)
    box_errors = batch.get("box_error")
    box_errors = [""] * len(batch["image_id"]) if box_errors is None else box_errors
    for image_id, path, label, boxes, box_error in zip(batch["image_id"], batch["path"], batch["label"],
                                                        batch["boxes"], box_errors):
        boxes = [list(b) for b in boxes] if boxes is not None else []
        full, error = _decoded(str(path), storage_options)
        if full is not None and experiment == "foreground_background":
            error = str(box_error or "") or _boxes_problem(path, boxes, full.shape)
            full, boxes = (None, []) if error else (full, [list(map(float, b)) for b in boxes])
        for condition in conditions:
            out["image_id"].append(str(image_id))
            out["label"].append(int(label))
            out["condition"].append(condition)
            if full is None:
                out["status"].append("corrupt")
                out["error"].append(error)
                out["image"].append(blank)
                continue
            if experiment == "foreground_background":
                img = resize_center_crop(apply_mask_condition(full, boxes, condition), size, resize, interpolation)
            else:
                img = frequency_condition(resize_center_crop(full, size, resize, interpolation), condition)
            out["status"].append("ok")
            out["error"].append("")  # "" not None: Ray Data blocks must agree on a string column
            out["image"].append(img)
    out["image"] = np.stack(out["image"]) if out["image"] else np.zeros((0, size, size, 3), np.float32)
    return out


def _decoded(path: str, storage_options: dict | None) -> tuple[np.ndarray | None, str]:
    """(image, "") or (None, why not): a corrupt or missing image is recorded, never fatal."""
    try:
        return decode(path, storage_options), ""
    except Exception as exc:
        return None, one_line(exc, 300)


def _boxes_problem(path: str, boxes: list, shape: tuple) -> str:
    """The first box that does not fit the decoded image, in words naming the file ("" if none)."""
    for n, box in enumerate(boxes, start=1):
        problem = box_problem(box, width=shape[1], height=shape[0])
        if problem:
            return f"{path}: box {n}: {problem}"
    return ""


@dataclass(frozen=True)
class ModelSpec:
    """How an actor gets its classifier: a model by name, or any factory returning (module, Preprocess).
    weights: what the summary records as the weights: the job's (pinned) weights for a named model;
    for a factory, "factory" unless the caller says what it loads."""

    name: str
    factory: Callable[[], tuple[torch.nn.Module, Preprocess]] = field(compare=False)
    weights: str = "factory"


def _registry_classifier(key: str, weights: str) -> tuple[torch.nn.Module, Preprocess]:
    from sweep.core.devices import assigned_gpus, resolve_device
    from sweep.models.anatomy import anatomy_of
    from sweep.models.build import build

    anatomy = anatomy_of(key)
    return build(anatomy.entry, weights, resolve_device(None, gpu_ids=assigned_gpus())), anatomy.preprocess


def registry_model(name: str, weights: str = "pretrained") -> ModelSpec:
    """A zoo classifier (ImageNet-1k heads only: CLIP towers and 21k models have none)."""
    from sweep.models.anatomy import anatomy_of

    entry = anatomy_of(name).entry
    if entry.family in ("clip", "clip_resnet"):
        raise SweepError(f"{entry.key} is a CLIP image tower without an ImageNet classifier head; "
                         "the ablations need ImageNet-1k classifiers")
    if entry.tag is not None and "in21k" in entry.tag and "ft_in1k" not in entry.tag:
        raise SweepError(f"{entry.key} has no ImageNet-1k head (ImageNet-21k weights); use a 1k model")
    return ModelSpec(entry.key, functools.partial(_registry_classifier, entry.key, weights), weights)


class Classifier:
    """Ray Data actor stage: normalize, classify, score. Built once per actor."""

    def __init__(self, spec: ModelSpec):
        self.net, pre = spec.factory()
        self.net.eval()
        self.device = next(iter(self.net.parameters()), torch.empty(0)).device
        self.mean = torch.tensor(pre.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(pre.std, device=self.device).view(1, 3, 1, 1)

    def __call__(self, batch: dict) -> dict:
        return self._score(batch, self.net)

    @torch.no_grad()
    def _score(self, batch: dict, net) -> dict:
        n = len(batch["label"])
        ok = np.asarray(batch["status"]) == "ok"
        top5 = np.full((n, 5), -1, np.int32)
        loss = np.full(n, np.nan, np.float32)
        if ok.any():
            x = torch.as_tensor(np.asarray(batch["image"])[ok], device=self.device).permute(0, 3, 1, 2)
            x = (x.float() - self.mean) / self.std
            logits = net(x).float()
            labels = torch.as_tensor(np.asarray(batch["label"])[ok], device=self.device).long()
            top5[ok] = logits.topk(5, dim=1).indices.cpu().numpy()
            loss[ok] = F.cross_entropy(logits, labels, reduction="none").cpu().numpy()
        labels = np.asarray(batch["label"])
        return {
            "image_id": batch["image_id"], "label": labels, "condition": batch["condition"],
            "status": batch["status"], "error": batch["error"], "top5": top5,
            "correct1": np.where(ok, top5[:, 0] == labels, False),
            "correct5": np.where(ok, (top5 == labels[:, None]).any(1), False), "loss": loss,
        }


class TokenClassifier(Classifier):
    """Ray Data actor stage for the token experiments: every image through every model variant.

    The variants share one network; each input row comes out once per variant, with the variant
    as its `condition`.
    """

    def __init__(self, spec: ModelSpec, variants: tuple[str, ...], seed: int = 0):
        from sweep.experiments.surgery import TokenVariant

        super().__init__(spec)
        self.variants = [(v, TokenVariant(self.net, v, seed)) for v in variants]

    def __call__(self, batch: dict) -> dict:
        outs = []
        for name, variant in self.variants:
            out = self._score(batch, variant)
            out["condition"] = np.full(len(out["label"]), name, dtype=object)
            outs.append(out)
        return {k: np.concatenate([np.asarray(o[k]) for o in outs]) for k in outs[0]}


def summarize(rows) -> dict:
    """Top-1/top-5 (%) and mean CE per condition over ok rows, plus counts; `rows` a pandas frame."""
    ok = rows[rows["status"] == "ok"]
    per = {}
    for condition, g in ok.groupby("condition", sort=False):
        per[condition] = {"images": int(len(g)), "top1": 100.0 * float(g["correct1"].mean()),
                          "top5": 100.0 * float(g["correct5"].mean()), "loss": float(g["loss"].mean())}
    return {"conditions": per, "rows": int(len(rows)), "ok_rows": int(len(ok)),
            "corrupt_images": int(rows.loc[rows["status"] == "corrupt", "image_id"].nunique())}
