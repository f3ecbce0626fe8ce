"""Token surgery on tiny random ViTs, each variant checked against an independent computation."""

import pytest
import torch

from sweep.core.errors import SweepError
from sweep.experiments.surgery import TokenVariant, shuffle_blocks
from sweep.models.build import build
from sweep.models.zoo import get_entry

MODELS = ["dev/vit-micro", "dev/deit-micro-distilled"]


@pytest.fixture(params=MODELS)
def net(request):
    return build(get_entry(request.param), "random")


def images(n=3, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_full_depth_isolation_and_no_separation_equal_the_model_bit_for_bit(net):
    x = images()
    depth = len(net.blocks)
    assert torch.equal(TokenVariant(net, f"cls_isolated_after:{depth}")(x), net(x))
    assert torch.equal(TokenVariant(net, "cls_apart_until:0")(x), net(x))
    assert torch.equal(TokenVariant(net, "intact")(x), net(x))


@torch.no_grad()
def test_a_cls_that_never_meets_the_patches_ignores_the_image(net):
    a, b = images(seed=1), images(seed=2)
    for variant in ("cls_isolated_after:0", f"cls_apart_until:{len(net.blocks)}"):
        v = TokenVariant(net, variant)
        torch.testing.assert_close(v(a), v(b))
    mid = TokenVariant(net, "cls_isolated_after:2")
    assert not torch.allclose(mid(a), mid(b))


@torch.no_grad()
def test_mean_pooling_by_hand(net):
    x = images()
    tokens = net.forward_features(x)
    p = net.num_prefix_tokens
    for variant, pooled in (("pool:mean_patches", tokens[:, p:].mean(1)), ("pool:mean_all", tokens.mean(1)),
                            ("pool:patch:5", tokens[:, p + 5]), ("pool:cls", tokens[:, 0])):
        logits = net.head(pooled)
        if hasattr(net, "head_dist"):
            logits = (logits + net.head_dist(pooled)) / 2
        torch.testing.assert_close(TokenVariant(net, variant)(x), logits)


@torch.no_grad()
def test_zero_position_embedding_makes_patch_order_irrelevant(net):
    x = images(2)
    shuffled = shuffle_blocks(x, 8, torch.Generator().manual_seed(3))  # patch-aligned: permutes patches
    assert not torch.equal(shuffled, x)
    zero = TokenVariant(net, "pos:zero")
    torch.testing.assert_close(zero(shuffled), zero(x), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(net(shuffled), net(x), atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(net.pos_embed) > 0  # the model itself was not modified
    redraw = TokenVariant(net, "pos:redraw", seed=4)
    assert not torch.allclose(redraw(x), net(x))


def test_block_shuffle_is_a_permutation():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    y = shuffle_blocks(x, 4, torch.Generator().manual_seed(0))
    assert sorted(y.flatten().tolist()) == sorted(x.flatten().tolist())
    tiles = {tuple(x[0, :, i:i + 4, j:j + 4].flatten().tolist()) for i in (0, 4) for j in (0, 4)}
    assert {tuple(y[0, :, i:i + 4, j:j + 4].flatten().tolist()) for i in (0, 4) for j in (0, 4)} == tiles
    with pytest.raises(SweepError, match="does not divide"):
        shuffle_blocks(x, 3, torch.Generator())


def test_refuses_hierarchical_models_and_bad_variants():
    swin = build(get_entry("swin_tiny_patch4_window7_224"), "random")
    with pytest.raises(SweepError, match="needs a plain ViT"):
        TokenVariant(swin, "intact")
    micro = build(get_entry("dev/vit-micro"), "random")
    with pytest.raises(SweepError, match="unknown token variant"):
        TokenVariant(micro, "cls_gone")
    with pytest.raises(SweepError, match="L must be in 0..3"):
        TokenVariant(micro, "cls_isolated_after:9")
