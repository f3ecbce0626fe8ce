"""The atlas published to any fsspec URL (a real S3-protocol server on loopback) and updated
incrementally: a rebuild reads only what changed and writes only what its change touches."""

import os
import posixpath
import re
from urllib.parse import unquote, urljoin

import boto3
import numpy as np
import pytest
import s3fs
from moto.server import ThreadedMotoServer
from sweep_checks import free_port

from benchmarks.bench_atlas import synthetic_root, write_features
from sweep.cli import main
from sweep.views.atlas import build_atlas
from sweep.views.atlas.inputs import list_inputs


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("results")
    shape = synthetic_root(str(path), 60, models=2, layers=3)  # 10 features per layer
    return path, shape


@pytest.fixture
def s3(monkeypatch):
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3fs.S3FileSystem.clear_instance_cache()  # fsspec caches filesystems by arguments, not by the env's endpoint
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="atlas-site")
    yield client
    server.stop()
    s3fs.S3FileSystem.clear_instance_cache()


def test_published_to_s3_and_fetched_back_page_by_page(root, s3, tmp_path, monkeypatch, capsys):
    results, _ = root
    monkeypatch.chdir(tmp_path)
    assert main(["atlas", "--results", str(results), "--out", "s3://atlas-site/site", "--page-size", "4",
                 "--quiet"]) == 0
    assert "model(s) read" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == [], "no local folder named after the URL"

    def get(key):
        obj = s3.get_object(Bucket="atlas-site", Key=key)
        return obj["ContentType"], obj["Body"].read()

    seen, todo, kinds = set(), ["site/index.html"], set()
    while todo:  # every page and image reachable from the index, fetched back from the bucket
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        ctype, body = get(key)
        if key.endswith(".png"):
            assert ctype == "image/png" and body.startswith(b"\x89PNG"), key
            continue
        assert ctype == "text/html; charset=utf-8", key
        kinds.add(key.split("/")[1] if "/" in key[5:] else "index")
        for link in re.findall(r'(?:href|src)="([^"#]+)"', body.decode()):
            if link.startswith(("data:", "http")):
                continue
            todo.append(posixpath.normpath(unquote(urljoin("/" + key, link)))[1:])
    assert kinds == {"index", "models", "features"}
    assert sum(k.startswith("site/features/") for k in seen) == 60
    assert sum(k.endswith("-thumb.png") for k in seen) == 60
    again = build_atlas(str(results), "s3://atlas-site/site", page_size=4)
    assert again["written"] == [] and again["models_read"] == []


def test_a_rebuild_reads_and_writes_only_what_changed(root, tmp_path):
    results, shape = root
    site = tmp_path / "site"
    first = build_atlas(str(results), str(site), page_size=4)
    assert len(first["models_read"]) == 2 and len(first["written"]) > 180
    same = build_atlas(str(results), str(site), page_size=4)
    assert same["written"] == [] and same["models_read"] == [] and same["unchanged"] == len(first["written"])

    copy = tmp_path / "results"  # grow a copy: the module's root stays as it was for the other tests
    import shutil

    shutil.copytree(results, copy)
    site2 = tmp_path / "site2"
    build_atlas(str(copy), str(site2), page_size=4)
    write_features(str(copy), "synthetic/model-1", 2, [10, 11], np.random.default_rng(5))  # 2 new in layer 2
    grown = build_atlas(str(copy), str(site2), page_size=4)
    assert grown["models_read"] == ["synthetic/model-1"], "the unchanged model is not read"
    m = "synthetic_model_1-" + re.search(r"synthetic_model_1-(\w+)", " ".join(grown["written"])).group(1)
    feature_pages = sorted(w for w in grown["written"] if w.startswith("features/"))
    assert feature_pages == [f"features/{m}/2/mlp-{f}.html" for f in (10, 11, 9)], "the new, and 9 (next link)"
    assert sorted(w for w in grown["written"] if w.startswith("img/")) == sorted(
        f"img/{m}/2/mlp-{f}{s}.png" for f in (10, 11) for s in ("", "-thumb"))
    assert f"models/{m}/layer-2-2.html" in grown["written"] and f"models/{m}/layer-0-0.html" not in grown["written"]

    part = next(p for p in list_inputs(*_fs(copy))["synthetic/model-1"].parts if "part-" in p)
    os.remove(copy / part)  # a part leaves the root: its features' pages and images go too
    shrunk = build_atlas(str(copy), str(site2), page_size=4)
    assert shrunk["deleted"] and all(not (site2 / d).exists() for d in shrunk["deleted"])


def _fs(path):
    import fsspec

    return fsspec.filesystem("file"), str(path)


def test_feature_pages_link_the_right_layer_page_and_their_neighbours(root, tmp_path):
    results, _ = root
    site = tmp_path / "site"
    build_atlas(str(results), str(site), page_size=4)
    m = next(p.name for p in (site / "features").iterdir() if p.name.startswith("synthetic_model_0"))
    page = (site / "features" / m / "1" / "mlp-5.html").read_text()
    assert f'href="../../../models/{m}/layer-1-1.html" id="layer"' in page, "feature 5 is on page 2 of 4 per page"
    assert 'id="prev" href="mlp-4.html"' in page and 'id="next" href="mlp-6.html"' in page
    layer_page = (site / "models" / m / "layer-1-1.html").read_text()
    assert 'href="layer-0-0.html" rel="prev"' in layer_page and 'href="layer-2-0.html" rel="next"' in layer_page
    assert 'aria-current="page">2<' in layer_page and '<span class="act">' in layer_page
    assert "iteration" in page and "loss" in page and "&rarr;" in page  # curves with axes, start -> end


def test_bad_site_and_workers_refused(root, tmp_path, capsys):
    results, _ = root
    assert main(["atlas", "--results", str(results), "--out", str(tmp_path / "s"), "--workers", "0"]) == 2
    assert "error: --workers" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_new_templates_render_every_page_again_without_copying_images(root, tmp_path, monkeypatch):
    from sweep.views.atlas import build

    results, _ = root
    site = tmp_path / "site"
    first = build_atlas(str(results), str(site), page_size=4)
    monkeypatch.setattr(build, "templates_digest", lambda: "another-template")
    again = build_atlas(str(results), str(site), page_size=4)
    pages = [w for w in first["written"] if w.startswith("features/")]  # keyed by what they show, salt included
    assert len(pages) == 60 and sorted(w for w in again["written"] if w.startswith("features/")) == sorted(pages)
    assert not [w for w in again["written"] if w.endswith(".png")], "images are still the same rows' images"


@pytest.mark.parametrize("out", ["s3://atlas-site/no-credentials", "s3://no-such-bucket/site"])
def test_s3_site_without_credentials_or_bucket_is_one_line(root, s3, out, monkeypatch, capsys, tmp_path):
    """No credentials (and no instance profile: AWS_EC2_METADATA_DISABLED), or a bucket that is not
    there: one `error:` line naming the site, exit 2, before any page is rendered, nothing written."""
    results, _ = root
    monkeypatch.chdir(tmp_path)
    if "atlas-site" in out:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(key)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        s3fs.S3FileSystem.clear_instance_cache()
    assert main(["atlas", "--results", str(results), "--out", out, "--quiet"]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(lines) == 1 and f"atlas output folder {out!r}" in lines[0], captured.err
    assert "Traceback" not in captured.err and list(tmp_path.iterdir()) == []
    # moto keeps one in-process store for every server: other tests' sites may be in the bucket
    assert s3.list_objects_v2(Bucket="atlas-site", Prefix="no-credentials").get("KeyCount", 0) == 0
    assert "no-such-bucket" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
