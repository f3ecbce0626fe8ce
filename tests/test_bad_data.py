"""Bad data and bad weights, table-driven: each case is one clear line (or a documented corrupt row).

Boxes: a bad own-class box coordinate makes that image's rows `status = "corrupt"` with the value
named (sweep.data.imagenet), never aborts. Weights: every bad `--weights` is exit 2 with exactly
one `error:` line, nothing rendered and the root untouched. Images: an empty or non-image file is
a one-line message naming it, per image and non-fatal. Object storage errors are said in words.
"""

import io
import logging
from pathlib import Path

import botocore.exceptions
import imagenet_fixture as fx
import numpy as np
import pandas as pd
import pytest
import ray
import ray.cloudpickle
import torch
from PIL import Image
from sweep_checks import free_port

from sweep.cli import main
from sweep.core.errors import SweepError, storage_error
from sweep.data.imagenet import train_with_boxes, val_from_solution
from sweep.experiments.ablations import ModelSpec, decode, prepare_batch
from sweep.models.build import build, read_weights_bytes
from sweep.models.zoo import get_entry
from sweep.pipelines.ablations import AblationConfig, DataSpec, run_ablation

ray.cloudpickle.register_pickle_by_value(fx)  # Ray workers cannot import the tests folder

# --- boxes ----------------------------------------------------------------------------------------

CONDITIONS = ("original", "background", "foreground")
FIELDS = ("xmin", "ymin", "xmax", "ymax")

#: (field, value written into the file, the problem in words, stage): the box is fx.CENTRE_BOX
#: [20, 12, 44, 36] of a 64 x 48 image; "listing" problems are found without the image, "image"
#: ones (outside the image) once it is decoded.
BOX_CASES = [
    ("xmin", "nan", "xmin nan is not finite", "listing"),
    ("ymin", "inf", "ymin inf is not finite", "listing"),
    ("xmax", "-inf", "xmax -inf is not finite", "listing"),
    ("ymax", "1e999", "ymax inf is not finite", "listing"),
    ("xmin", "-3", "xmin -3 is negative", "listing"),
    ("ymin", "-0.5", "ymin -0.5 is negative", "listing"),
    ("xmax", "abc", "xmax 'abc' is not a number", "listing"),
    ("ymax", "12px", "ymax '12px' is not a number", "listing"),
    ("xmin", "50", "xmin 50 >= xmax 44", "listing"),
    ("xmin", "44", "xmin 44 >= xmax 44", "listing"),
    ("ymin", "36", "ymin 36 >= ymax 36", "listing"),
    ("ymin", "40.5", "ymin 40.5 >= ymax 36", "listing"),
    ("xmax", "65", "xmax 65 is outside the image (width 64)", "image"),
    ("ymax", "48.5", "ymax 48.5 is outside the image (height 48)", "image"),
]
VOC_ONLY_CASES = [
    ("xmin", "", "xmin '' is not a number", "listing"),
    ("ymax", None, "ymax is missing", "listing"),  # no <ymax> element at all
]


def bad_box(field, value):
    return [value if f == field else str(v) for f, v in zip(FIELDS, fx.CENTRE_BOX)]


def voc(wnid: str, box) -> str:
    coords = "".join(f"<{f}>{v}</{f}>" for f, v in zip(FIELDS, box) if v is not None)
    return (f"<annotation><size><width>{fx.W}</width><height>{fx.H}</height></size>"
            f"<object><name>{wnid}</name><bndbox>{coords}</bndbox></object></annotation>")


def rows_of(records, experiment="foreground_background", conditions=CONDITIONS):
    batch = {k: [r[k] for r in records] for k in ("image_id", "path", "label", "boxes", "box_error")}
    out = prepare_batch(batch, experiment, conditions, fx.SIZE)
    return pd.DataFrame({k: out[k] for k in ("image_id", "condition", "status", "error")})


def assert_only_corrupt(rows, image_id, error):
    bad = rows[rows["image_id"] == image_id]
    assert list(bad["status"]) == ["corrupt"] * 3 and list(bad["error"]) == [error] * 3
    others = rows[rows["image_id"] != image_id]
    assert len(others) > 0 and (others["status"] == "ok").all() and (others["error"] == "").all()


