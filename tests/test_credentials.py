"""No credential is ever persisted, and a missing bucket is an error, never created.

Every command that writes runs with fake credentials that have distinctive values, given both in a
config's storage_options and in the environment, against moto's S3 server on loopback; then every
written file (local folders, every object of the bucket, driver logs) and the captured output is
searched for each secret value.
"""

import io
import json
import logging
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
import ray
import s3fs
import yaml
from moto.server import ThreadedMotoServer
from sweep_checks import free_port

from sweep import cli
from sweep.core.redact import MASK, RedactingFilter, redact, redact_text

# storage_options credentials (in the YAML configs) and environment credentials: all fake, all distinct.
OPTS_KEY, OPTS_SECRET, OPTS_TOKEN = "AKIAFAKEKEY123456", "s3cr3t-FAKE-xyz", "tok-FAKE-789"
ENV_KEY, ENV_SECRET, ENV_TOKEN = "AKIAFAKEENVKEY987", "env-s3cr3t-FAKE-abc", "env-tok-FAKE-456"
SECRETS = (OPTS_KEY, OPTS_SECRET, OPTS_TOKEN, ENV_KEY, ENV_SECRET, ENV_TOKEN)
ADMIN = {"aws_access_key_id": "admin", "aws_secret_access_key": "admin", "region_name": "us-east-1"}


