"""Top natural images per feature: every (layer, feature) at once, in one pass over a dataset.

`sweep.pipelines.top_images` runs it on Ray Data: decoding and resizing run as tasks; an actor pool
(`ActivationScanner`) computes, per image, the patch-mean activation of every unit of the requested
blocks in one forward pass (stopped after the last of them); the driver folds the batches into a
bounded `TopK` state. An unreadable image (empty, not an image, damaged) is skipped with a warning
line naming the file and counted, never fatal. Output: Parquet rows (model, layer, feature, rank,
image_id, activation) at `top_images/split=<split>/model=<m>/part-00000.parquet`, and a 128 px
thumbnail of each distinct top image (`write_thumbs`) that the atlas shows beside the unit.
"""

from __future__ import annotations

import io
import logging
import posixpath
from dataclasses import field
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps

from sweep.core.errors import one_line
from sweep.core.validation import Count, Layer, Positive, Text, config_dataclass
from sweep.experiments.ablations import decode
from sweep.experiments.topk import TopK
from sweep.models.anatomy import anatomy_of
from sweep.models.build import Weights
from sweep.models.names import ModelArg, TapPath, with_args
from sweep.models.taps import read_sites
from sweep.store.layout import TOP_SCHEMA, TOP_THUMBS, thumb_name
from sweep.store.outputs import atomic_write, open_root

log = logging.getLogger(__name__)



@config_dataclass
class TopImagesConfig:
    model: Text
    out: Text
    model_args: tuple[ModelArg, ...] = ()  # key=value constructor arguments (sweep.models.names)
    taps: tuple[TapPath, ...] = ()  # explicit modules to read, in place of the inferred blocks
    split: Text = "val"
    k: Count = 10
    layers: tuple[Layer, ...] | None = None
    site: Text | None = None
    weights: Weights = "pretrained"
    batch_size: Count = 32
    actors: Count | None = None
    actor_cpus: Positive = 0.5
    storage_options: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "model", with_args(self.model, self.model_args, self.taps))
        object.__setattr__(self, "model_args", ())  # now part of the model's name
        object.__setattr__(self, "taps", ())


class ActivationScanner:
    """Ray Data actor: per image, the reduced features of every requested block, concatenated."""

    def __init__(self, model: str, weights: str, layers: list[int], site: str):
        from sweep.core.devices import assigned_gpus, resolve_device
        from sweep.method.render import ModelInput
        from sweep.models.build import build

        self.anatomy = anatomy_of(model)
        self.device = resolve_device(None, gpu_ids=assigned_gpus())  # a GPU given but unusable: one line
        self.net = build(self.anatomy.entry, weights, self.device)
        self.requests = [(self.anatomy.block(layer), site) for layer in layers]
        self.prepare = ModelInput(self.anatomy)

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        ok = np.asarray(batch["status"]) == "ok"
        width = sum(b.width(s) for b, s in self.requests)
        acts = np.full((len(ok), width), np.nan, np.float32)
        if ok.any():
            x = torch.as_tensor(np.asarray(batch["image"])[ok], device=self.device).permute(0, 3, 1, 2)
            feats = read_sites(self.net, self.requests, self.prepare(x.float()))
            acts[ok] = torch.cat(feats, dim=1).float().cpu().numpy()
        return {"image_id": batch["image_id"], "acts": acts, "error": batch["error"]}


def unit_table(config: TopImagesConfig):
    """(blocks, site, per-unit (layer, layer_name, feature)) in the scanner's concatenation order."""
    anatomy = anatomy_of(config.model)
    site = config.site or anatomy.default_site
    blocks = list(anatomy.blocks) if config.layers is None else [anatomy.block(l) for l in config.layers]
    units = [(b.index, b.name, f) for b in blocks for f in range(b.width(site))]
    return anatomy, blocks, site, units


def top_rows(state: TopK, units, site: str, records) -> pd.DataFrame:
    k = state.values.shape[1]
    valid = state.ids >= 0
    u, r = torch.nonzero(valid, as_tuple=True)
    return pd.DataFrame({
        "layer": [units[i][0] for i in u.tolist()], "layer_name": [units[i][1] for i in u.tolist()],
        "site": site, "feature": [units[i][2] for i in u.tolist()], "rank": r.int().numpy(),
        "image_id": [records[i]["image_id"] for i in state.ids[u, r].tolist()],
        "activation": state.values[u, r].float().numpy(),
    }) if k else pd.DataFrame(columns=[f.name for f in TOP_SCHEMA])


#: Side of a top image's thumbnail, in pixels (the atlas shows them beside each unit).
THUMB_SIDE = 128


def write_thumbs(batch: dict, root: str, split: str, storage_options: dict | None = None) -> dict:
    """Ray Data stage: a centre-cropped thumbnail of each image of the batch, written once under the
    root (`TOP_THUMBS`); an image already there is skipped, one that cannot be read is reported."""
    fs, base = open_root(root, storage_options)
    out = {"image_id": [], "status": []}
    for image_id, path in zip(batch["image_id"], batch["path"]):
        target = posixpath.join(base, TOP_THUMBS.part(thumb_name(str(image_id)), split=split))
        status = "present"
        if not fs.exists(target):
            try:
                picture = ImageOps.fit(Image.fromarray(decode(str(path), storage_options)), (THUMB_SIDE, THUMB_SIDE))
                buf = io.BytesIO()
                picture.save(buf, format="PNG")
                atomic_write(fs, target, buf.getvalue())
                status = "written"
            except ValueError as exc:  # unreadable now: the atlas shows the id without a picture
                status = one_line(exc, 200)
        out["image_id"].append(str(image_id))
        out["status"].append(status)
    return out
