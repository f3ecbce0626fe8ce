"""A user's own model, as `module:model_factories:tiny_mixer` names it (tests/ is on the path)."""

import torch
from torch import nn


class MixerBlock(nn.Module):
    def __init__(self, width: int, act=nn.GELU):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), act(), nn.Linear(2 * width, width))

    def forward(self, x):
        return x + self.mlp(self.norm(x))


class TinyMixer(nn.Module):
    """Patch embedding, a learned class token, two MLP blocks, a linear head."""

    def __init__(self, width: int = 16, depth: int = 2, act=nn.GELU):
        super().__init__()
        self.embed = nn.Conv2d(3, width, 8, 8)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = nn.Sequential(*[MixerBlock(width, act) for _ in range(depth)])
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)
        return self.head(self.blocks(x)[:, 0])


def tiny_mixer(width: int = 16):
    return TinyMixer(width), {"input_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def relu_mixer(width: int = 16, seed: int = 0, twin: int = 0):
    """A TinyMixer with ReLU MLPs and weights drawn from `seed`. twin=1: the same network with each
    block's hidden units permuted and rescaled by positive factors: since ReLU(s x) = s ReLU(x), its
    outputs are unchanged and hidden unit j is unit perm[j] of the original times scale[j] (the
    matching job's planted twin; tests/test_matching.py)."""
    g = torch.Generator().manual_seed(seed)
    net = TinyMixer(width, act=nn.ReLU)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        if twin:
            t = torch.Generator().manual_seed(1000 + twin)
            for block in net.blocks:
                fc1, fc2 = block.mlp[0], block.mlp[2]
                perm = torch.randperm(fc1.out_features, generator=t)
                scale = torch.rand(fc1.out_features, generator=t) * 2 + 0.5
                fc1.weight.copy_(fc1.weight[perm] * scale[:, None])
                fc1.bias.copy_(fc1.bias[perm] * scale)
                fc2.weight.copy_(fc2.weight[:, perm] / scale[None, :])
            net.twin_perm = perm  # the last block's, for a test to read
    return net, {"input_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


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
