"""Any model by the name users know (sweep.models.names): timm, open_clip, torchvision and a user's
factory, each tapped where its inferred anatomy says, checked against a hand-written hook."""

import pytest
import torch

from sweep.core.errors import SweepError
from sweep.models.anatomy import anatomy_of
from sweep.models.build import build
from sweep.models.names import resolve, split_args, with_args
from sweep.models.taps import read_sites, token_features

DINO = "vit_small_patch14_dinov2[img_size=224]"


def test_names_resolve_to_canonical_self_describing_keys():
    assert resolve("B_16_imagenet1k").key == "vit_base_patch16_384.orig_in21k_ft_in1k"  # the zoo first
    dino = resolve(with_args("vit_small_patch14_dinov2", ["img_size=224"]))
    assert dino.key == DINO and dino.source == "timm" and dino.kwargs == (("img_size", 224),)
    assert dino.tag == "lvd142m", "timm's default pretrained tag is recorded"
    assert resolve("vit_small_patch14_dinov2[img_size=224]") == dino, "a key resolves to itself on any worker"
    assert with_args(DINO, ["img_size=224"]) == DINO and with_args("m[b=1]", ["a=x"]) == "m[a=x,b=1]"
    key = with_args("m", ["flag=true", "none=null", "rate=0.5", "name=text"])
    assert split_args(key) == ("m", (("flag", True), ("name", "text"), ("none", None), ("rate", 0.5)))
    with pytest.raises(SweepError, match="text values may not contain"):
        with_args("m", ["name=a,b"])
    clip = resolve("open_clip:ViT-B-32/laion2b_s34b_b79k")
    assert (clip.source, clip.arch, clip.tag, clip.family) == ("open_clip", "ViT-B-32", "laion2b_s34b_b79k", "clip")
    tv = resolve("torchvision:resnet18")
    assert (tv.source, tv.tag, tv.family) == ("torchvision", "IMAGENET1K_V1", "cnn")
    own = resolve("module:model_factories:tiny_mixer[width=8]")
    assert (own.source, own.arch, own.kwargs) == ("module", "model_factories:tiny_mixer", (("width", 8),))


@pytest.mark.parametrize("name, message", [
    ("vit_smal_patch14_dinov2", "unknown model 'vit_smal_patch14_dinov2'; did you mean"),
    ("vit_tiny_patch16_224.nope", "timm has no pretrained tag 'nope' for vit_tiny_patch16_224; allowed: augreg"),
    ("open_clip:ViT-B-99", "unknown open_clip architecture 'ViT-B-99'"),
    ("open_clip:ViT-B-32/nope", "open_clip has no pretrained tag 'nope' for ViT-B-32"),
    ("torchvision:resnet9", "unknown torchvision classification model 'resnet9'"),
    ("module:no_factory_here", "expected module:package.module:factory"),
    ("convnext_atto[img_size]", "model argument 'img_size': expected key=value"),
    ("ViT-B/32[img_size=64]", "constructor arguments are supported for timm models only"),
])
def test_bad_names_say_what_names_look_like(name, message):
    with pytest.raises(SweepError, match=message.replace("[", r"\[").replace("(", r"\(")):
        resolve(name)


def test_an_argument_the_constructor_refuses_is_one_line():
    with pytest.raises(SweepError, match=r"model convnext_atto\[img_size=224\]: its constructor refuses the "
                                         r"arguments img_size=224 \(TypeError: ConvNeXt.__init__\(\) got an unexpected"):
        anatomy_of("convnext_atto[img_size=224]")


def _hooked(net, module_path: str, kind: str):
    """A hand-written hook on one module: its output, or its first positional input."""
    module = dict(net.named_modules())[module_path]
    seen = {}
    if kind == "output":
        handle = module.register_forward_hook(lambda m, a, out: seen.setdefault("t", out))
    else:
        handle = module.register_forward_pre_hook(lambda m, a: seen.setdefault("t", a[0]))
    return seen, handle


