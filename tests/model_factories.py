"""A user's own model, as `module:model_factories:tiny_mixer` names it (tests/ is on the path)."""

import torch
from torch import nn


class MixerBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x):
        return x + self.mlp(self.norm(x))


class TinyMixer(nn.Module):
    """Patch embedding, a learned class token, two MLP blocks, a linear head."""

    def __init__(self, width: int = 16, depth: int = 2):
        super().__init__()
        self.embed = nn.Conv2d(3, width, 8, 8)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = nn.Sequential(*[MixerBlock(width) for _ in range(depth)])
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)
        return self.head(self.blocks(x)[:, 0])


def tiny_mixer(width: int = 16):
    return TinyMixer(width), {"input_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


class SeqEncoder(nn.Module):
    """torch's own TransformerEncoder, sequence first, with no module named mlp: nothing to infer,
    so it is read through explicit taps (`--tap encoder.layers.1`)."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.embed = nn.Conv2d(3, width, 8, 8)
        self.class_token = nn.Parameter(torch.zeros(1, 1, width))
        layer = nn.TransformerEncoderLayer(width, 2, 2 * width, dropout=0.0, batch_first=False)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        x = self.embed(x).flatten(2).permute(2, 0, 1)  # (tokens, batch, width)
        x = torch.cat([self.class_token.expand(-1, x.shape[1], -1), x], dim=0)
        return self.head(self.encoder(x)[0])


def seq_encoder(width: int = 16):
    return SeqEncoder(width), {"input_size": 32}
