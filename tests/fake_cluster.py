"""A local autoscaling Ray cluster for tests (tests/test_elastic.py): Ray's fake multinode provider on loopback.

`ray start --head` runs with RAY_FAKE_CLUSTER=1 and an autoscaling config whose provider is
`fake_multinode`: the head's autoscaler monitor "launches" a worker node by starting one more raylet
(plus its agents) on this machine, so scale-up, idle scale-down and node loss can be tested without a
cloud. Everything is this cluster's own: a short temp dir, every port, an auth token, and the head's
process group, which also holds the fake nodes (the monitor starts them; nothing calls setsid).

Facts of the installed Ray (2.60) that shape it:
- The autoscaler that runs by default is v1 (StandardAutoscaler). It publishes what it sees (demand,
  nodes) once per AUTOSCALER_UPDATE_INTERVAL_S as JSON in the GCS KV key `__autoscaling_status`.
- A fake node whose raylet dies stays in the v1 autoscaler's books as "pending, uninitialized" (the
  fake provider can't mark nodes up to date, so the liveness check skips them): it is not replaced
  while demand lasts, and it is removed once it has been idle for idle_timeout_minutes.
- v2 cannot run `type: fake_multinode` from this wheel: its config reader loads that provider's
  defaults from fake_multi_node/example.yaml, which the wheel lacks, and the monitor dies, taking the
  head down. So v2 is switched off here.
- Token auth: `ray start --head` turns token auth on by itself when ~/.ray/auth_token exists (this
  machine has one), but a client given an explicit address only sends a token when RAY_AUTH_MODE=token.
  So the head gets RAY_AUTH_MODE=token and a fresh token of its own (RAY_AUTH_TOKEN, which wins over
  ~/.ray/auth_token), and clients need the same two variables.
- Ray rewrites a bootstrap address 127.0.0.1 to this host's outward IP (where nothing listens), and
  the fake nodes would register with that IP too, unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from sweep_checks import free_port, start_ray_head, stop_process_group

HEAD_NODE_ID = "f" * 51 + "00000"  # the fake provider's fixed head id; workers count up from ...00001
GPU_WORKER = "gpu_worker"
# GCS declares a node dead after health_check_failure_threshold missed checks: ~5 s here, not ~15 s;
# and no workers prestarted for the first driver (one per head CPU): CPU this 2-core machine needs elsewhere.
SYSTEM_CONFIG = {"health_check_period_ms": 1000, "health_check_timeout_ms": 2000,
                 "health_check_failure_threshold": 5, "prestart_worker_first_driver": False}
OBJECT_STORE_BYTES = 100 * 2**20  # per node; the default (30% of RAM each) is needless for four nodes


def autoscaling_config(gcs_address: str, *, head_cpus: int, worker_cpus: int, worker_gpus: int,
                       min_gpu_workers: int, max_gpu_workers: int, idle_timeout_minutes: float,
                       upscaling_speed: float) -> dict:
    """The whole cluster config (the wheel ships no fake_multi_node/example.yaml to fill it in)."""
    provider = {"type": "fake_multinode", "gcs_address": gcs_address,
                # every fake node is on 127.0.0.1: the autoscaler tells them apart by node id
                "use_node_id_as_ip": True,
                "disable_node_updaters": True, "disable_launch_config_check": True,
                "launch_multiple": True}  # else one node per launch request, whatever its count
    return {
        "cluster_name": "fake", "max_workers": max_gpu_workers,
        "provider": provider,
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": head_cpus, "GPU": 0}, "node_config": {}, "max_workers": 0},
            GPU_WORKER: {"resources": {"CPU": worker_cpus, "GPU": worker_gpus,
                                       "object_store_memory": OBJECT_STORE_BYTES},
                         "node_config": {}, "min_workers": min_gpu_workers, "max_workers": max_gpu_workers},
        },
        "head_node_type": "ray.head.default",
        "upscaling_speed": upscaling_speed, "idle_timeout_minutes": idle_timeout_minutes,
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


def _refresh_ray_env() -> None:
    """Make this process's Ray see os.environ again: the auth mode is read into RayConfig once and the
    token is cached (refresh the config first, as ray's own auth test utils do), and
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is read into a module constant at import."""
    from ray._common.utils import env_bool
    from ray._private import ray_constants
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    ray_constants.ENABLE_RAY_CLUSTER = env_bool(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR,
                                                not ray_constants.IS_WINDOWS_OR_OSX)


def _proc_table() -> dict[int, tuple[int, int, str, str]]:
    """pid -> (ppid, pgid, state, cmdline) for every live process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, ppid, pgid = stat.rsplit(")", 1)[1].split()[:3]
        table[int(entry)] = (int(ppid), int(pgid), state, cmdline.strip())
    return table


@dataclass
class FakeCluster:
    address: str  # "127.0.0.1:PORT", for ray.init(address=...)
    env: dict[str, str]  # what a client needs: apply with client_env(), or add to a subprocess's env
    temp_dir: str
    proc: object  # the `ray start --head --block` process, leader of the cluster's process group

    @contextlib.contextmanager
    def client_env(self):
        """This process as a client of the cluster for the block: self.env in os.environ and in Ray's
        caches of it (monkeypatch.setenv alone is not enough once Ray has read them), then restored."""
        if all(os.environ.get(k) == v for k, v in self.env.items()):
            yield  # already applied (nested use): leave a connected driver's state alone
            return
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        _refresh_ray_env()
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            _refresh_ray_env()

    def _gcs(self):
        from ray._raylet import GcsClient

        return GcsClient(address=self.address)

    def alive_nodes(self) -> dict[str, dict[str, float]]:
        """node id (hex) -> total resources, for every alive node, read from the GCS (no driver needed)."""
        from ray.core.generated.gcs_pb2 import GcsNodeInfo

        with self.client_env():
            info = self._gcs().get_all_node_info(timeout=10)
        return {node_id.hex(): dict(node.resources_total) for node_id, node in info.items()
                if node.state == GcsNodeInfo.ALIVE}

    def gpu_nodes(self) -> list[str]:
        """Ids (hex) of the alive nodes that have GPUs."""
        return sorted(n for n, res in self.alive_nodes().items() if res.get("GPU", 0) > 0)

    def autoscaler_status(self) -> dict:
        """The v1 autoscaler's latest report (rewritten each update interval, 1 s here): "time",
        "load_metrics_report" (usage, demand) and "autoscaler_report" (active/pending nodes); {} before the first."""
        with self.client_env():
            raw = self._gcs().internal_kv_get(b"__autoscaling_status", None, timeout=10)
        return json.loads(raw) if raw else {}

    def pending_demand(self, newer_than: float = 0) -> dict[str, list] | None:
        """What the autoscaler still sees as demand, by source; {} when nothing is pending.
        resource_demand: tasks/actors waiting or infeasible, pg_demand: pending placement groups,
        request_demand: ray.autoscaler.sdk.request_resources bundles; each a list of [shape, count].
        None while the latest report is not newer than `newer_than` (a time.time()), so polling after a
        change never takes a report made before it for the answer."""
        status = self.autoscaler_status()
        if status.get("time", 0) <= newer_than:
            return None
        report = status.get("load_metrics_report", {})
        return {k: report[k] for k in ("resource_demand", "pg_demand", "request_demand") if report.get(k)}

    def processes(self) -> dict[int, str]:
        """pid -> command line of every live process of this cluster: the head's process group (fake
        nodes and their workers included), plus anything naming its temp dir that left the group."""
        return {pid: cmd for pid, (_, pgid, state, cmd) in _proc_table().items()
                if state != "Z" and (pgid == self.proc.pid or self.temp_dir in cmd)}

    def kill_node(self, node_id: str) -> list[int]:
        """SIGKILL a fake worker node's raylet and everything under it (its agents and workers), as a
        spot preemption would; returns the pids killed. The GCS sees the node dead within ~5 s."""
        if node_id == HEAD_NODE_ID:
            raise ValueError("kill_node ends worker nodes, not the head")
        victims = self._node_processes(node_id)
        if not victims:
            raise LookupError(f"no raylet of node {node_id} in this cluster")
        return self._kill(victims)

    def _node_processes(self, node_id: str) -> list[int]:
        """This cluster's raylet of `node_id` (fake node ids repeat across fake clusters) and its
        descendants."""
        table = _proc_table()
        todo = [pid for pid, cmd in self.processes().items()
                if "/raylet " in cmd and f"--node_id={node_id} " in cmd]
        found = []
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += [child for child, (ppid, *_) in table.items() if ppid == pid]
        return found

    @staticmethod
    def _kill(pids) -> list[int]:
        pids = list(pids)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def wait_for(self, what: str, predicate, timeout: float = 90, interval: float = 0.5):
        """Poll predicate() until it returns something truthy, and return that; fail after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"not within {timeout:.0f} s: {what}")
            time.sleep(interval)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _quietly(read):
    try:
        return read()
    except Exception:  # noqa: BLE001 - the GCS still starting
        return None


def _log_tail(temp_dir: str) -> str:
    logs = Path(temp_dir, "session_latest", "logs")
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                     for name in ("monitor.err", "gcs_server.err", "raylet.err") if (p := logs / name).exists())


@contextlib.contextmanager
def autoscaling_cluster(max_gpu_workers: int = 3, head_cpus: int = 2, worker_cpus: int = 1,
                        worker_gpus: int = 1, min_gpu_workers: int = 0, idle_timeout_minutes: float = 0.1,
                        upscaling_speed: float = 10.0, start_timeout: float = 60):
    """A fake autoscaling cluster: a head with head_cpus CPUs and no GPU, and up to max_gpu_workers
    `gpu_worker` nodes of {CPU: worker_cpus, GPU: worker_gpus}, launched on demand (tasks/actors
    waiting for resources, or request_resources) and removed after idle_timeout_minutes idle (0.1: 6 s).
    Yields a FakeCluster once the autoscaler has reported; on exit kills the process group (fake nodes
    included) and anything else of the cluster's left, then removes its temp dir."""
    temp_dir = tempfile.mkdtemp(prefix="rfc", dir="/tmp")  # short: Unix socket paths stop at ~107 chars
    port = free_port()
    config = Path(temp_dir, "autoscaling.yaml")
    config.write_text(yaml.safe_dump(autoscaling_config(
        f"127.0.0.1:{port}", head_cpus=head_cpus, worker_cpus=worker_cpus, worker_gpus=worker_gpus,
        min_gpu_workers=min_gpu_workers, max_gpu_workers=max_gpu_workers,
        idle_timeout_minutes=idle_timeout_minutes, upscaling_speed=upscaling_speed)))
    client = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
              "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(client, RAY_FAKE_CLUSTER="1", RAY_enable_autoscaler_v2="0",
               AUTOSCALER_UPDATE_INTERVAL_S="1",  # default 5
               AUTOSCALER_METRIC_PORT=str(free_port()))  # default 44217, which another Ray may hold
    proc = start_ray_head(temp_dir, port, env, f"--num-cpus={head_cpus}", "--num-gpus=0",
                          f"--autoscaling-config={config}", f"--object-store-memory={OBJECT_STORE_BYTES}",
                          f"--system-config={json.dumps(SYSTEM_CONFIG, separators=(',', ':'))}")
    cluster = FakeCluster(f"127.0.0.1:{port}", client, temp_dir, proc)
    try:
        deadline = time.monotonic() + start_timeout
        # The GCS client blocks ~40 s on a port nobody listens on: wait for the port, then for a report.
        while not (_listening(port) and _quietly(cluster.autoscaler_status)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fake cluster did not start (head exit code {proc.poll()})\n"
                                   + _log_tail(temp_dir))
            time.sleep(0.5)
        yield cluster
    finally:
        # SIGKILL first: once fake nodes have registered, SIGTERM leaves the GCS "Stopping GCS server"
        # and the monitor's handler reporting to it, ~16 s until stop_process_group's SIGKILL anyway.
        # The cluster is throwaway; stop_process_group then reaps the head and ends any straggler.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stop_process_group(proc)
        cluster._kill(cluster.processes())  # none expected: the fake nodes are in the head's group
        shutil.rmtree(temp_dir, ignore_errors=True)

