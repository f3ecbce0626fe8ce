"""The sweep against a real S3-protocol server on loopback (moto's server), read back with pandas."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import s3fs
from moto.server import ThreadedMotoServer
from sweep_checks import assert_exactly_once, free_port

from sweep.core.errors import SweepError
from sweep.pipelines.feature_sweep import run_sweep
from sweep.work.plan import SweepConfig


@pytest.fixture(scope="module")
def s3_endpoint(ray_local):
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket="results")
    yield endpoint
    server.stop()


def options(endpoint):
    return {"key": "test", "secret": "test", "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}


def test_sweep_to_s3_and_back(s3_endpoint):
    opts = options(s3_endpoint)
    cfg = SweepConfig.from_dict({"preset": "smoke", "out": "s3://results/run1", "storage_options": opts,
                                 "resources": {"num_gpus": 0, "num_cpus": 0.5, "workers": 2}})
    report = run_sweep(cfg, progress=False)
    assert report.done == 24
    fs = s3fs.S3FileSystem(**opts)
    df = assert_exactly_once(cfg, fs=fs, storage_options=opts)
    assert set(df["model"]) == {"dev/vit-micro", "dev/deit-micro-distilled"}
    assert fs.ls("results/run1/runs")  # manifest and log live in the bucket too
    again = run_sweep(cfg, progress=False)  # resume works through S3 as well
    assert (again.done, again.skipped) == (0, 24)


def test_missing_bucket_fails_before_any_work(s3_endpoint):
    cfg = SweepConfig.from_dict({"preset": "smoke", "out": "s3://no-such-bucket/run",
                                 "storage_options": options(s3_endpoint)})
    with pytest.raises(SweepError, match="results root 's3://no-such-bucket/run' is not writable") as err:
        run_sweep(cfg, progress=False)
    assert "\n" not in str(err.value)


@pytest.fixture
def strict_s3_endpoint():
    """A second moto server that checks credentials (INITIAL_NO_AUTH_ACTION_COUNT=0)."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_bad_credentials_fail_before_any_work(strict_s3_endpoint, tmp_path, ray_local):
    cfg = SweepConfig.from_dict({"preset": "smoke", "out": "s3://results/run",
                                 "storage_options": {"key": "wrong", "secret": "wrong", "client_kwargs": {
                                     "endpoint_url": strict_s3_endpoint, "region_name": "us-east-1"}}})
    with pytest.raises(SweepError) as err:
        run_sweep(cfg, progress=False)
    message = str(err.value)
    assert "is not writable" in message and "Access Key Id you provided does not exist" in message
    assert "\n" not in message


def test_unreachable_endpoint_fails_before_any_work(ray_local):
    opts = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{free_port()}"},
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}
    cfg = SweepConfig.from_dict({"preset": "smoke", "out": "s3://results/x", "storage_options": opts})
    with pytest.raises(SweepError, match="is not writable"):
        run_sweep(cfg, progress=False)


def test_tuning_to_s3_resumes(s3_endpoint):
    from sweep.method.recipe import Recipe
    from sweep.pipelines.tune import TuneJob, run_tune
    from sweep.store.results import Results

    opts = options(s3_endpoint)
    job = TuneJob("dev/vit-micro", "s3://results/tune", lrs=(0.1,), tvs=(1.0, 10.0), layers=(0,), features=1,
                  weights="random", recipe=Recipe(steps=2), reference_count=4, robustness_draws=1,
                  num_gpus=0, num_cpus=0.5, storage_options=opts)
    first = run_tune(job)
    assert (first.ran, first.skipped, first.errors) == (2, 0, [])
    rows = Results("s3://results/tune", opts).tuning(model="dev/vit-micro")
    assert len(rows) == 2
    fs = s3fs.S3FileSystem(**opts)
    assert all(fs.exists(f"results/tune/{p}") for paths in rows["image_paths"] for p in paths)
    again = run_tune(job)
    assert (again.ran, again.skipped) == (0, 2)