@pytest.fixture(scope="module")
def s3(own_ray):
    """moto on loopback with a `cred-results` bucket (moto keeps one store per process: other tests
    own `results`), fake credentials in the environment (Ray workers inherit them), and a local Ray
    instance that the CLI commands attach to."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3fs.S3FileSystem.clear_instance_cache()  # fsspec caches filesystems by arguments, not by the env's endpoint
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, **ADMIN)
    client.create_bucket(Bucket="cred-results")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"AWS_ACCESS_KEY_ID": ENV_KEY, "AWS_SECRET_ACCESS_KEY": ENV_SECRET,
                            "AWS_SESSION_TOKEN": ENV_TOKEN, "AWS_ENDPOINT_URL": endpoint,
                            "AWS_DEFAULT_REGION": "us-east-1"}.items():
            mp.setenv(name, value)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield endpoint, client
        finally:
            ray.shutdown()
            server.stop()
            s3fs.S3FileSystem.clear_instance_cache()


def storage_options(endpoint: str) -> dict:
    return {"key": OPTS_KEY, "secret": OPTS_SECRET, "token": OPTS_TOKEN,
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}


def write_config(path: Path, out: str, options: dict) -> str:
    path.write_text(yaml.safe_dump({
        "models": ["dev/vit-micro"], "layers": [0], "features": {"mode": "first", "count": 2},
        "weights": "random", "recipe": {"steps": 2}, "features_per_batch": 2, "out": out,
        "storage_options": options, "resources": {"num_gpus": 0, "num_cpus": 0.5, "workers": 1}}))
    return str(path)


def tuning_trial(options: dict) -> None:
    """One tuning trial rendered and written the way a `sweep tune` trial is, with storage_options."""
    import torch

    from sweep.method.recipe import Recipe
    from sweep.models.anatomy import anatomy_of
    from sweep.models.build import build
    from sweep.pipelines.tune import TuneJob
    from sweep.work.tuning import run_trial, write_trial

    job = TuneJob("dev/vit-micro", "s3://cred-results/tune", lrs=(0.1,), tvs=(1.0,), layers=(0,), features=1,
                  weights="random", recipe=Recipe(steps=2), reference_count=2, robustness_draws=1,
                  storage_options=options)
    spec = job.specs()[0]
    net = build(anatomy_of(spec.model).entry, "random", torch.device("cpu"))
    write_trial(run_trial(spec, net, torch.device("cpu"), storage_options=options), spec.model, job.out, options)


def sweep(capsys, *argv: str) -> tuple[int, str]:
    """Run the CLI in this process (it attaches to the fixture's Ray); returns (exit code, stdout+stderr)."""
    code = cli.main(["--log-level", "INFO", *argv])
    out, err = capsys.readouterr()
    return code, out + err


def leaked(name: str, data: bytes) -> list[str]:
    """The secrets found in a file's bytes; Parquet is also decoded (compression could hide a value)."""
    texts = [data]
    if name.endswith(".parquet"):
        table = pq.read_table(io.BytesIO(data))
        texts.append(repr(table.to_pylist()).encode() + repr(table.schema.metadata).encode())
    return [s for s in SECRETS if any(s.encode() in t for t in texts)]


def bucket_objects(client, bucket: str = "cred-results") -> dict[str, bytes]:
    """Every object of this module's bucket (moto's store is per process: other modules' buckets,
    made before or after this one, are theirs)."""
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            found[f"s3://{bucket}/{obj['Key']}"] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return found


def test_no_command_persists_a_credential(s3, tmp_path, capsys, caplog):
    endpoint, client = s3
    caplog.set_level(logging.INFO)
    outputs = []
    local_root = tmp_path / "local-root"
    for name, out in (("s3.yaml", "s3://cred-results/run"), ("local.yaml", str(local_root))):
        code, text = sweep(capsys, "run", "--quiet", "--config", write_config(tmp_path / name, out, storage_options(endpoint)))
        assert code == 0, text
        outputs.append(text)
    code, text = sweep(capsys, "visualize", "--model", "dev/vit-micro", "--weights", "random", "--layer", "0",
                       "--feature", "0", "1", "--steps", "2", "--device", "cpu", "--quiet", "--out", "s3://cred-results/vis")
    assert code == 0, text
    outputs.append(text)
    tuning_trial(storage_options(endpoint))  # `sweep tune`'s row writer (the command costs ~20 s of Ray Tune)
    site = tmp_path / "site"
    code, text = sweep(capsys, "atlas", "--results", "s3://cred-results/run", "--out", str(site))
    assert code == 0, text
    outputs.append(text)

    objects = bucket_objects(client)
    local = {str(p): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".yaml"}
    written = {**objects, **local}
    # Everything was written where expected: rows, images, manifests and driver logs of both runs, the
    # visualization, the trial row and the site.
    for prefix in ("s3://cred-results/run/features/", "s3://cred-results/run/runs/", "s3://cred-results/vis/features/",
                   "s3://cred-results/tune/tuning/", str(local_root / "runs"), str(site / "index.html")):
        assert any(p.startswith(prefix) for p in written), f"nothing written under {prefix}"
    logs = [p for p in written if p.endswith("driver.log")]
    assert len(logs) == 2 and all(written[p] for p in logs)
    manifests = [json.loads(written[p]) for p in written if p.endswith("manifest.json")]
    assert len(manifests) == 2
    for m in manifests:  # masked by name; the endpoint (not a credential) is kept for the record
        opts = m["config"]["storage_options"]
        assert (opts["key"], opts["secret"], opts["token"]) == (MASK, MASK, MASK)
        assert opts["client_kwargs"]["endpoint_url"] == endpoint
        assert m["status"] == "finished"
    leaks = {p: found for p, data in written.items() if (found := leaked(p, data))}
    assert not leaks, f"credentials persisted: {leaks}"
    shown = "\n".join(outputs) + caplog.text
    assert not [s for s in SECRETS if s in shown], "a credential was printed or logged"


def test_missing_bucket_is_an_error_and_never_created(s3, tmp_path, capsys):
    endpoint, client = s3
    config = write_config(tmp_path / "nope.yaml", "s3://nope/x", storage_options(endpoint))
    code, text = sweep(capsys, "run", "--quiet", "--config", config)
    errors = [line for line in text.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1, text
    assert errors[0] == ("sweep: error: results root 's3://nope/x' is not writable: bucket 'nope' does not exist "
                         "(create it first; it is never created by this tool)")
    assert "Traceback" not in text
    code, text = sweep(capsys, "visualize", "--model", "dev/vit-micro", "--weights", "random", "--layer", "0",
                       "--feature", "0", "--steps", "2", "--quiet", "--out", "s3://nope/vis")
    assert code == 2 and "bucket 'nope' does not exist" in text, text
    assert "nope" not in {b["Name"] for b in client.list_buckets()["Buckets"]}


def test_error_quoting_a_url_with_userinfo_masks_it(s3, tmp_path, capsys):
    endpoint, client = s3
    out = f"s3://{OPTS_KEY}:{OPTS_SECRET}@nope/x"
    code, text = sweep(capsys, "run", "--quiet", "--config", write_config(tmp_path / "u.yaml", out, {
        "client_kwargs": {"endpoint_url": endpoint}}))
    assert code == 2 and len([line for line in text.splitlines() if "error:" in line]) == 1, text
    assert "s3://***@nope/x" in text and OPTS_KEY not in text and OPTS_SECRET not in text
    assert "nope" not in {b["Name"] for b in client.list_buckets()["Buckets"]}


def test_redact_by_name_and_by_value(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "svc-token-FAKE-1")
    monkeypatch.setenv("DEBUG_FLAG", "not-a-secret-value")
    data = {"storage_options": {"key": "k-FAKE-1234", "Secret": "s-FAKE-5678", "anon": False, "profile": None,
                                "client_kwargs": {"aws_session_token": "st-FAKE-9", "endpoint_url": "http://h:9"},
                                "headers": {"X-Api-Key": "h-FAKE-42"}},
            "errors": ["denied for k-FAKE-1234 (s-FAKE-5678)", "header svc-token-FAKE-1"],
            "weights": "https://user:pw@host/w.pt", "presigned": "https://b/o?X-Amz-Signature=abcd&part=2",
            "note": "not-a-secret-value; key a"}
    clean = redact(data)
    opts = clean["storage_options"]
    assert (opts["key"], opts["Secret"], opts["client_kwargs"]["aws_session_token"], opts["headers"]["X-Api-Key"]) \
        == (MASK,) * 4
    assert (opts["anon"], opts["profile"], opts["client_kwargs"]["endpoint_url"]) == (False, None, "http://h:9")
    assert clean["errors"] == [f"denied for {MASK} ({MASK})", f"header {MASK}"]
    assert clean["weights"] == f"https://{MASK}@host/w.pt"
    assert clean["presigned"] == f"https://b/o?X-Amz-Signature={MASK}&part=2"
    assert clean["note"] == "not-a-secret-value; key a"  # neither a credential's name nor a short value
    assert data["storage_options"]["key"] == "k-FAKE-1234"  # the caller's object is left alone
    # rows: values only (column names are a schema), but known secrets and URLs are still masked
    rows = redact([{"key": "row-value-1", "error": "k-FAKE-1234 failed"}], ["k-FAKE-1234"], by_name=False)
    assert rows == [{"key": "row-value-1", "error": f"{MASK} failed"}]
    assert redact_text("AKIAFAKEKEY123456 s3://a:b@c", ["AKIAFAKEKEY123456", "ab"]) == f"{MASK} s3://{MASK}@c"


def test_log_filter_masks_messages_arguments_and_tracebacks(tmp_path):
    handler = logging.FileHandler(tmp_path / "driver.log")
    handler.addFilter(RedactingFilter({"secret": OPTS_SECRET}))
    logger = logging.getLogger("sweep.test_credentials")
    logger.addHandler(handler)
    try:
        logger.warning("opening %s with %s", f"s3://{ENV_KEY}:x@b/p", OPTS_SECRET)
        try:
            raise RuntimeError(f"refused {OPTS_SECRET}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = (tmp_path / "driver.log").read_text()
    assert "opening s3://***@b/p with ***" in text and "RuntimeError: refused ***" in text
    assert OPTS_SECRET not in text and ENV_KEY not in text
