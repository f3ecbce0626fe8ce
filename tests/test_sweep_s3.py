"""The sweep against a real S3-protocol server on loopback (moto's server), read back with pandas."""

import socket

import boto3
import pytest
import ray
import s3fs
from moto.server import ThreadedMotoServer

from sweep.distributed import run_sweep
from sweep.errors import SweepError
from sweep.plan import SweepConfig
from sweep_checks import assert_exactly_once


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket="results")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield endpoint
    ray.shutdown()
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


def test_unreachable_endpoint_fails_before_any_work():
    opts = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{free_port()}"},
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}
    cfg = SweepConfig.from_dict({"preset": "smoke", "out": "s3://results/x", "storage_options": opts})
    with pytest.raises(SweepError, match="is not writable"):
        run_sweep(cfg, progress=False)
