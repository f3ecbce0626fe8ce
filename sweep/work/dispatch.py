"""Who gets which batch, and what happens to a batch that failed or lost its worker. No Ray here.

The Ray driver (`sweep.pipelines.feature_sweep`) owns the workers; these pure parts own the
decisions, so that they are tested without a cluster:

- `Dispatcher`: which pending batch an idle worker gets next.
- `Ledger`: how often each feature failed and each batch lost its worker; whether a batch goes back
  to the queue or its features are recorded as failed for good (`Verdict`).
- `workers_wanted`: how many workers the plan can use, for the autoscaler request.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass, field

from sweep.work.plan import Task

Triple = tuple[str, int, str, int]


class Dispatcher:
    """Which batch an idle worker gets next.

    A worker keeps its loaded model while that model has batches left; otherwise it moves to the
    model with the most pending cost per worker already on it, so large models are shared and all
    workers finish together.
    """

    def __init__(self, tasks: list[Task]):
        self.pending: dict[str, collections.deque[Task]] = collections.defaultdict(collections.deque)
        for t in tasks:
            self.pending[t.batch.model].append(t)
        self.on_model: collections.Counter[str] = collections.Counter()

    def __len__(self) -> int:
        return sum(len(q) for q in self.pending.values())

    def next(self, loaded: str | None) -> Task | None:
        if loaded is not None and self.pending.get(loaded):
            return self.pending[loaded].popleft()
        candidates = [m for m, q in self.pending.items() if q]
        if not candidates:
            return None
        best = max(candidates, key=lambda m: sum(t.cost for t in self.pending[m]) / (1 + self.on_model[m]))
        if loaded is not None:
            self.on_model[loaded] -= 1
        self.on_model[best] += 1
        return self.pending[best].popleft()

    def put_back(self, task: Task) -> None:
        self.pending[task.batch.model].appendleft(task)

    def release(self, model: str) -> None:
        """A worker that held `model` lost it (it died): it no longer counts as working on it."""
        self.on_model[model] -= 1


@dataclass(frozen=True)
class Verdict:
    """What becomes of a batch after a failure: `again` goes back to the queue (the features still
    worth trying), `failed` maps features given up on to their error, recorded as failed rows."""

    again: Task | None = None
    failed: dict[int, str] = field(default_factory=dict)


class Ledger:
    """Attempts per feature and worker deaths per batch, against max_attempts.

    A feature that raised (e.g. NaN) max_attempts times is failed; a batch whose worker died
    max_attempts times while running it is failed as a whole (it may be what kills the worker).
    A worker that was only unreachable, or dropped without dying, costs the batch nothing.
    """

    def __init__(self, max_attempts: int):
        self.max_attempts = max_attempts
        self.attempts: collections.Counter[Triple] = collections.Counter()
        self.deaths: collections.Counter[str] = collections.Counter()

    def worker_lost(self, task: Task, died: bool, cause: str) -> Verdict:
        if died:
            self.deaths[task.key] += 1
            if self.deaths[task.key] >= self.max_attempts:
                return Verdict(failed={f: f"worker died {self.deaths[task.key]} times running it: {cause}"
                                       for f in task.batch.features})
        return Verdict(again=task)

    def features_failed(self, task: Task, errors: dict[int, str]) -> Verdict:
        b = task.batch
        for f in errors:
            self.attempts[(b.model, b.layer, b.site, f)] += 1
        final = {f: e for f, e in errors.items() if self.attempts[(b.model, b.layer, b.site, f)] >= self.max_attempts}
        again = tuple(f for f in b.features if f in errors and f not in final)
        if not again:
            return Verdict(failed=final)
        batch = b if again == b.features else dataclasses.replace(b, features=again)
        return Verdict(again=Task(batch, task.cost * len(again) / len(b.features)), failed=final)


#: Elastic workers without --max-workers: at most this many (and so many GPUs asked of the autoscaler).
DEFAULT_MAX_WORKERS = 256


def workers_wanted(pending_batches: int, max_workers: int | None) -> int:
    """Workers the plan can keep busy: one per pending batch, capped by max_workers (None: the default)."""
    return max(0, min(pending_batches, max_workers if max_workers is not None else DEFAULT_MAX_WORKERS))


@dataclass(frozen=True)
class WorkerPlan:
    """How the sweep's workers start: `count` now (fixed), or elastically, one per GPU slot as
    GPUs join, up to `count` (the most the plan can use); `gpus` per worker, 0 for CPU workers.
    `autoscale`: the cluster may add nodes, so the autoscaler is asked for the GPUs wanted."""

    count: int
    gpus: float
    elastic: bool
    reason: str
    autoscale: bool = False


def plan_workers(n_tasks: int, *, workers: int | None, max_workers: int | None, gpus: float, cpus: float,
                 cluster_gpus: float, cluster_cpus: float, can_scale: bool) -> WorkerPlan:
    """Fixed with `workers`; elastic GPU workers where the cluster has GPUs or can add them (a
    cluster this job joined may autoscale; a Ray it started itself cannot); else CPU workers."""
    if workers is not None:
        return WorkerPlan(min(workers, n_tasks), gpus, False, f"{workers} workers asked for")
    if gpus > 0 and (cluster_gpus >= gpus or can_scale):
        why = (f"one per {gpus:g} GPU" + (", as GPU nodes join" if can_scale else f" ({cluster_gpus:g} here)"))
        return WorkerPlan(workers_wanted(n_tasks, max_workers), gpus, True, why, autoscale=can_scale)
    n = workers_wanted(min(n_tasks, max(1, int(cluster_cpus // max(cpus, 1e-3)))), max_workers)
    why = "the cluster has no GPU: CPU workers" if gpus > 0 else "CPU workers"
    return WorkerPlan(max(1, n) if n_tasks else 0, 0.0, False, why)


def gpu_slots(cluster_gpus: float, gpus_per_worker: float) -> int:
    """Workers of `gpus_per_worker` the cluster's GPUs hold (0.5 + 0.5 + ... summed as floats)."""
    return int(cluster_gpus / gpus_per_worker + 1e-6)


def workers_to_start(live: int, slots: int, wanted: int) -> int:
    """Elastic growth: new workers for GPU slots that joined, never more than the work left needs."""
    return max(0, min(slots, wanted) - live)
