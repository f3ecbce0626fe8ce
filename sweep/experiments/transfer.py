"""Transferability of a visualization: does the image one model made for a unit also drive that unit's
counterpart in another model?

The counterpart is the unit's best match in the other model (`jobs/matching.py`: the unit of the other
model whose activations across the probe images correlate best with its own). The other model reads
the image (resized to its input, normalized its way); the counterpart's activation there, at its site
and averaged over its patch tokens like its profile, is set against the counterpart's own probe
statistics from the matching's scan: `z` = (activation - mean) / std, and `beats_probe` when it is
above the counterpart's highest activation on any probe image. An image that only exploits its own
model's quirks (the adversarial-pattern failure of feature visualization) leaves the counterpart near
its mean; a picture of the concept drives both (MACO, Fel et al. 2023, scores its images the same way
with classifier logits). Pure torch; `TransferScanner` is the Ray Data actor and
`sweep.pipelines.transfer` runs it.
"""

from __future__ import annotations

import posixpath
from dataclasses import field
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field

from sweep.core.validation import Count, Positive, Text, config_dataclass
from sweep.experiments.ablations import decode
from sweep.data.imagenet import url_of
from sweep.store.outputs import open_root, under_root

METHOD = "counterpart-z"


@config_dataclass
class TransferConfig:
    """Whose visualizations (`model`'s, in the root `out`) are shown to which other models."""

    model: Text
    others: Annotated[tuple[Text, ...], Field(min_length=1)]
    out: Text
    batch_size: Count = 16
    actors: Count | None = None
    actor_cpus: Positive = 0.5
    storage_options: dict[str, Any] = field(default_factory=dict, hash=False)


def read_png(fs, root: str, rel, storage_options: dict | None = None) -> np.ndarray:
    """A visualization from the root as (H, W, 3) floats in [0, 1]; ValueError naming what is wrong (a
    path that would leave the root; a missing, empty or damaged file: `decode`'s one line)."""
    path = under_root(root, rel)
    if path is None:
        raise ValueError(f"image path {rel!r} leaves the results root: refused")
    return decode(url_of(fs, path), storage_options).astype(np.float32) / 255.0


class TransferScanner:
    """Ray Data actor: per row (image_path, layer_b, unit_b), the other model's activation of that unit
    on that image (NaN and an error where the image cannot be read)."""

    def __init__(self, root: str, storage_options: dict | None, model: str, weights: str, site: str,
                 layers: list[int]):
        from sweep.core.devices import assigned_gpus, resolve_device
        from sweep.method.render import ModelInput
        from sweep.models.anatomy import anatomy_of
        from sweep.models.build import build

        self.fs, self.root = open_root(root, storage_options)
        self.storage_options = storage_options
        anatomy = anatomy_of(model)
        self.device = resolve_device(None, gpu_ids=assigned_gpus())  # a GPU given but unusable: one line
        self.net = build(anatomy.entry, weights, self.device)
        self.requests = [(anatomy.block(layer), site) for layer in layers]
        self.position = {layer: i for i, layer in enumerate(layers)}
        self.prepare = ModelInput(anatomy)

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        from sweep.models.taps import read_sites

        n = len(batch["image_path"])
        acts, errors, ready = np.full(n, np.nan, np.float32), [""] * n, []
        for i, rel in enumerate(batch["image_path"]):
            try:
                image = torch.from_numpy(read_png(self.fs, self.root, str(rel), self.storage_options)).permute(2, 0, 1)[None]
                ready.append((i, self.prepare(image.to(self.device))))  # each to the model's input size
            except ValueError as exc:
                errors[i] = str(exc)
        if ready:
            feats = read_sites(self.net, self.requests, torch.cat([x for _, x in ready]))
            for row, (i, _) in enumerate(ready):
                layer, unit = int(batch["layer_b"][i]), int(batch["unit_b"][i])
                acts[i] = float(feats[self.position[layer]][row, unit])
        return {**{k: batch[k] for k in batch}, "act_b": acts, "error": np.array(errors, dtype=object)}


def transfer_scores(act: np.ndarray, mean: np.ndarray, std: np.ndarray, top: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(z, beats_probe) of activations against their units' probe mean, spread and maximum; z is NaN
    for a unit constant over the probe images."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(std > 0, (act - mean) / np.where(std > 0, std, 1), np.nan)
    return z, act > top


def profile_folder(fs, root: str, model: str, probe_hash: str, weights: str, site: str) -> str | None:
    """The matching scan's profile folder of `model` made on this probe set with these weights and site
    (the newest such, when there are several), or None."""
    from sweep.experiments.matching import read_done
    from sweep.store.layout import PROFILES

    base = posixpath.join(root, PROFILES.folder(model=model))
    if not fs.exists(base):
        return None
    found = []
    for folder in fs.ls(base, detail=False):
        done = read_done(fs, folder)
        if done and (done.get("probe_hash"), done.get("weights"), done.get("site")) == (probe_hash, weights, site):
            stamp = fs.info(posixpath.join(folder, "done.json")).get("mtime") or 0
            found.append((float(stamp) if not hasattr(stamp, "timestamp") else stamp.timestamp(), folder))
    return max(found)[1] if found else None
