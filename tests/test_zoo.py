"""The registry: the paper's models, the names users know, configs read from the models themselves."""

from collections import Counter

import pytest
import timm

from sweep.core.errors import SweepError
from sweep.models.anatomy import anatomy_of
from sweep.models.zoo import ENTRIES, REGISTRY, ModelEntry, Registry, get_entry


def test_the_38_variants():
    counts = Counter(e.family for e in ENTRIES if e.paper_38)
    assert counts == {"deit": 6, "coat": 5, "convit": 3, "pit": 8, "swin": 10, "twins": 6}
    assert "pit_xs_distilled_224.in1k" in REGISTRY  # listed by the paper, never instantiated there


def test_baselines_present():
    for name in ("B_16_imagenet1k", "B_32_imagenet1k", "L_16_imagenet1k", "L_32_imagenet1k", "B_16", "B_32",
                 "L_32", "ViT-B/32", "ViT-B/16", "RN50", "RN101", "RN50x4", "RN50x16",
                 "ResNet-50", "ResNet-152", "MobileNetV2", "DenseNet121"):
        assert name in REGISTRY, name
    assert get_entry("ViT-B/32").key == "ViT-B-32/openai" and get_entry("ViT-B/32").lr == 1.0
    assert get_entry("B_16").key == "vit_base_patch16_224.orig_in21k"
    assert "DIFFERENT" in get_entry("B_32_imagenet1k").note


def test_names_users_know():
    # paper's 2021 timm names
    assert get_entry("swin_base_patch4_window7_224").key == "swin_base_patch4_window7_224.ms_in22k_ft_in1k"
    assert get_entry("swin_base_patch4_window7_224_in22k").key == "swin_base_patch4_window7_224.ms_in22k"
    assert get_entry("deit_tiny_distilled_patch16_224").key == "deit_tiny_distilled_patch16_224.fb_in1k"
    assert get_entry("convit_tiny.fb_in1k").family == "convit"


def test_ambiguous_and_unknown_names():
    reg = Registry([ModelEntry("a.x", "vit", "timm", "a", "x"), ModelEntry("a.y", "vit", "timm", "a", "y")])
    with pytest.raises(SweepError, match="ambiguous; use one of: a.x, a.y"):
        reg.get("a")
    with pytest.raises(SweepError, match="did you mean deit_tiny"):
        get_entry("deit_tiny_distiled_patch16_224")
    with pytest.raises(SweepError, match="already registered"):
        reg.register(ModelEntry("a.x", "vit", "timm", "a", "x"))


@pytest.mark.parametrize("key", ["vit_base_patch16_384.orig_in21k_ft_in1k", "deit_base_patch16_384.fb_in1k",
                                 "swin_large_patch4_window12_384.ms_in22k", "coat_mini.in1k"])
def test_preprocess_comes_from_pretrained_cfg(key):
    pre = anatomy_of(key).preprocess
    cfg = timm.get_pretrained_cfg(key).to_dict()
    assert pre.input_size == cfg["input_size"][-1]
    assert pre.mean == tuple(cfg["mean"]) and pre.std == tuple(cfg["std"])


def test_known_preprocessing_values():
    assert anatomy_of("B_16_imagenet1k").preprocess.mean == (0.5, 0.5, 0.5)  # the paper's ViT norm
    clip = anatomy_of("ViT-B/16").preprocess
    assert clip.input_size == 224 and clip.mean[0] == pytest.approx(0.48145466)
    assert anatomy_of("RN50x4/openai").preprocess.input_size == 288
    assert anatomy_of("densenet121.tv_in1k").preprocess.std == pytest.approx((0.229, 0.224, 0.225))


def test_block_structure():
    convit = anatomy_of("convit_tiny")
    assert [b.prefix_tokens for b in convit.blocks] == [0] * 10 + [1] * 2  # CLS joins after local blocks
    coat = anatomy_of("coat_mini")
    assert [b.name for b in coat.blocks][-3:] == ["parallel_blocks.5@2", "parallel_blocks.5@3",
                                                  "parallel_blocks.5@4"]
    assert [b.tokens for b in coat.blocks][-3:] == [785, 197, 50]
    swin = anatomy_of("swin_tiny_patch4_window7_224")
    assert [b.widths["mlp"] for b in swin.blocks] == [384] * 2 + [768] * 2 + [1536] * 6 + [3072] * 2
    assert anatomy_of("pit_ti_distilled_224").blocks[0].prefix_tokens == 2
    assert anatomy_of("ViT-B/32").blocks[3].sites["mlp"].module == "transformer.resblocks.3.mlp.gelu"
    assert anatomy_of("resnet50").default_site == "channel"
    vit = anatomy_of("B_16_imagenet1k")
    assert vit.block(-1).index == 11 and vit.block("blocks.4").index == 4 and vit.block("3").index == 3
