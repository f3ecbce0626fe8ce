"""jobs/all_models.py submitted to a head started with `ray start --head`, through the Ray Jobs API.
(cluster.yaml and infra/rayjob.yaml are checked in test_cluster_config.py.)"""

import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest
from sweep_checks import assert_exactly_once, free_port, start_ray_head, stop_process_group

from sweep.work.plan import SweepConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_head(own_ray):
    """A head started with `ray start`, with Ray's token authentication and a fresh token, in its own
    process group, temp dir and ports; only that group is ended (never `ray stop`: it ends every Ray
    on the host)."""
    from ray.job_submission import JobSubmissionClient

    port, dash = free_port(), free_port()
    token = secrets.token_hex(32)
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    temp_dir = tempfile.mkdtemp(prefix="ray-jobs-", dir="/tmp")  # short: Ray's socket paths
    head = start_ray_head(temp_dir, port, env, "--num-cpus=2", "--num-gpus=0", "--include-dashboard=true",
                          "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}")
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 180
        while True:
            assert head.poll() is None, "the Ray head exited while starting"
            try:
                # The token goes in the header explicitly: Ray reads RAY_AUTH_MODE once, when imported.
                client = JobSubmissionClient(address, headers={"authorization": f"Bearer {token}"})
                break
            except ConnectionError:
                assert time.time() < deadline, f"the Ray head's dashboard at {address} did not come up"
                time.sleep(1)
        yield client
    finally:
        stop_process_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_submit_smoke_job(ray_head, tmp_path):
    from ray.job_submission import JobStatus

    out = tmp_path / "smoke"
    client = ray_head
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
    assert "attached to the Ray cluster at" in logs and "(RAY_ADDRESS, set by Ray Jobs)" in logs
    assert_exactly_once(SweepConfig.from_dict({"preset": "smoke", "out": str(out)}))

