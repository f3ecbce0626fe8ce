"""The whole-step compile path on CPU: networks cut at the tap give the hook tap's features for every
family, the compiled step gives the eager step's images, compiles once per layer (not per batch or
step), and fused Adam gives foreach Adam's images."""

import logging

import pytest
import torch

from sweep.method.engine import Engine
from sweep.method.recipe import Recipe
from sweep.method.render import render, seeds_for
from sweep.models.anatomy import anatomy_of
from sweep.models.build import build
from sweep.models.taps import read_features
from sweep.models.truncate import cut_at

#: One model of each family of the zoo (the smallest), so every tap rule is cut once.
FAMILY_MODELS = ["dev/vit-micro", "dev/deit-micro-distilled", "coat_lite_mini.in1k", "convit_tiny.fb_in1k",
                 "pit_ti_224.in1k", "swin_tiny_patch4_window7_224.ms_in1k", "twins_svt_small.in1k",
                 "ViT-B-32/openai", "RN50/openai", "mobilenet_v2.tv_in1k"]


@pytest.mark.parametrize("model", FAMILY_MODELS)
def test_cut_network_gives_the_hook_taps_features(model):
    anatomy = anatomy_of(model)
    net = build(anatomy.entry, "random")
    block = anatomy.blocks[len(anatomy.blocks) // 2]
    cut, why = cut_at(net, block, anatomy.default_site)
    assert cut is not None, why
    size = anatomy.preprocess.input_size
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(cut(x), read_features(net, block, anatomy.default_site, x), rtol=0, atol=0)
    assert cut_at(net, block, anatomy.default_site)[0] is cut  # traced once per network and site


def test_sites_that_cannot_be_cut_say_why():
    anatomy = anatomy_of("ViT-B-32/openai")
    net = build(anatomy.entry, "random")
    cut, why = cut_at(net, anatomy.blocks[0], "q")  # read from the attention's input: the hook tap stays
    assert cut is None and "only outputs are cut" in why


def _render(engine, features=(0, 1, 2), steps=3, block=1):
    anatomy = anatomy_of("dev/vit-micro")
    net = build(anatomy.entry, "random")
    recipe = Recipe(steps=steps, lr=0.05, tv=0.5)
    return net, render(net, anatomy, anatomy.blocks[block], "mlp", list(features), recipe,
                       seeds_for(features), "cpu", engine=engine)


@pytest.mark.compile
def test_compiled_step_gives_the_eager_images_and_compiles_once_per_layer():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    _, eager = _render(Engine(precision="fp32", compile="off", features_per_pass=3))
    net, compiled = _render(Engine(precision="fp32", compile="step", features_per_pass=3))
    assert compiled.engine.compile == "step"
    torch.testing.assert_close(compiled.images, eager.images, rtol=0, atol=1e-4)
    torch.testing.assert_close(compiled.trace.loss, eager.trace.loss, rtol=1e-4, atol=1e-5)
    graphs = counters["stats"]["unique_graphs"]
    anatomy = anatomy_of("dev/vit-micro")
    recipe = Recipe(steps=5, lr=0.05, tv=0.5)
    render(net, anatomy, anatomy.blocks[1], "mlp", [3, 4, 5], recipe, seeds_for([3, 4, 5]), "cpu",
           engine=Engine(precision="fp32", compile="step", features_per_pass=3))  # another batch, same layer
    assert counters["stats"]["unique_graphs"] == graphs, "a new batch of the same layer compiled again"
    assert not counters["graph_break"], dict(counters["graph_break"])


@pytest.mark.compile
def test_a_site_that_cannot_be_cut_falls_back_with_one_log_line(caplog):
    anatomy = anatomy_of("dev/vit-micro")
    net = build(anatomy.entry, "random")
    engine = Engine(precision="fp32", compile="step", features_per_pass=2)
    site = next(s for s, v in anatomy.blocks[0].sites.items() if v.hook != "output")
    with caplog.at_level(logging.INFO, logger="sweep.method.render"):
        out = render(net, anatomy, anatomy.blocks[0], site, [0, 1], Recipe(steps=1, lr=0.05, tv=0.5), [0, 1], "cpu",
                     engine=engine)
    assert out.engine.compile == "on"
    assert sum("whole-step compile not possible" in r.message for r in caplog.records) == 1


def test_fused_adam_gives_the_foreach_images():
    _, plain = _render(Engine(precision="fp32", compile="off", adam="foreach"))
    _, fused = _render(Engine(precision="fp32", compile="off", adam="fused"))
    torch.testing.assert_close(fused.images, plain.images, rtol=0, atol=1e-5)