@pytest.mark.parametrize("field,value,problem,stage", BOX_CASES + VOC_ONLY_CASES)
def test_bad_voc_box_makes_the_image_corrupt(tmp_path, field, value, problem, stage):
    data = fx.make_train(tmp_path)
    sample = data["samples"][0]  # one own box, covering the centre
    xml = Path(data["boxes"]) / sample.wnid / f"{sample.stem}.xml"
    xml.write_text(voc(sample.wnid, bad_box(field, value)))
    listing = train_with_boxes(data["train"], data["boxes"])  # never raises
    assert len(listing.records) == 25 and len(listing.problems) == 2  # the fixture's own two
    record = next(r for r in listing.records if r["image_id"] == sample.stem)
    if stage == "listing":
        expected = f"{xml}: box 1 ({sample.wnid}): {problem}"
        assert record["box_error"] == expected and record["boxes"] == []
    else:
        expected = f"{record['path']}: box 1: {problem}"
        assert record["box_error"] == ""
    good = [r for r in listing.records if not r["image_id"].endswith("_corrupt")]
    assert_only_corrupt(rows_of(good), sample.stem, expected)


@pytest.mark.parametrize("field,value,problem,stage", BOX_CASES)
def test_bad_solution_box_makes_the_image_corrupt(tmp_path, field, value, problem, stage):
    data = fx.make_val(tmp_path)
    sample = data["samples"][0]
    path = Path(data["solution"])
    lines = path.read_text().splitlines()
    lines[1] = "ILSVRC2012_val_00000001," + " ".join([sample.wnid, *bad_box(field, value)])
    path.write_text("\n".join(lines) + "\n")
    listing = val_from_solution(data["val"], data["solution"], with_boxes_only=True)  # never raises
    assert len(listing.records) == 24 and not listing.problems
    record = listing.records[0]
    if stage == "listing":
        expected = f"{path}, ILSVRC2012_val_00000001: box 1: {problem}"
        assert record["box_error"] == expected
    else:
        expected = f"{record['path']}: box 1: {problem}"
    assert_only_corrupt(rows_of(listing.records), "ILSVRC2012_val_00000001", expected)
    # Experiments that do not use boxes do not care about them.
    freq = rows_of(listing.records[:2], "frequency", ("original",))
    assert (freq["status"] == "ok").all()


def test_second_box_named_and_other_class_boxes_ignored(tmp_path):
    data = fx.make_train(tmp_path)
    sample = data["samples"][1]  # two own boxes
    other = fx.WNIDS[(sample.label + 1) % 10]
    xml = Path(data["boxes"]) / sample.wnid / f"{sample.stem}.xml"
    objects = (f"<object><name>{sample.wnid}</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>14</xmax>"
               f"<ymax>10</ymax></bndbox></object>"
               f"<object><name>{other}</name><bndbox><xmin>nan</xmin><ymin>0</ymin><xmax>9</xmax>"
               f"<ymax>9</ymax></bndbox></object>"
               f"<object><name>{sample.wnid}</name><bndbox><xmin>20</xmin><ymin>12</ymin><xmax>4</xmax>"
               f"<ymax>36</ymax></bndbox></object>")
    xml.write_text(f"<annotation>{objects}</annotation>")
    record = next(r for r in train_with_boxes(data["train"], data["boxes"]).records if r["image_id"] == sample.stem)
    assert record["box_error"] == f"{xml}: box 2 ({sample.wnid}): xmin 20 >= xmax 4"


