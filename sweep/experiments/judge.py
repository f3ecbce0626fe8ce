"""CLIP as a judge of concepts: embeds images and text prompts in one space (open_clip, both towers).

Text embeddings are open_clip's own zero-shot classifier weights (each concept's prompts embedded,
normalized, averaged, normalized again); image embeddings come from images already decoded and
resized for the model under study, resized again (bicubic, antialiased) to the judge's input and
normalized with the judge's mean and std.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sweep.core.errors import SweepError, one_line

#: Prompt sets: open_clip's seven "simple" ImageNet templates, or OpenAI's eighty.
TEMPLATE_SETS = ("simple", "openai")


def templates(name: str) -> tuple[str, ...]:
    """The prompt templates of a set, as format strings with one `{}` for the concept."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    sets = {"simple": SIMPLE_IMAGENET_TEMPLATES, "openai": OPENAI_IMAGENET_TEMPLATES}
    if name not in sets:
        raise SweepError(f"templates: {name!r} is not a prompt set; allowed: {', '.join(TEMPLATE_SETS)}")
    return tuple(t("{}") for t in sets[name])


class ClipJudge:
    """An open_clip model named ARCH/TAG (e.g. ViT-B-32/openai); weights "pretrained" (from open_clip's
    cache or hub) or "random" (tests and dry runs: seeded, so every process holds the same judge; the
    labels then mean nothing)."""

    def __init__(self, name: str, weights: str, device: torch.device):
        import open_clip

        from sweep.models.sources import OpenClip

        entry = OpenClip().entry(name, ())  # one line for an unknown architecture or tag
        if weights not in ("pretrained", "random"):
            raise SweepError(f"judge weights: {weights!r}; allowed: pretrained, random")
        if weights == "pretrained" and not entry.tag:
            raise SweepError(f"judge {name!r} names no pretrained tag (ARCH/TAG, e.g. ViT-B-32/openai)")
        extra = {"force_quick_gelu": True} if entry.tag == "openai" else {}
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # random weights: the same judge in every process (text task, actors)
                model = open_clip.create_model(entry.arch, pretrained=entry.tag if weights == "pretrained" else None,
                                               device=device, **extra)
        except Exception as exc:  # noqa: BLE001 - a hub that cannot be reached, a damaged cache
            raise SweepError(f"judge {name}: cannot load its pretrained weights ({one_line(exc, 200)}); put them "
                             "in open_clip's cache (HF_HOME) or use --judge-weights random for a test run") from None
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(entry.arch)
        self.device = device
        cfg = self.model.visual.preprocess_cfg
        size = cfg["size"]
        self.size = int(size if isinstance(size, int) else size[0])
        self.mean = torch.tensor(cfg["mean"], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"], device=device).view(1, 3, 1, 1)
        #: the embeddings' width, from one blank image (any open_clip tower, whatever it calls its width)
        self.dim = int(self.images(np.zeros((1, self.size, self.size, 3), np.uint8)).shape[1])

    @torch.no_grad()
    def text(self, concepts: Sequence[str], prompt_templates: Sequence[str]) -> torch.Tensor:
        """(C, d) unit-norm embeddings, one per concept, averaged over its prompts."""
        from open_clip.zero_shot_classifier import build_zero_shot_classifier

        weights = build_zero_shot_classifier(self.model, self.tokenizer, list(concepts),
                                             list(prompt_templates), num_classes_per_batch=64,
                                             device=self.device, use_tqdm=False)
        return weights.T.float()

    @torch.no_grad()
    def images(self, batch: np.ndarray) -> torch.Tensor:
        """(B, d) unit-norm embeddings of uint8 (B, H, W, 3) images."""
        x = torch.as_tensor(batch, device=self.device).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False,
                              antialias=True).clamp(0, 1)
        return F.normalize(self.model.encode_image((x - self.mean) / self.std).float(), dim=-1)
