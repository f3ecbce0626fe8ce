"""A job joins an existing Ray only when asked: with another program's private Ray running on the
machine, `jobs/all_models.py` starts its own instance and leaves the foreign one alone; with
RAY_ADDRESS or --address it joins. The foreign head runs in its own process group, temp dir and
ports, and only that group is stopped."""

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from sweep_checks import free_port, start_ray_head, stop_process_group

from sweep.pipelines.cluster import LAUNCHER_CONFIG, choose_target

REPO = Path(__file__).resolve().parents[1]
JOB = str(REPO / "jobs" / "all_models.py")


#: Reads a GCS's job table as JSON without registering a driver there (a driver would be a job).
JOB_TABLE = """
import json, sys
from ray._private.state import GlobalState
from ray._raylet import GcsClientOptions
state = GlobalState()
state._initialize_global_state(GcsClientOptions.create(
    sys.argv[1], None, allow_cluster_id_nil=True, fetch_cluster_id_if_nil=False))
print(json.dumps([{"entrypoint": j["Entrypoint"], "dead": j["IsDead"]} for j in state.job_table()]))
"""


def job_table(address: str, env: dict) -> list[dict]:
    """The job table of the Ray at `address`, read in a child with that Ray's credentials."""
    result = subprocess.run([sys.executable, "-c", JOB_TABLE, address], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def wait_up(address: str, env: dict, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the foreign Ray head exited while starting"
        try:
            job_table(address, env)
            return
        except (AssertionError, subprocess.TimeoutExpired, json.JSONDecodeError, IndexError):
            time.sleep(1)  # not listening yet
    raise AssertionError(f"the foreign Ray head at {address} did not come up")


@dataclass
class Foreign:
    address: str
    env: dict  # its owner's environment: token authentication with a token of its own
    proc: subprocess.Popen

    def auth(self) -> dict:
        return {k: self.env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}

    def drivers(self, script: str = "all_models.py") -> list[dict]:
        return [j for j in job_table(self.address, self.env) if script in j["entrypoint"]]


@pytest.fixture(scope="module")
def foreign(own_ray):
    """Another program's private Ray head: its own temp dir (short: Ray's socket paths), ports, group,
    auth token."""
    temp_dir = tempfile.mkdtemp(prefix="ray-foreign-", dir="/tmp")
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    head = Foreign(f"127.0.0.1:{port}", env, start_ray_head(temp_dir, port, env, "--num-cpus=2", "--num-gpus=0"))
    try:
        wait_up(head.address, env, head.proc)
        yield head
    finally:
        stop_process_group(head.proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


def run_job(out: Path, env_extra: dict, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(env_extra)
    return subprocess.run([sys.executable, JOB, "--preset", "smoke", "--out", str(out), "--quiet", *args],
                          env=env, capture_output=True, text=True, timeout=600, cwd=REPO)


def test_job_beside_a_foreign_ray_starts_its_own(foreign, tmp_path):
    # With the foreign Ray's credentials, so that only the attach rule keeps the job out of it
    # (`ray.init(address="auto")` would find it through `ps` and join).
    result = run_job(tmp_path / "smoke", foreign.auth(), "--max-batches", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "started a local Ray instance" in result.stderr, result.stderr[-3000:]
    assert "attached to" not in result.stderr
    assert foreign.drivers() == [], "the job registered a driver on the foreign Ray"
    df = pd.read_parquet(tmp_path / "smoke" / "features")
    assert len(df) == 4 and (df["status"] == "ok").all()  # two batches of two features
    assert foreign.proc.poll() is None, "the foreign Ray head died"


def test_job_attaches_when_asked(foreign, tmp_path):
    auth = foreign.auth()
    for how, env, args in (("RAY_ADDRESS", {"RAY_ADDRESS": foreign.address}, ()),
                           ("--address", {}, ("--address", foreign.address))):
        before = len(foreign.drivers())
        # One batch is enough to see a driver there; the root is on this machine's disk, which the
        # one-node "cluster" shares, so it is declared shared (a joined cluster refuses a local root).
        result = run_job(tmp_path / how.strip("-"), {**auth, **env}, *args, "--max-batches", "1",
                         "--shared-filesystem")
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"attached to the Ray cluster at {foreign.address} ({how})" in result.stderr, result.stderr[-3000:]
        assert len(foreign.drivers()) == before + 1, f"{how}: no driver of the job on the foreign Ray"
        assert len(pd.read_parquet(tmp_path / how.strip("-") / "features")) > 0
    assert foreign.proc.poll() is None


def test_attach_rule(tmp_path):
    """Only an explicit signal joins a cluster; a `ray up` head is recognized by the launcher's file."""
    assert choose_target(None, {}, tmp_path).local
    assert choose_target(None, {"RAY_ADDRESS": " "}, tmp_path).local
    assert choose_target("local", {"RAY_ADDRESS": "10.0.0.1:6379"}, tmp_path).local
    assert choose_target("auto", {}, tmp_path).address == "auto"
    job = choose_target(None, {"RAY_ADDRESS": "10.0.0.1:6379", "RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}, tmp_path)
    assert (job.address, job.reason) == ("10.0.0.1:6379", "RAY_ADDRESS, set by Ray Jobs")
    (tmp_path / LAUNCHER_CONFIG).write_text("cluster_name: x\n")
    head = choose_target(None, {}, tmp_path)
    assert head.address == "auto" and "ray up" in head.reason
    assert choose_target("1.2.3.4:6379", {}, tmp_path).address == "1.2.3.4:6379"


def test_unreachable_address_is_one_line(tmp_path):
    env = {**os.environ, "RAY_ADDRESS": ""}
    result = subprocess.run([sys.executable, JOB, "--preset", "smoke", "--out", str(tmp_path / "x"), "--quiet",
                             "--address", "not-an-address"], env=env, capture_output=True, text=True,
                            timeout=300, cwd=REPO)
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(errors) == 1 and "not-an-address" in errors[0] and "--address local" in errors[0], errors
    assert "Traceback" not in result.stderr


def test_address_flag_refuses_what_cannot_name_a_cluster():
    import argparse

    from sweep.pipelines.cluster import address_arg, host_port

    for good in ("local", "auto", " 10.0.0.1:6379 ", "ray://head:10001", "[::1]:6379"):
        assert address_arg(good) == good.strip()
    for bad in ("", " ", "10.0.0.1", "10.0.0.1:", ":6379", "h:0", "h:65536", "h:abc", "http://h:80", "h :1"):
        with pytest.raises(argparse.ArgumentTypeError, match="--address local"):
            address_arg(bad)
    assert host_port("ray://head:10001") == ("head", 10001) and host_port("[::1]:6379") == ("::1", 6379)
    assert host_port("auto") is None and host_port("local") is None


def dead_address_run(tmp_path, port: int) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": ""}
    return subprocess.Popen([str(Path(sys.executable).with_name("sweep")), "run", "--model", "dev/vit-micro",
                             "--weights", "random", "--features", "1", "--layers", "0", "--steps", "1", "--cpu",
                             "--quiet", "--out", str(tmp_path / "out"), "--address", f"127.0.0.1:{port}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)


def test_dead_address_is_one_line_within_30_s_and_sigterm_ends_it(tmp_path):
    """Nobody answers at the address: one line naming it, well within 30 s (Ray's own client retries
    for minutes and does not end on SIGTERM); SIGTERM while it waits ends it at once; nothing made."""
    import signal

    port = free_port()
    started = time.monotonic()
    proc = dead_address_run(tmp_path, port)
    _, err = proc.communicate(timeout=60)
    took = time.monotonic() - started
    errors = [line for line in err.splitlines() if "error:" in line]
    assert proc.returncode == 2 and took < 30, (proc.returncode, took, err[-2000:])
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and "nothing answers" in errors[0], errors
    assert "Traceback" not in err and not (tmp_path / "out").exists()

    proc = dead_address_run(tmp_path, port)
    time.sleep(6)  # imports and the plan (about 4 s), then the wait for the address
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert time.monotonic() - sent < 3 and proc.returncode == -signal.SIGTERM
    assert not (tmp_path / "out").exists()