@pytest.mark.parametrize("name, layer, module_path, kind, family, prefix", [
    (DINO, 3, "blocks.3.mlp.act", "output", "vit_ssl", 1),                   # timm DINOv2 ViT, non-default size
    ("convnext_atto", 3, "stages.1.blocks.1.mlp.fc2", "input", "auto", 0),    # ConvNeXt: conv MLP, channels
    ("eva02_tiny_patch14_224", 2, "blocks.2.mlp.fc2", "input", "auto", 1),   # EVA: SwiGLU, other naming
    ("open_clip:ViT-B-32", 5, "transformer.resblocks.5.mlp.gelu", "output", "clip", 1),
    ("torchvision:vit_b_16", 1, "encoder.layers.encoder_layer_1.mlp.3", "input", "auto", 1),
    ("module:model_factories:tiny_mixer[width=12]", 1, "blocks.1.mlp.2", "input", "auto", 1),
    # explicit taps (--tap): a conv output (channels), a block's token output, a sequence-first encoder
    ("module:model_factories:tiny_mixer[tap=embed|blocks.0]", 0, "embed", "output", "auto", 0),
    ("module:model_factories:tiny_mixer[tap=embed|blocks.0]", 1, "blocks.0", "output", "auto", 1),
    ("torchvision:resnet18[tap=layer2.0.conv1]", 0, "layer2.0.conv1", "output", "cnn", 0),
    ("module:model_factories:seq_encoder[tap=encoder.layers.1]", 0, "encoder.layers.1", "output", "auto", 1),
])
def test_inferred_taps_read_the_module_a_hand_written_hook_reads(name, layer, module_path, kind, family, prefix):
    anatomy = anatomy_of(name)
    block = anatomy.block(layer)
    assert anatomy.entry.family == family and block.prefix_tokens == prefix
    net = build(anatomy.entry, "random")
    size = anatomy.preprocess.input_size
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    seen, handle = _hooked(net, module_path, kind)
    try:
        with torch.no_grad():
            net(x)
    finally:
        handle.remove()
    expected = seen["t"]
    site = anatomy.default_site
    with torch.no_grad():
        (tapped,) = read_sites(net, [(block, site)], x, reduce=False)
    if block.layout == "channels":
        torch.testing.assert_close(tapped, expected)
    else:
        if expected.dim() == 3 and expected.shape[0] != 2:  # sequence-first (N, B, C)
            expected = expected.transpose(0, 1)
        torch.testing.assert_close(token_features(tapped, block), token_features(expected, block))
    assert tapped.shape[1 if block.layout == "channels" else -1] == block.width(site)


def test_nothing_to_tap_lists_the_modules():
    from sweep.models.anatomy import describe
    from sweep.models.zoo import ModelEntry

    entry = ModelEntry("module:torch.nn:Identity", "auto", "module", "torch.nn:Identity", "factory")
    with pytest.raises(SweepError, match="found no blocks to tap in module:torch.nn:Identity"):
        describe(entry)
    with pytest.raises(SweepError, match="name the modules to read with --tap MODULE .* e.g. --tap encoder.layers.1"):
        anatomy_of("module:model_factories:seq_encoder")


def test_taps_travel_in_the_name_in_the_order_given():
    name = with_args("dev/vit-micro", ["depth=2"], ["blocks.1.mlp.fc1", "blocks.0"])
    assert name == "dev/vit-micro[depth=2,tap=blocks.1.mlp.fc1|blocks.0]"
    assert with_args(name, taps=["blocks.0", "head"]).endswith("tap=blocks.1.mlp.fc1|blocks.0|head]")
    entry = resolve(name)
    assert entry.taps == ("blocks.1.mlp.fc1", "blocks.0") and ("tap", "blocks.1.mlp.fc1|blocks.0") not in entry.kwargs
    assert dict(entry.kwargs)["depth"] == 2 and resolve(entry.key) == entry
    tapped_zoo = resolve("B_16_imagenet1k[tap=blocks.3]")
    assert tapped_zoo.key == "vit_base_patch16_384.orig_in21k_ft_in1k[tap=blocks.3]" and not tapped_zoo.aliases
    assert resolve("torchvision:resnet18[tap=0.1]").taps == ("0.1",), "a Sequential's module path stays text"
    blocks = anatomy_of(name).blocks
    assert [(b.index, b.name, b.layout, tuple(b.sites)) for b in blocks] == [
        (0, "blocks.1.mlp.fc1", "tokens", ("output",)), (1, "blocks.0", "tokens", ("output",))]
    assert anatomy_of(name).default_site == "output"
    with pytest.raises(SweepError, match=r"tap 'blocks.9': no such module in .*; allowed: blocks.\d"):
        anatomy_of("dev/vit-micro[tap=blocks.9]")


