"""Every zoo entry, built with random weights: taps on every block and site, on CPU (entries that
differ only in their pretrained tag share one build: see `body`)."""

import math

import pytest
import torch

from sweep.models.anatomy import anatomy_of
from sweep.models.build import build
from sweep.models.taps import read_sites, reduce_features
from sweep.models.zoo import ENTRIES


pytestmark = pytest.mark.zoo


def body(entry) -> tuple:
    """What decides a network's blocks and taps: two entries alike here differ only in their
    pretrained tag (and so their head), e.g. Swin's ms_in22k and ms_in22k_ft_in1k."""
    return entry.source, entry.arch, entry.kwargs, entry.taps


#: One entry per distinct body, built and run; the others are checked against theirs.
BUILT = list({body(e): e for e in reversed(ENTRIES)}.values())[::-1]
TWINS = [e for e in ENTRIES if e not in BUILT]


def test_twins_have_the_anatomy_of_the_entry_that_is_built():
    assert len(TWINS) == 4 and len(BUILT) + len(TWINS) == len(ENTRIES)
    first = {body(e): e for e in BUILT}
    for twin in TWINS:
        built = anatomy_of(first[body(twin)].key)
        anatomy = anatomy_of(twin.key)
        assert anatomy.blocks == built.blocks, twin.key
        assert anatomy.preprocess.input_size == built.preprocess.input_size, twin.key


@pytest.mark.parametrize("entry", BUILT, ids=[e.key for e in BUILT])
def test_taps_on_every_block_and_the_forward_stops_after_the_hooked_one(entry):
    anatomy = anatomy_of(entry.key)  # cached: the model listing and the paper plan describe the same
    net = build(entry, "random")
    size = anatomy.preprocess.input_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    requests = [(b, s) for b in anatomy.blocks for s in b.sites]
    with torch.no_grad():
        raw = read_sites(net, requests, x, reduce=False, stop=False)
    assert len(raw) == len(requests)
    for (block, site), t in zip(requests, raw):
        width = block.width(site)
        reduced = reduce_features(t, block)
        assert reduced.shape == (2, width), (block.name, site)
        assert torch.isfinite(reduced).all(), (block.name, site)
        if block.layout == "channels":
            assert t.shape[:2] == (2, width)
            continue
        tokens = t.reshape(2, -1, width)
        assert tokens.shape[1] == block.tokens
        # What remains after dropping the prefix tokens is exactly the square patch grid ...
        patches = block.tokens - block.prefix_tokens
        assert math.isqrt(patches) ** 2 == patches, (block.name, block.tokens, block.prefix_tokens)
        # ... and the reduction averages those patches only.
        expected = tokens[:, block.prefix_tokens:].mean(1)
        torch.testing.assert_close(reduced, expected)
    forward_stops_after_hooked_block(anatomy, net)  # the same network: one build per model


def forward_stops_after_hooked_block(anatomy, net):
    modules = dict(net.named_modules())
    first, last = anatomy.blocks[0], anatomy.blocks[-1]
    fired = []
    handle = modules[last.site(anatomy.default_site).module].register_forward_hook(
        lambda *a: fired.append(1))
    size = anatomy.preprocess.input_size
    try:
        with torch.no_grad():
            (feats,) = read_sites(net, [(first, anatomy.default_site)], torch.rand(1, 3, size, size))
    finally:
        handle.remove()
    assert feats.shape == (1, first.width(anatomy.default_site))
    assert fired == [], "blocks after the hooked one were computed"