def test_pipeline_runs_through_bad_boxes(tmp_path, ray_local):
    """The whole Ray Data pipeline: three images with bad boxes are corrupt rows, the rest are scored."""
    data = fx.make_val(tmp_path)
    path = Path(data["solution"])
    lines = path.read_text().splitlines()
    bad = {1: ("xmin", "nan", "xmin nan is not finite"), 2: ("ymax", "abc", "ymax 'abc' is not a number"),
           3: ("xmax", "1000", "xmax 1000 is outside the image (width 64)")}
    for n, (field, value, _) in bad.items():
        lines[n] = f"ILSVRC2012_val_{n:08d}," + " ".join([data["samples"][n - 1].wnid, *bad_box(field, value)])
    path.write_text("\n".join(lines) + "\n")
    spec = DataSpec("val_solution", data["val"], solution=data["solution"])
    cfg = AblationConfig("foreground_background", str(tmp_path / "out"), spec, batch_size=8)
    summary = run_ablation(cfg, [ModelSpec("handbuilt", fx.make_center_net)])["handbuilt"]
    rows = pd.read_parquet(tmp_path / "out" / "ablations")
    assert len(rows) == 24 * 3 and summary["corrupt_images"] == 3 and summary["ok_rows"] == 21 * 3
    for n, (_, _, problem) in bad.items():
        got = rows[rows["image_id"] == f"ILSVRC2012_val_{n:08d}"]
        assert (got["status"] == "corrupt").all() and got["error"].str.endswith(f"box 1: {problem}").all()
    ok = rows[rows["status"] == "ok"]
    for condition in CONDITIONS:  # the remaining images are scored exactly as by hand
        expected = sum(fx.predicted(s.centre_class(condition))[0] == s.label for s in data["samples"][3:])
        assert int(ok.loc[ok["condition"] == condition, "correct1"].sum()) == expected


# --- weights --------------------------------------------------------------------------------------

CHOICES = "expected 'pretrained', 'random' or the path (or URL) of a safetensors file or torch state dict"


def micro_state() -> dict:
    return build(get_entry("dev/vit-micro"), "random").state_dict()


def _folder(tmp):
    (tmp / "ckpts").mkdir()
    return str(tmp / "ckpts") + "/", "weights '{w}' is a folder; " + CHOICES


def _missing(tmp):
    return str(tmp / "missing.pt"), "cannot read weights '{w}': no such file; " + CHOICES


def _empty(tmp):
    (tmp / "empty.pt").write_bytes(b"")
    return str(tmp / "empty.pt"), "weights '{w}' is an empty file (0 bytes); " + CHOICES


def _text(tmp):
    (tmp / "notes.pt").write_text("these are not weights\n")
    return str(tmp / "notes.pt"), ("weights '{w}' is not a torch checkpoint (neither a torch.save zip archive "
                                   "nor a pickle); " + CHOICES)


def _truncated(tmp):
    buf = io.BytesIO()
    torch.save(micro_state(), buf)
    (tmp / "cut.pt").write_bytes(buf.getvalue()[:5000])
    return str(tmp / "cut.pt"), ("weights '{w}' is a damaged torch checkpoint (its zip archive is truncated or "
                                 "corrupt); " + CHOICES)


def _text_safetensors(tmp):
    (tmp / "notes.safetensors").write_text("hello")
    return str(tmp / "notes.safetensors"), "weights '{w}' is not a readable safetensors file ("


def _pickled_module(tmp):
    torch.save(build(get_entry("dev/vit-micro"), "random"), tmp / "module.pt")
    return str(tmp / "module.pt"), ("weights '{w}' holds Python objects besides tensors, which are not unpickled "
                                    "for safety; save the model's state_dict() instead; " + CHOICES)


def _other_keys(tmp):
    torch.save({"conv.weight": torch.zeros(2, 2)}, tmp / "other.pt")
    return str(tmp / "other.pt"), ("weights '{w}' do not fit dev/vit-micro: 44 missing keys (e.g. ['cls_token', "
                                   "'pos_embed']), 1 unexpected (e.g. ['conv.weight'])")


