"""Elastic GPU workers on a local autoscaling cluster (Ray's fake multinode provider, tests/fake_cluster.py).

The sweep starts with no GPU node: it asks the autoscaler for GPUs, a worker starts on each GPU node
as it joins (3 at most here), one node is killed mid-sweep like a spot preemption, and the plan is
still done exactly once; at the end the sweep withdraws its request and the demand drops to zero.
The cluster is this test's own (process group, temp dir, ports, token) and leaves no process behind.
"""

import threading
import time
from pathlib import Path

import ray
from fake_cluster import autoscaling_cluster
from sweep_checks import assert_exactly_once

from sweep.pipelines.feature_sweep import run_sweep
from sweep.work.plan import SweepConfig


def alive_workers() -> int:
    """Sweep workers whose actor is up, from the GCS (the driver's own count is not reachable)."""
    from ray._private import state

    return sum(1 for a in state.actors().values() if a["ActorClassName"] == "SweepWorker" and a["State"] == "ALIVE")


def test_sweep_scales_to_gpu_nodes_survives_a_lost_node_and_releases_them(tmp_path, own_ray):
    # 3 blocks x 10 features, one per batch, 120 steps: long enough for 3 nodes to join and one to die.
    config = SweepConfig.from_dict({
        "out": str(tmp_path / "out"), "models": ["dev/vit-micro"], "weights": "random",
        "features": {"count": 10}, "features_per_batch": 1, "recipe": {"steps": 120},
        # the GPUs are fake: their workers compute on the CPU, saying so once each
        "resources": {"num_gpus": 1, "num_cpus": 1, "allow_cpu_fallback": True, "start_timeout_s": 120}})
    with autoscaling_cluster(max_gpu_workers=3, head_cpus=2, worker_cpus=1, worker_gpus=1) as cluster:
        with cluster.client_env():
            ray.init(address=cluster.address, log_to_driver=False)
            try:
                assert cluster.gpu_nodes() == [], "the sweep starts with no GPU node"
                outcome = {}

                def sweep():
                    try:  # every node is this machine: the local root is one shared disk
                        outcome["report"] = run_sweep(config, progress=False, shared_filesystem=True)
                    except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
                        outcome["error"] = exc

                driver = threading.Thread(target=sweep)
                driver.start()
                parts = lambda: list(Path(config.out, "features").rglob("*.parquet"))  # noqa: E731
                # a worker per node up (its actor created: a node may be up while its worker still imports
                # torch for it under load), and 2 batches done
                nodes = cluster.wait_for("3 GPU nodes with their workers and 2 batches done",
                                         lambda: len(n := cluster.gpu_nodes()) == 3 and alive_workers() == 3
                                         and len(parts()) >= 2 and n, timeout=180)
                assert driver.is_alive(), "the sweep ended before a node could be lost"
                cluster.kill_node(nodes[0])
                done_at_kill = len(parts())
                driver.join(timeout=420)
                assert not driver.is_alive(), "the sweep did not finish"
                if "error" in outcome:
                    raise outcome["error"]
                report = outcome["report"]
                ended = time.time()
                cluster.wait_for("no pending demand after the sweep",
                                 lambda: cluster.pending_demand(newer_than=ended) == {}, timeout=60)
            finally:
                ray.shutdown()
    assert cluster.processes() == {}, "a process of the cluster outlived it"
    assert done_at_kill < 30, "the node was lost mid-sweep"
    assert report.peak_workers == 3, "one worker per GPU node, up to the autoscaler's max of 3"
    assert len({w["node_id"] for w in report.workers}) == 3
    assert report.worker_failures >= 1, "the lost node's worker was counted"
    assert report.done == 30 and report.failed == 0
    assert_exactly_once(config)
