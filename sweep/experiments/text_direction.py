"""CLIP text directions in any layer's space, for the `direction` objective (issue 28).

A judge (an open_clip model) embeds texts and images in one space; a layer of the model under study
has its own. A ridge regression from the layer's pooled features to the judge's image embeddings,
fitted on probe images, maps one space to the other, and a text's embedding t pulls back through it
to d = B t / scale: the direction in the layer's raw feature space along which the predicted image
embedding's agreement with t grows fastest. The rows of the `.npy` this writes are such directions,
one per text (feature i of `--objective direction` is text i), so any model and any layer can be
asked for "a dog" with the judge's idea of a dog, not only CLIP's own last layer.

The fit's held-out R² (fitted on even probe images, scored on odd ones, for each ridge of RIDGES;
the best ridge is refitted on all) says how much of the judge's view the layer carries: near 0, the
directions mean little. No Ray: a few hundred probe images go through both models in this process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Mapping, Sequence

import numpy as np
import torch
from pydantic import Field

from sweep.core.errors import SweepError
from sweep.core.validation import Count, Layer, Text, config_dataclass
from sweep.method.render import ModelInput
from sweep.models.anatomy import Anatomy
from sweep.models.build import Weights
from sweep.models.taps import read_features

#: Ridge strengths tried, as multiples of the mean eigenvalue of the standardized features' Gram matrix.
RIDGES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
MIN_IMAGES = 8


@dataclass(frozen=True)
class Readout:
    """The fitted map from a layer's features (standardized) to the judge's image embeddings."""

    coef: np.ndarray     # (width, dim) on standardized features
    mean: np.ndarray     # (width,) the features' means on the probe images
    scale: np.ndarray    # (width,) their standard deviations (1 where a feature never varies)
    ridge: float         # the chosen ridge, as a multiple of the Gram matrix's mean eigenvalue
    r2_heldout: float    # R² of the chosen ridge on the held-out half
    images: int

    def pull_back(self, texts: np.ndarray) -> np.ndarray:
        """(T, dim) text embeddings -> (T, width) directions in the layer's raw feature space."""
        return (texts @ self.coef.T) / self.scale


def _solve(x: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge coefficients (width, dim) in the dual: X^T (X X^T + lambda I)^-1 Y (images << width)."""
    gram = x @ x.T
    lam = ridge * max(float(np.trace(gram)) / len(x), 1e-12)
    return x.T @ np.linalg.solve(gram + lam * np.eye(len(x)), y)


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    return 1.0 - float(((y - pred) ** 2).sum()) / max(float(((y - y.mean(0)) ** 2).sum()), 1e-12)


def fit_readout(features: np.ndarray, embeddings: np.ndarray, ridges: Sequence[float] = RIDGES) -> Readout:
    """Fit the layer -> judge map on (N, width) features and (N, dim) embeddings of the same images."""
    features, embeddings = np.asarray(features, np.float64), np.asarray(embeddings, np.float64)
    if len(features) != len(embeddings) or len(features) < MIN_IMAGES:
        raise SweepError(f"text direction: {len(features)} probe images; at least {MIN_IMAGES} are needed")
    mean, scale = features.mean(0), features.std(0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    x = (features - mean) / scale
    y = embeddings - embeddings.mean(0)
    fit, held = slice(0, None, 2), slice(1, None, 2)
    xc, yc = x[fit].mean(0), y[fit].mean(0)  # the held-out half is centred with the fitted half's means
    scores = [_r2(y[held], (x[held] - xc) @ _solve(x[fit] - xc, y[fit] - yc, ridge) + yc) for ridge in ridges]
    best = int(np.argmax(scores))
    return Readout(_solve(x, y, ridges[best]), mean, scale, float(ridges[best]), float(scores[best]), len(x))


@torch.no_grad()
def probe_views(net: torch.nn.Module, anatomy: Anatomy, layer: int, site: str, judge,
                images: Mapping[str, np.ndarray], device: torch.device, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(N, width) pooled features of the layer and (N, dim) judge embeddings of the same probe
    images, each resized and centre-cropped once with the model's evaluation transform."""
    from sweep.data.transforms import center_crop_batch

    pre = anatomy.preprocess
    block = anatomy.block(layer)
    prepare = ModelInput(anatomy)
    feats, embeds = [], []
    names = list(images)
    for i in range(0, len(names), batch):
        crops = center_crop_batch((images[n] for n in names[i:i + batch]), pre.input_size, pre.resize_size,
                                  pre.interpolation)
        feats.append(read_features(net, block, site, prepare(torch.from_numpy(crops).to(device))).float().cpu().numpy())
        embeds.append(judge.images((crops.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)).cpu().numpy())
    return np.concatenate(feats), np.concatenate(embeds)


def top_units(direction: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
    """The k units with the largest weights in a direction (unit-normalized), for a first look."""
    unit = direction / max(float(np.linalg.norm(direction)), 1e-12)
    order = np.argsort(-unit)[:k]
    return [(int(i), float(unit[i])) for i in order]


@config_dataclass
class TextDirectionConfig:
    """What `jobs/text_direction.py` fits and writes. images None: the shipped photos and their crops
    (150 images); templates none embeds each text as it is, simple/openai average open_clip's prompts."""

    model: Text
    layer: Layer
    texts: Annotated[tuple[Text, ...], Field(min_length=1)]
    out: Text
    site: Text | None = None
    weights: Weights = "pretrained"
    judge: Text = "ViT-B-32/openai"
    judge_weights: Literal["pretrained", "random"] = "pretrained"
    templates: Literal["simple", "openai", "none"] = "simple"
    images: Text | None = None
    limit: Count | None = None
    device: Text | None = None

    def checked(self) -> tuple[Anatomy, int, str]:
        """The model's anatomy, the block's index and the site, or one line why not (before any work)."""
        from sweep.models.anatomy import anatomy_of
        from sweep.models.sources import OpenClip

        if not self.out.lower().endswith(".npy"):
            raise SweepError(f"--out {self.out!r}: the directions are a .npy file (the direction objective reads .npy)")
        if any(not t.strip() for t in self.texts):
            raise SweepError("--text: empty text; every text names what to look for, e.g. 'a dog'")
        anatomy = anatomy_of(self.model)
        block = anatomy.block(self.layer)
        site = self.site or anatomy.default_site
        block.site(site)
        OpenClip().entry(self.judge, ())  # an unknown judge architecture or tag: one line
        return anatomy, block.index, site
