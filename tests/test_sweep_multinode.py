"""Two Ray nodes with fake GPUs: every actor holds its own GPU, and the plan is done exactly once."""

import ray
from sweep_checks import assert_exactly_once

from sweep.pipelines.feature_sweep import run_sweep
from sweep.work.plan import SweepConfig


def test_gpu_pinned_workers_on_two_nodes(two_nodes, tmp_path):
    assert ray.cluster_resources()["GPU"] == 4
    # Batches long enough (40 steps) that every worker has started before the first ones finish the plan.
    cfg = SweepConfig.from_dict({"preset": "smoke", "out": str(tmp_path), "recipe": {"steps": 40},
                                 # the GPUs are fake: their workers compute on the CPU, saying so once each
                                 "resources": {"num_gpus": 1, "num_cpus": 0.25, "allow_cpu_fallback": True}})
    report = run_sweep(cfg, progress=False, shared_filesystem=True)  # both nodes share this machine's disk
    slots = [(w["node_id"], tuple(w["gpu_ids"])) for w in report.workers]
    assert len(slots) == 4, "one worker per GPU"
    assert all(len(g) == 1 for _, g in slots), "each worker holds exactly one GPU"
    assert len(set(slots)) == 4, "no GPU is shared"
    assert len({n for n, _ in slots}) == 2, "both nodes work"
    assert report.done == 24 and report.failed == 0
    assert_exactly_once(cfg)
