"""Sanity check of the fake autoscaling cluster (tests/fake_cluster.py), in one test to stay fast:
demand brings GPU nodes up, a killed node leaves, cleared demand reads as none, and teardown leaves no
process of the cluster behind."""

import time

import pytest
import ray
from fake_cluster import autoscaling_cluster
from ray.autoscaler.sdk import request_resources


@ray.remote(num_gpus=1)
class GpuHolder:
    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()


def test_fake_cluster_scales_up_loses_a_node_and_drops_demand(record_property):
    timings = {}
    t0 = time.monotonic()
    with autoscaling_cluster(max_gpu_workers=3, head_cpus=2, worker_cpus=1, worker_gpus=1) as cluster:
        timings["start"] = time.monotonic() - t0
        with cluster.client_env():
            ray.init(address=cluster.address, log_to_driver=False)
            try:
                assert cluster.gpu_nodes() == [] and "GPU" not in ray.cluster_resources()

                asked = time.monotonic()
                request_resources(bundles=[{"GPU": 1}] * 3)
                cluster.wait_for("a first GPU node", cluster.gpu_nodes)
                timings["first_gpu_node"] = time.monotonic() - asked
                nodes = cluster.wait_for("3 GPU nodes", lambda: len(ids := cluster.gpu_nodes()) == 3 and ids)
                timings["three_gpu_nodes"] = time.monotonic() - asked
                assert ray.cluster_resources()["GPU"] == 3

                holder = GpuHolder.remote()
                victim = ray.get(holder.node.remote(), timeout=60)
                assert victim in nodes
                timings["gpu_actor_ready"] = time.monotonic() - asked - timings["three_gpu_nodes"]
                killed = time.monotonic()
                cluster.kill_node(victim)
                cluster.wait_for("the killed node gone", lambda: victim not in cluster.alive_nodes())
                timings["node_dead"] = time.monotonic() - killed
                with pytest.raises(ray.exceptions.RayActorError):
                    ray.get(holder.node.remote(), timeout=30)
                del holder

                cleared = time.time()  # the autoscaler's reports carry wall-clock times
                request_resources(bundles=[])
                cluster.wait_for("no pending demand", lambda: cluster.pending_demand(newer_than=cleared) == {})
                timings["demand_cleared"] = time.time() - cleared
            finally:
                ray.shutdown()
        torn_down = time.monotonic()
    timings["teardown"] = time.monotonic() - torn_down
    assert cluster.processes() == {}, "a process of the cluster outlived it"
    for name, seconds in timings.items():
        record_property(f"{name}_s", round(seconds, 1))
    print("fake cluster timings (s):", {k: round(v, 1) for k, v in timings.items()})