def test_model_options_are_named_by_their_flag(tmp_path, capsys):
    from sweep.cli import main

    base = ["visualize", "--model", "dev/vit-micro", "--layer", "0", "--feature", "0", "--weights", "random",
            "--out", str(tmp_path), "--steps", "1", "--quiet"]
    assert main([*base, "--model-arg", "bad"]) == 2
    assert "error: --model-arg (item 1): model argument 'bad': expected key=value" in capsys.readouterr().err
    assert main([*base, "--tap", "blocks.0", "--tap", "a b"]) == 2
    assert "error: --tap (item 2): tap 'a b': expected a module path" in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing written before the error"
    assert main(["visualize", "--model", "module:model_factories:seq_encoder", "--tap", "encoder.layers.1",
                 "--layer", "0", "--feature", "3", "--weights", "random", "--out", str(tmp_path), "--steps", "2",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "module:model_factories:seq_encoder[tap=encoder.layers.1]  layer 0 (encoder.layers.1)  output     3" in out


def test_each_source_owns_its_preprocessing_and_says_where_it_came_from():
    from sweep.models.sources import SOURCES

    assert set(SOURCES) == {"timm", "open_clip", "torchvision", "module", "package"}
    micro = anatomy_of("dev/vit-micro").preprocess
    assert micro.origin == "timm defaults for vit_tiny_patch16_224 (no pretrained tag)"
    tv = anatomy_of("torchvision:resnet18").preprocess
    assert (tv.input_size, tv.resize_size, tv.interpolation, tv.crop_pct) == (224, 256, "bilinear", 0.875)
    assert tv.origin == "torchvision transforms of resnet18 IMAGENET1K_V1"
    dino = anatomy_of(DINO).preprocess
    assert (dino.input_size, dino.interpolation, dino.origin) == (224, "bicubic", "timm pretrained_cfg of "
                                                                   "vit_small_patch14_dinov2.lvd142m")
    own = anatomy_of("module:model_factories:seq_encoder[tap=encoder.layers.1]").preprocess
    assert (own.input_size, own.mean) == (32, (0.485, 0.456, 0.406)) and "defaults for mean, std" in own.origin


def test_sweep_on_ray_with_a_model_outside_the_zoo(tmp_path, ray_local):
    """Workers rebuild the model from its name alone: nothing registered in the driver's memory."""
    from sweep_checks import assert_exactly_once

    from sweep.pipelines.feature_sweep import run_sweep
    from sweep.work.plan import SweepConfig

    config = SweepConfig.from_dict({
        "out": str(tmp_path / "out"), "models": ["vit_small_patch14_dinov2"], "weights": "random",
        "model_args": ["img_size=28", "depth=2", "embed_dim=32", "num_heads=2"],
        "features": {"count": 2}, "features_per_batch": 1, "recipe": {"steps": 3},
        "resources": {"num_gpus": 0, "num_cpus": 0.5, "workers": 2}})
    assert config.models == ("vit_small_patch14_dinov2[depth=2,embed_dim=32,img_size=28,num_heads=2]",)
    report = run_sweep(config, progress=False)
    assert report.done == 4 and report.failed == 0
    rows = assert_exactly_once(config)
    assert set(rows["model"]) == set(config.models)


def test_a_changed_weights_file_is_recomputed_an_unchanged_one_skipped(tmp_path):
    """Weights files are pinned to their bytes: resume skips results of the same file, recomputes
    those of a file that changed, and a worker given other bytes than planned stops with one line."""
    from safetensors.torch import save_file

    from sweep.models.build import load_state_dict_file
    from sweep.work.batch import BatchRunner
    from sweep.work.plan import SweepConfig
    from sweep.work.resume import preflight

    weights = tmp_path / "micro.safetensors"
    state = build(anatomy_of("dev/vit-micro").entry, "random").state_dict()
    save_file(state, weights)

    def config():
        return SweepConfig.from_dict({"out": str(tmp_path / "out"), "models": ["dev/vit-micro"], "layers": [1],
                                      "weights": str(weights), "features": {"count": 2}, "recipe": {"steps": 1},
                                      "resources": {"num_gpus": 0}})

    first = config()
    assert first.weights.startswith(f"{weights}#sha256=")
    tasks, *_ = preflight(first, force=False)
    runner = BatchRunner(first.out, {}, "cpu")
    for t in tasks:
        runner.run(t.batch)
    assert preflight(config(), force=False)[0] == [], "unchanged file: nothing to do"

    state["blocks.1.mlp.fc1.weight"] = state["blocks.1.mlp.fc1.weight"] + 0.01  # one tensor changed
    save_file(state, weights)
    with pytest.raises(SweepError, match="changed since the job was planned"):
        load_state_dict_file(first.weights)  # a worker holding the old plan
    second = config()
    assert second.weights != first.weights
    tasks, done, _, _, removed, _ = preflight(second, force=False)
    assert sum(len(t.batch.features) for t in tasks) == 2 and not done and removed == 2


def test_a_checkpoint_for_another_input_size_suggests_the_argument(tmp_path):
    from safetensors.torch import save_file

    small = "vit_small_patch14_dinov2[depth=1,embed_dim=32,img_size=28,num_heads=2]"
    save_file(build(anatomy_of(small).entry, "random").state_dict(), tmp_path / "at28.safetensors")
    other = "vit_small_patch14_dinov2[depth=1,embed_dim=32,img_size=56,num_heads=2]"
    with pytest.raises(SweepError, match=r"pos_embed is \[1, 5, 32\] in the file, \[1, 17, 32\] in the model; "
                                         r"the file's position table is a 2x2 grid of 14 px patches: try "
                                         r"--model-arg img_size=28"):
        build(anatomy_of(other).entry, str(tmp_path / "at28.safetensors"))


def test_sweep_models_describes_any_model(capsys):
    import json

    from sweep.cli import main

    assert main(["models", "--model", "vit_small_patch14_dinov2", "--model-arg", "img_size=224",
                 "--format", "json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["key"] == DINO and record["source"] == "timm" and record["input_size"] == 224
    assert len(record["blocks"]) == 12 and record["blocks"][0]["widths"]["mlp"] == 1536


def test_every_job_config_folds_model_arguments_and_taps_into_the_name(tmp_path):
    from sweep.core.validation import parse
    from sweep.experiments.top_images import TopImagesConfig
    from sweep.pipelines.ablations import AblationConfig
    from sweep.pipelines.tune import TuneJob
    from sweep.work.plan import SweepConfig
    from sweep.work.visualize import VisualizeJob

    common = {"model_args": ["depth=2"], "taps": ["blocks.1"]}
    want = "dev/vit-micro[depth=2,tap=blocks.1]"
    assert parse(TuneJob, {"model": "dev/vit-micro", "out": str(tmp_path), **common}).model == want
    assert parse(TopImagesConfig, {"model": "dev/vit-micro", "out": str(tmp_path), **common}).model == want
    assert parse(VisualizeJob, {"model": "dev/vit-micro", "layer": 0, "features": [0], **common}).model == want
    assert parse(SweepConfig, {"models": ["dev/vit-micro"], "out": str(tmp_path), **common}).models == (want,)
    data = {"kind": "val_solution", "root": str(tmp_path), "solution": str(tmp_path / "s.csv")}
    ablation = parse(AblationConfig, {"experiment": "frequency", "out": str(tmp_path), "data": data,
                                      "models": ["tf_efficientnet_lite0"], "model_args": ["num_classes=10"]})
    assert ablation.models == ("tf_efficientnet_lite0[num_classes=10]",)
    with pytest.raises(SweepError, match=r"^taps.0: tap 'a b'"):
        parse(TuneJob, {"model": "dev/vit-micro", "out": str(tmp_path), "taps": ["a b"]})
