"""The sweep driver's decisions without Ray: which batch goes where, and what a failure costs."""

from sweep.work.batch import Batch
from sweep.work.dispatch import Dispatcher, Ledger, workers_wanted
from sweep.work.plan import Task


def _task(model, n, cost, features=(0,)):
    return [Task(Batch(model, i, "mlp", tuple(features)), cost) for i in range(n)]


def test_dispatcher_keeps_models_and_shares_big_ones():
    tasks = _task("big", 8, 10.0) + _task("small", 2, 1.0)
    d = Dispatcher(tasks)
    got = [d.next(None), d.next(None)]
    # Two idle workers both go to the big model: its pending cost per worker is still the largest.
    assert [t.batch.model for t in got] == ["big", "big"]
    got.append(d.next("small"))  # a worker that has 'small' loaded keeps it while it lasts
    assert got[-1].batch.model == "small"
    while (t := d.next("big")) is not None:  # then everything drains, each task exactly once
        got.append(t)
    assert len(d) == 0 and sorted(t.key for t in got) == sorted(t.key for t in tasks)


def test_dispatcher_put_back_goes_first():
    tasks = _task("m", 3, 1.0)
    d = Dispatcher(tasks)
    t = d.next(None)
    d.put_back(t)
    assert d.next("m") is t





def test_a_feature_is_retried_until_max_attempts_then_failed_alone():
    ledger = Ledger(max_attempts=2)
    (task,) = _task("m", 1, 4.0, features=(0, 1, 2, 3))
    first = ledger.features_failed(task, {1: "NaN", 3: "NaN"})
    assert first.failed == {} and first.again.batch.features == (1, 3) and first.again.cost == 2.0
    second = ledger.features_failed(first.again, {1: "NaN again"})  # 3 succeeded on its retry
    assert second.failed == {1: "NaN again"} and second.again is None


def test_a_batch_is_failed_after_its_workers_died_max_attempts_times():
    ledger = Ledger(max_attempts=3)
    (task,) = _task("m", 1, 1.0, features=(5, 6))
    assert ledger.worker_lost(task, died=False, cause="unreachable").again is task  # not a death: free
    assert ledger.worker_lost(task, died=True, cause="OOM").again is task
    assert ledger.worker_lost(task, died=True, cause="OOM").again is task
    last = ledger.worker_lost(task, died=True, cause="OOM")
    assert last.again is None and last.failed == {5: "worker died 3 times running it: OOM",
                                                  6: "worker died 3 times running it: OOM"}
    (other,) = _task("n", 1, 1.0)
    assert ledger.worker_lost(other, died=True, cause="OOM").again is other  # counted per batch


def test_workers_wanted_is_capped_by_the_plan_and_max_workers():
    assert workers_wanted(10, None) == 10 and workers_wanted(10**6, None) == 256
    assert workers_wanted(10, 3) == 3
    assert workers_wanted(2, 8) == 2
    assert workers_wanted(0, 8) == 0


def test_plan_workers_fixed_elastic_or_cpu():
    from sweep.work.dispatch import plan_workers

    common = dict(max_workers=None, gpus=1.0, cpus=1.0, cluster_cpus=8.0)
    fixed = plan_workers(10, workers=4, cluster_gpus=0.0, can_scale=True, **common)
    assert (fixed.count, fixed.gpus, fixed.elastic) == (4, 1.0, False)
    # A joined cluster with no GPU yet may add GPU nodes: elastic, as many as the plan can use.
    joined = plan_workers(10, workers=None, cluster_gpus=0.0, can_scale=True, **common)
    assert (joined.count, joined.gpus, joined.elastic, joined.autoscale) == (10, 1.0, True, True)
    capped = plan_workers(10, workers=None, cluster_gpus=0.0, can_scale=True, **{**common, "max_workers": 3})
    assert capped.count == 3 and capped.elastic
    # A Ray this job started cannot grow: its own GPUs, else CPU workers (one per num_cpus CPUs).
    local_gpus = plan_workers(10, workers=None, cluster_gpus=2.0, can_scale=False, **common)
    assert local_gpus.elastic and local_gpus.gpus == 1.0 and not local_gpus.autoscale
    cpu = plan_workers(10, workers=None, cluster_gpus=0.0, can_scale=False, **common)
    assert (cpu.count, cpu.gpus, cpu.elastic) == (8, 0.0, False) and "no GPU" in cpu.reason
    assert plan_workers(3, workers=None, cluster_gpus=0.0, can_scale=False, **common).count == 3


def test_elastic_growth_follows_gpu_slots_and_work_left():
    from sweep.work.dispatch import gpu_slots, workers_to_start

    assert gpu_slots(3.0, 1.0) == 3 and gpu_slots(1.5, 0.5) == 3 and gpu_slots(0.0, 1.0) == 0
    assert workers_to_start(live=0, slots=0, wanted=5) == 0  # no GPU joined yet
    assert workers_to_start(live=1, slots=3, wanted=5) == 2  # two nodes joined
    assert workers_to_start(live=2, slots=3, wanted=2) == 0  # the work left needs no more
    assert workers_to_start(live=3, slots=2, wanted=5) == 0  # a node left: its worker restarts elsewhere
