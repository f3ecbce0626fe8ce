"""Taps agree with what the networks compute internally."""

import torch
import torch.nn.functional as F

from sweep.models.anatomy import anatomy_of
from sweep.models.build import build
from sweep.models.taps import read_sites, token_features


def _capture(module, x, net, pre=False):
    box = {}

    def grab(mod, args, out=None):
        t = args[0] if pre else (out[0] if isinstance(out, tuple) else out)
        box.setdefault("v", t)  # returns None: the hook must not replace inputs or outputs

    h = module.register_forward_pre_hook(grab) if pre else module.register_forward_hook(grab)
    try:
        with torch.no_grad():
            net(x)
    finally:
        h.remove()
    return box["v"]


def test_clip_attention_sites_match_multihead_attention():
    anatomy = anatomy_of("ViT-B/32")
    net = build(anatomy.entry, "random")
    block = anatomy.block(4)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        q, k, v, out, mlp = read_sites(net, [(block, s) for s in ("q", "k", "v", "attn_out", "mlp")],
                                       x, reduce=False)
    mha = net.transformer.resblocks[4].attn
    expected = _capture(mha, x, net)  # MultiheadAttention output, after its out_proj
    torch.testing.assert_close(F.linear(out, mha.out_proj.weight, mha.out_proj.bias), expected,
                               atol=1e-4, rtol=1e-4)
    inp = _capture(mha, x, net, pre=True)
    wq, wk, wv = mha.in_proj_weight.chunk(3)
    torch.testing.assert_close(k, F.linear(inp, wk, mha.in_proj_bias.chunk(3)[1]))
    # The MLP tap is QuickGELU of c_fc: u * sigmoid(1.702 u).
    pre_act = _capture(net.transformer.resblocks[4].mlp.c_fc, x, net)
    torch.testing.assert_close(mlp, pre_act * torch.sigmoid(1.702 * pre_act))
    assert q.shape == (2, 50, 768) and token_features(q, block).shape == (2, 49, 768)


def test_timm_attention_sites_match_module(micro):
    anatomy, net = micro
    block = anatomy.block(1)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        q, k, v, out = read_sites(net, [(block, s) for s in ("q", "k", "v", "attn_out")], x, reduce=False)
    attn = net.blocks[1].attn
    qkv = _capture(attn.qkv, x, net)
    torch.testing.assert_close(torch.cat([q, k, v], -1), qkv)
    torch.testing.assert_close(_capture(attn.proj, x, net, pre=True), out)
    # attn_out recomputed independently from q, k, v with plain softmax attention
    heads = attn.num_heads

    def split(t):
        return t.reshape(3, t.shape[1], heads, -1).transpose(1, 2)

    w = (split(q) @ split(k).transpose(-1, -2) / (q.shape[-1] // heads) ** 0.5).softmax(-1)
    torch.testing.assert_close((w @ split(v)).transpose(1, 2).reshape_as(out), out, atol=1e-5, rtol=1e-5)


def test_tapped_mlp_equals_gelu_of_fc1(micro):
    anatomy, net = micro
    block = anatomy.block(2)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        (feats,) = read_sites(net, [(block, "mlp")], x)
    fc1 = _capture(net.blocks[2].mlp.fc1, x, net)
    torch.testing.assert_close(feats, F.gelu(fc1)[:, 1:].mean(1))  # CLS (token 0) excluded
