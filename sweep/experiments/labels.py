"""Concept labels for units: which words a unit's activations follow, with CLIP as the judge.

Method `profile-correlation` (after CLIP-Dissect, Oikarinen & Weng, ICLR 2023, in its simplest
form): over a probe set of N natural images, a unit's activation profile a (N,) and each concept's
similarity profile s_c (N,), the cosine between the judge's embedding of the image and its
embedding of the concept (text prompts averaged, as CLIP's zero-shot classifiers do). A concept's
score is the Pearson correlation of the two profiles across the images: 1 when the unit rises and
falls exactly with the judge's sense of the concept, about 0 when unrelated. Why this one: it uses
the whole profile, not only the top images (a unit that fires on every picture of dogs and on
nothing else gets "dog", not whatever its top 5 happen to share); it ignores the unit's scale and
offset, so units of different layers and models compare; and it streams, one batch at a time, in
sums the size of (units x concepts). Its limits: the labels are hypotheses about the probe set,
bounded by the vocabulary (a unit about something no word names gets the nearest word) and by the
judge's own biases (CLIP reads text in images, favours frequent web captions).

The statistics are pure torch; `LabelScanner` is the Ray Data actor and `sweep.pipelines.labels`
runs it over a dataset. No Ray import here, no files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import field
from typing import Any, Literal, Sequence

import numpy as np
import torch

from sweep.core.validation import Count, Layer, Positive, Text, config_dataclass
from sweep.models.build import Weights
from sweep.models.names import ModelArg, TapPath, with_args

METHOD = "profile-correlation"


class ProfileStats:
    """Running sums over images of unit activations a (B, U) and the judge's image embeddings e (B, d),
    enough to give every (unit, concept) Pearson correlation at the end; float64 so sums of many batches
    stay exact.

    Why embeddings, not similarities: concept c's similarity is s_c = e . t_c (t_c its unit-norm text
    embedding), linear in e, so every sum the correlation needs follows from sums over e:
    sum(a s_c) = (sum a e^T) t_c, sum(s_c) = (sum e) . t_c, sum(s_c^2) = t_c^T (sum e e^T) t_c. The
    driver holds units x d (ViT-S's 18,432 units under ViT-B-32: 75 MB) instead of units x concepts
    (1.1 GB for the `common` vocabulary's 7,609), and the workers send d numbers per image, not C."""

    def __init__(self, units: int, dim: int):
        self.n = 0
        self.sum_a = torch.zeros(units, dtype=torch.float64)
        self.sum_a2 = torch.zeros(units, dtype=torch.float64)
        self.sum_e = torch.zeros(dim, dtype=torch.float64)
        self.sum_ee = torch.zeros(dim, dim, dtype=torch.float64)
        self.sum_ae = torch.zeros(units, dim, dtype=torch.float64)

    def update(self, acts: torch.Tensor, embeds: torch.Tensor) -> None:
        a, e = acts.double(), embeds.double()
        if a.shape[0] != e.shape[0]:
            raise ValueError(f"{a.shape[0]} images of activations but {e.shape[0]} of embeddings")
        self.n += a.shape[0]
        self.sum_a += a.sum(0)
        self.sum_a2 += (a * a).sum(0)
        self.sum_e += e.sum(0)
        self.sum_ee.addmm_(e.T, e)
        self.sum_ae.addmm_(a.T, e)

    def correlation(self, text: torch.Tensor, units: slice = slice(None)) -> torch.Tensor:
        """(U, C) Pearson correlations of the units in `units` with the similarity to each concept of
        `text` (C, d); 0 where a unit or a concept is constant over the images."""
        n = max(self.n, 1)
        t = text.double()
        mean_a, mean_s = self.sum_a[units] / n, t @ self.sum_e / n
        scale_a = inverse_std(variance(self.sum_a2[units] / n, mean_a))
        scale_s = inverse_std(variance(((t @ self.sum_ee) * t).sum(1) / n, mean_s))
        # one units x concepts array, changed in place: cov = E[a s] - E[a] E[s], then / (std_a std_s)
        cov = torch.mm(self.sum_ae[units], t.T).div_(n).addr_(mean_a, mean_s, alpha=-1)
        return cov.mul_(scale_a[:, None]).mul_(scale_s[None, :]).float()

    def top(self, text: torch.Tensor, k: int, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """`top_concepts` of the correlations, computed a chunk of units at a time: only one chunk's
        chunk x concepts arrays (the correlations, the sort's) exist at once. 1,024 units: 62 MB arrays for
        7,609 concepts, above glibc's largest mmap threshold (32 MB), so each is returned when freed;
        smaller chunks stayed in the heap and peaked higher (0.7 GB at 512, 0.3 GB at 1,024)."""
        parts = [top_concepts(self.correlation(text, slice(i, i + chunk)), k) for i in range(0, len(self.sum_a), chunk)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def variance(mean_square: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """E[x^2] - E[x]^2, 0 where it is rounding left over from a constant (below 1e-9 of E[x^2]:
    float64 sums of a constant over many images cancel to ~1e-16 of it, a real profile's spread is
    far above 1e-9)."""
    var = mean_square - mean ** 2
    return torch.where(var > 1e-9 * mean_square.abs(), var, torch.zeros_like(var))


def inverse_std(var: torch.Tensor) -> torch.Tensor:
    """1 / sqrt(var), 0 where the variance is 0: a constant profile correlates with nothing."""
    return torch.where(var > 0, var.clamp_min(1e-300).rsqrt(), torch.zeros_like(var))


def top_concepts(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per unit, the k best concepts: (values (U, k), concept indices (U, k)), best first; ties go to
    the earlier concept, so the order does not depend on the device."""
    k = min(k, scores.shape[1])
    order = torch.sort(scores, dim=1, descending=True, stable=True)
    # copies: slices would keep the whole sorted (units x concepts) arrays alive while the caller holds them
    return order.values[:, :k].clone(), order.indices[:, :k].clone()


def vocabulary_hash(concepts: Sequence[str], templates: Sequence[str], judge: str, judge_weights: str) -> str:
    """Identifies what the scores mean: the concepts in order, the prompts and the judge. Any change
    gives a new hash, so labels are made again rather than mixed."""
    blob = json.dumps({"concepts": list(concepts), "templates": list(templates), "judge": judge,
                       "judge_weights": judge_weights, "method": METHOD}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- the job's parts (the Ray pipeline is sweep.pipelines.labels) -----------------------------------


@config_dataclass
class LabelsConfig:
    """What to label and how: the model's units (layers, site), the probe images' split name, the
    judge (an open_clip ARCH/TAG and its weights), the vocabulary (shipped name or file), the prompt
    templates and how many concepts to keep per unit."""

    model: Text
    out: Text
    model_args: tuple[ModelArg, ...] = ()
    taps: tuple[TapPath, ...] = ()
    split: Text = "val"
    layers: tuple[Layer, ...] | None = None
    site: Text | None = None
    weights: Weights = "pretrained"
    judge: Text = "ViT-B-32/openai"
    judge_weights: Literal["pretrained", "random"] = "pretrained"
    vocabulary: Text = "imagenet"
    templates: Text = "simple"
    k: Count = 5
    batch_size: Count = 32
    actors: Count | None = None
    actor_cpus: Positive = 0.5
    storage_options: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "model", with_args(self.model, self.model_args, self.taps))
        object.__setattr__(self, "model_args", ())
        object.__setattr__(self, "taps", ())


def concept_embeddings(judge: str, judge_weights: str, concepts: Sequence[str],
                       prompt_templates: Sequence[str]) -> np.ndarray:
    """(C, d) float32 unit-norm text embeddings of the concepts, on this process's assigned device.
    Run once per job (a Ray task in sweep.pipelines.labels), not once per actor: the `common`
    vocabulary is 7,609 x 7 prompts through CLIP's text tower, 29 min on a 2-core CPU."""
    from sweep.core.devices import assigned_gpus, resolve_device
    from sweep.experiments.judge import ClipJudge

    device = resolve_device(None, gpu_ids=assigned_gpus())
    return ClipJudge(judge, judge_weights, device).text(concepts, prompt_templates).cpu().numpy()


class LabelScanner:
    """Ray Data actor: per image, the reduced features of the requested blocks (concatenated) and
    the judge's image embedding (NaN for an image that could not be read); `ProfileStats` turns the
    embeddings into similarities to every concept on the driver."""

    def __init__(self, model: str, weights: str, layers: list[int], site: str, judge: str, judge_weights: str):
        from sweep.core.devices import assigned_gpus, resolve_device
        from sweep.experiments.judge import ClipJudge
        from sweep.experiments.top_images import ActivationScanner

        self.units = ActivationScanner(model, weights, layers, site)
        self.device = resolve_device(None, gpu_ids=assigned_gpus())
        self.judge = ClipJudge(judge, judge_weights, self.device)

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        out = self.units(batch)
        ok = np.asarray(batch["status"]) == "ok"
        embeds = np.full((len(ok), self.judge.dim), np.nan, np.float32)
        if ok.any():
            embeds[ok] = self.judge.images(np.asarray(batch["image"])[ok]).cpu().numpy()
        return {**out, "embeds": embeds}


#: Method of the visualization labels: the judge's cosine between a unit's visualization and each
#: concept's prompts, as CLIP's zero-shot classification scores an image.
VISUALIZATION_METHOD = "visualization-zero-shot"


class VisualizationJudge:
    """Ray Data actor: per visualization image (a root-relative PNG), its k best concepts by the
    judge's cosine similarity with `text` (`concept_embeddings`, made once for the job); an image that
    cannot be read gets no concepts and its error."""

    def __init__(self, root: str, storage_options: dict | None, judge: str, judge_weights: str,
                 text: np.ndarray, k: int):
        from sweep.core.devices import assigned_gpus, resolve_device
        from sweep.experiments.judge import ClipJudge

        self.root, self.storage_options, self.k = root, storage_options, k
        self.judge = ClipJudge(judge, judge_weights, resolve_device(None, gpu_ids=assigned_gpus()))
        self.text = torch.as_tensor(np.asarray(text), device=self.judge.device)

    def __call__(self, batch: dict) -> dict:
        from sweep.core.errors import one_line
        from sweep.experiments.ablations import decode
        from sweep.store.outputs import under_root

        k = min(self.k, self.text.shape[0])
        scores = np.full((len(batch["image_path"]), k), np.nan, np.float32)
        index = np.full((len(batch["image_path"]), k), -1, np.int64)
        errors = [""] * len(batch["image_path"])
        for i, rel in enumerate(batch["image_path"]):
            path = under_root(self.root, str(rel))
            try:
                if path is None:
                    raise ValueError(f"image path {rel!r} leaves the results root")
                image = decode(path, self.storage_options)
            except ValueError as exc:
                errors[i] = one_line(exc, 200)
                continue
            sims = (self.judge.images(image[None]) @ self.text.T)[0].cpu()
            v, c = top_concepts(sims[None], k)
            scores[i], index[i] = v[0].numpy(), c[0].numpy()
        return {**{key: batch[key] for key in ("layer", "layer_name", "site", "feature")},
                "scores": scores, "concepts": index, "error": np.asarray(errors, dtype=object)}


def class_agreement(labels, class_names: Sequence[str], k: int = 5) -> dict:
    """For units that are classes (a classifier's logits read with `--tap head`: unit i is class i),
    how often a unit's best concept is its own class name (top-1) and how often the name is among its
    k best (top-k). `labels` holds one method and vocabulary's rows (feature, rank, concept)."""
    units = 0
    top1 = topk = 0
    for feature, rows in labels.groupby("feature"):
        if not 0 <= int(feature) < len(class_names):
            continue
        ranked = rows.sort_values("rank")["concept"].tolist()
        units += 1
        top1 += int(bool(ranked) and ranked[0] == class_names[int(feature)])
        topk += int(class_names[int(feature)] in ranked[:k])
    return {"units": units, "top1": top1 / units if units else float("nan"),
            f"top{k}": topk / units if units else float("nan")}
