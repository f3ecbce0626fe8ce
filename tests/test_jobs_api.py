"""jobs/all_models.py submitted to a head started with `ray start --head`, through the Ray Jobs API.
(cluster.yaml and infra/rayjob.yaml are checked in test_cluster_config.py.)"""

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweep.plan import SweepConfig
from sweep_checks import assert_exactly_once, free_port

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def ray_head():
    port, dash = free_port(), free_port()
    # Ray's token authentication, on for the head and for this client, with a fresh token.
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    env = {**os.environ, "RAY_ADDRESS": ""}
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
                    "--num-cpus=2", "--num-gpus=0", "--disable-usage-stats"],
                   check=True, env=env, capture_output=True, timeout=180)
    try:
        yield f"http://127.0.0.1:{dash}", os.environ["RAY_AUTH_TOKEN"]
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_submit_smoke_job(ray_head, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    out = tmp_path / "smoke"
    address, token = ray_head
    # The token goes in the header explicitly: Ray reads RAY_AUTH_MODE once, when it is imported.
    client = JobSubmissionClient(address, headers={"authorization": f"Bearer {token}"})
    job = client.submit_job(
        # --shared-filesystem: a Ray job's local root is refused otherwise; here head and job share one disk.
        entrypoint=f"{sys.executable} {REPO / 'jobs' / 'all_models.py'} --preset smoke --out {out} "
                   "--shared-filesystem --quiet",
        runtime_env={"env_vars": {k: os.environ[k] for k in (
            "HF_HUB_OFFLINE", "RAY_USAGE_STATS_ENABLED", "AWS_EC2_METADATA_DISABLED") if k in os.environ}},
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        status = client.get_job_status(job)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            break
        time.sleep(1)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "24 done, 0 failed" in logs
    assert "attached to the running Ray cluster" in logs or "Connecting to existing Ray cluster" in logs
    assert_exactly_once(SweepConfig.from_dict({"preset": "smoke", "out": str(out)}))