def _other_shape(tmp):
    state = micro_state()
    state["head.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp / "shape.pt")
    return str(tmp / "shape.pt"), ("weights '{w}' do not fit dev/vit-micro: 1 tensor(s) of another shape, e.g. "
                                   "head.weight is [3, 3] in the file, [1000, 32] in the model")


def _nan(tmp):
    state = micro_state()
    state["blocks.0.mlp.fc1.weight"][0, :12] = float("nan")
    torch.save({"state_dict": state}, tmp / "nan.pt")
    return str(tmp / "nan.pt"), ("weights '{w}': blocks.0.mlp.fc1.weight has 12 non-finite values (NaN or inf); "
                                 "the checkpoint is damaged")


def _inf_safetensors(tmp):
    from safetensors.torch import save_file

    state = micro_state()
    state["pos_embed"][0, 0, 0] = float("inf")
    save_file(state, tmp / "inf.safetensors")
    return str(tmp / "inf.safetensors"), ("weights '{w}': pos_embed has 1 non-finite value (NaN or inf); "
                                          "the checkpoint is damaged")


WEIGHT_CASES = [_folder, _missing, _empty, _text, _truncated, _text_safetensors, _pickled_module, _other_keys,
                _other_shape, _nan, _inf_safetensors]


def snapshot(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def visualize(weights: str, out: Path, feature: str, capsys) -> tuple[int, list[str]]:
    code = main(["visualize", "--model", "dev/vit-micro", "--weights", weights, "--layer", "0", "--feature",
                 feature, "--steps", "1", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, [line for line in err.splitlines() if "error:" in line]


@pytest.fixture(scope="module")
def written_root(tmp_path_factory):
    """A root with one feature rendered with good weights, which bad runs must leave untouched."""
    root = tmp_path_factory.mktemp("root")
    assert main(["visualize", "--model", "dev/vit-micro", "--weights", "random", "--layer", "0", "--feature",
                 "0", "--steps", "1", "--quiet", "--out", str(root)]) == 0
    return root


@pytest.mark.parametrize("case", WEIGHT_CASES, ids=lambda f: f.__name__.strip("_"))
def test_bad_weights_one_line(tmp_path, case, written_root, capsys):
    capsys.readouterr()
    weights, message = case(tmp_path)
    before = snapshot(written_root)
    code, lines = visualize(weights, written_root, "1", capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("sweep: error: " + message.format(w=weights))
    if not message.endswith("("):
        assert lines[0] == "sweep: error: " + message.format(w=weights)
    assert snapshot(written_root) == before  # nothing rendered, nothing replaced


def test_empty_weights_value_one_line(written_root, capsys):
    capsys.readouterr()
    code, lines = visualize("", written_root, "1", capsys)
    assert code == 2 and len(lines) == 1 and "weights" in lines[0], lines  # or the config validator's line
    with pytest.raises(SweepError, match="^weights: empty value; "):
        read_weights_bytes("")


def test_finite_weights_still_load(tmp_path, capsys):
    state = micro_state()
    torch.save(state, tmp_path / "good.pt")
    code, lines = visualize(str(tmp_path / "good.pt"), tmp_path / "out", "1", capsys)
    assert code == 0 and not lines
    assert len(pd.read_parquet(tmp_path / "out" / "features")) == 1


# --- images ---------------------------------------------------------------------------------------

def png_bytes(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((40, 48, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


IMAGE_CASES = [  # (file name, bytes or None for a folder / nothing, the message with {p} for the path)
    ("empty.jpg", b"", "image {p} is an empty file (0 bytes)"),
    ("text.png", b"hello, not pixels", "{p} is not an image (not a format PIL can read, e.g. JPEG or PNG)"),
    ("cut.png", png_bytes()[:300], "image {p} is damaged: "),
    ("missing.jpg", None, "cannot read {p}: no such file"),
    ("folder.jpg", "dir", "cannot read {p}: it is a folder, not a file"),
]


@pytest.mark.parametrize("name,content,message", IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_unreadable_image_message(tmp_path, name, content, message):
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        decode(str(path))
    text = str(err.value)
    assert "\n" not in text and text.startswith(message.format(p=path))
    if not message.endswith(": "):
        assert text == message.format(p=path)


def test_reference_images_skip_unreadable_files(tmp_path, caplog):
    from sweep.work.tuning import folder_references

    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "a_good.png").write_bytes(png_bytes())
    (ref / "b_empty.png").write_bytes(b"")
    (ref / "c_text.jpg").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        images = folder_references(str(ref), count=8, size=16)
    assert images.shape == (1, 3, 16, 16)
    text = caplog.text
    assert f"image {ref / 'b_empty.png'} is an empty file (0 bytes)" in text
    assert f"{ref / 'c_text.jpg'} is not an image" in text
    (ref / "a_good.png").write_bytes(b"")
    with pytest.raises(SweepError, match="no readable reference images"):
        folder_references(str(ref), count=8, size=16)


def test_activation_maps_mark_an_empty_image_corrupt(tmp_path, ray_local):
    from sweep.data.imagenet import image_folder
    from sweep.pipelines.activation_maps import run_activation_maps

    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(png_bytes(1))
    (images / "b.png").write_bytes(b"")
    frame = run_activation_maps("dev/vit-micro", 0, [3], image_folder(str(images)), str(tmp_path / "out"),
                                weights="random")
    by = frame.set_index("image_id")
    assert by.loc["a", "status"] == "ok" and by.loc["a", "error"] == "" and by.loc["a", "side"] > 0
    assert by.loc["b", "status"] == "corrupt"
    assert by.loc["b", "error"] == f"image {images / 'b.png'} is an empty file (0 bytes)"
    table = pd.read_parquet(tmp_path / "out" / "activation_maps" / "table")
    assert set(table["status"]) == {"ok", "corrupt"}


# --- object storage -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on loopback with a bucket `data` holding a good checkpoint and an empty file."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
    client.create_bucket(Bucket="data")
    buf = io.BytesIO()
    torch.save(micro_state(), buf)
    client.put_object(Bucket="data", Key="micro.pt", Body=buf.getvalue())
    client.put_object(Bucket="data", Key="empty.pt", Body=b"")
    yield endpoint
    server.stop()


@pytest.fixture
def s3_env(s3, monkeypatch):
    """Weights URLs are read with the environment's credentials and endpoint (no storage_options)."""
    import s3fs

    for k, v in {"AWS_ENDPOINT_URL": s3, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    s3fs.S3FileSystem.clear_instance_cache()
    yield s3
    s3fs.S3FileSystem.clear_instance_cache()


S3_WEIGHT_CASES = [
    ("s3://data/missing.pt", "cannot read weights '{w}': no such object; " + CHOICES),
    ("s3://no-such-bucket/w.pt", "cannot read weights '{w}': no such bucket; " + CHOICES),
    ("s3://data/empty.pt", "weights '{w}' is an empty file (0 bytes); " + CHOICES),
]


@pytest.mark.parametrize("weights,message", S3_WEIGHT_CASES)
def test_weights_from_object_storage_in_words(weights, message, s3_env, tmp_path, capsys):
    code, lines = visualize(weights, tmp_path / "out", "1", capsys)
    assert code == 2 and lines == ["sweep: error: " + message.format(w=weights)]
    assert not (tmp_path / "out" / "features").exists()


def test_weights_from_object_storage_load(s3_env, tmp_path, capsys):
    code, lines = visualize("s3://data/micro.pt", tmp_path / "out", "1", capsys)
    assert code == 0 and not lines


def s3_options(endpoint):
    return {"key": "test", "secret": "test", "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}


def test_data_from_object_storage_in_words(s3, tmp_path):
    opts = s3_options(s3)
    cases = [("s3://data/none.jpg", opts, "cannot read s3://data/none.jpg: no such object"),
             ("s3://no-such-bucket/a.jpg", opts, "cannot read s3://no-such-bucket/a.jpg: no such bucket"),
             ("s3://data/a.jpg", s3_options(f"http://127.0.0.1:{free_port()}"),
              "cannot read s3://data/a.jpg: cannot connect to the storage endpoint")]
    for url, options, message in cases:
        with pytest.raises(ValueError) as err:
            decode(url, options)
        assert str(err.value) == message
    data = fx.make_val(tmp_path)
    with pytest.raises(SweepError) as err:
        val_from_solution(data["val"], "s3://data/LOC_val_solution.csv", opts)
    assert str(err.value) == "cannot read val solution 's3://data/LOC_val_solution.csv': no such object"


@pytest.mark.parametrize("code,words", [
    ("AccessDenied", "access denied (check the credentials and the bucket policy)"),
    ("NoSuchKey", "no such object"), ("NoSuchBucket", "no such bucket")])
def test_botocore_client_errors_in_words(code, words):
    exc = botocore.exceptions.ClientError({"Error": {"Code": code, "Message": "..."}}, "GetObject")
    try:
        raise OSError("wrapped") from exc  # s3fs wraps botocore's error in an OSError
    except OSError as wrapped:
        assert storage_error(wrapped, "s3://b/k") == f"cannot read s3://b/k: {words}"
    assert storage_error(botocore.exceptions.NoCredentialsError(), "s3://b/k").startswith(
        "cannot read s3://b/k: no credentials found")

