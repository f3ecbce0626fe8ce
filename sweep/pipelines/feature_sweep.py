"""The distributed sweep on Ray: a thin layer of actors around `BatchRunner`.

The driver validates the whole plan and the results root before any work, skips what the root
already holds, then hands batches to actors through a dispatcher that keeps each actor on the model
it has loaded and sends idle actors to the model with the most work left. GPU workers are elastic:
the autoscaler is asked for the GPUs the plan can use (`request_resources`), a worker starts on each
GPU as its node joins, a worker with nothing left to do is retired, and the request is withdrawn at
the end so the cluster scales down; `workers` in the config fixes the count instead. An actor
that dies is restarted by Ray: the driver waits for it (bounded; not for an elastic worker whose node is gone),
counts one death per process lost, and hands its batch out again; a batch whose worker died
max_attempts times, or that keeps failing (NaN), is recorded as failed, and a re-run retries failed
rows by default. The decisions (dispatch, retries, how many workers) are pure, in `sweep.work.dispatch`.
Each batch is committed by one atomically written Parquet part whose name derives from its content,
so a batch run twice replaces itself: nothing is lost or duplicated.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import posixpath
import tempfile
import time
import uuid
from dataclasses import dataclass

import ray
from ray.autoscaler.sdk import request_resources
from tqdm.auto import tqdm

from sweep.core.errors import SweepError, one_line
from sweep.core.redact import add_redacting_filter, redact
from sweep.method.engine import Engine
from sweep.method.recipe import config_hash
from sweep.store.durable import ClusterFacts, check_durable_root, under_ray_job
from sweep.store.index import read_stored
from sweep.store.layout import FEATURES
from sweep.store.outputs import atomic_write, is_local, open_root, parquet_bytes
from sweep.work.batch import Batch, BatchRunner, failure_rows, library_versions
from sweep.work.dispatch import (
    Dispatcher,
    Ledger,
    Verdict,
    WorkerPlan,
    gpu_slots,
    plan_workers,
    workers_to_start,
    workers_wanted,
)
from sweep.work.plan import SweepConfig, Task, plan_summary
from sweep.work.resume import SweepReport, preflight

log = logging.getLogger(__name__)


#: How long a worker whose process died may take to come back before it is dropped (a node may
#: have to be replaced; a GPU process may take minutes to free its memory).
RESTART_TIMEOUT_S = 300.0
#: How often an unreachable worker is asked whether it is back, and how often the driver looks up.
PROBE_INTERVAL_S = 0.5
#: How often the driver looks for GPUs that joined the cluster (elastic workers).
SCALE_INTERVAL_S = 2.0


@ray.remote(max_restarts=-1, max_task_retries=0)
class SweepWorker:
    """Holds one BatchRunner (and so one loaded model) per worker process."""

    def __init__(self, out: str, storage_options: dict, engine: Engine, allow_cpu_fallback: bool = False,
                 runner: type[BatchRunner] = BatchRunner):
        # A GPU that CUDA cannot use is a SweepError; it is kept and raised by info(), the driver's first
        # call, so the driver gets the exception itself (not a dead actor) and stops the sweep with it.
        self.start_error: SweepError | None = None
        try:
            self.runner = runner(out, storage_options, None, engine, gpu_ids=[str(g) for g in ray.get_gpu_ids()],
                                 allow_cpu_fallback=allow_cpu_fallback)
        except SweepError as exc:
            self.start_error = exc

    def info(self) -> dict:
        if self.start_error is not None:
            raise self.start_error
        ctx = ray.get_runtime_context()
        return {"pid": os.getpid(), "node_id": ctx.get_node_id(), "actor_id": ctx.get_actor_id(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "device": str(self.runner.device)}

    def run(self, batch: Batch) -> dict:
        started = time.perf_counter()
        result = self.runner.run(batch)
        return {"done": [r["feature"] for r in result["rows"]], "failed": result["failed"],
                "seconds": time.perf_counter() - started, "worker": self.info()}


def cluster_facts() -> ClusterFacts:
    """What decides whether a node-local results root is safe: nodes alive, joined or started, Ray job."""
    node = getattr(ray._private.worker, "_global_node", None)  # no public API says who started this Ray
    return ClusterFacts(alive_nodes=sum(1 for n in ray.nodes() if n.get("Alive")),
                        attached=node is None or not node.is_head(), ray_job=under_ray_job())


def worker_plan(config: SweepConfig, n_tasks: int) -> WorkerPlan:
    """Fixed, elastic or CPU workers for this cluster (see `plan_workers`)."""
    res, total = config.resources, ray.cluster_resources()
    return plan_workers(n_tasks, workers=res.workers, max_workers=res.max_workers, gpus=res.num_gpus,
                        cpus=res.num_cpus, cluster_gpus=total.get("GPU", 0.0), cluster_cpus=total.get("CPU", 1.0),
                        can_scale=cluster_facts().attached)


def run_sweep(config: SweepConfig, *, force: bool = False, max_batches: int | None = None,
              progress: bool = True, retry_failed: bool = True,
              restart_timeout: float = RESTART_TIMEOUT_S, shared_filesystem: bool = False,
              runner: type[BatchRunner] = BatchRunner) -> SweepReport:
    """Run a sweep on the Ray instance this process is connected to; returns its report.

    max_batches stops after that many batches (to try a config; the rest resumes on a re-run).
    retry_failed=False keeps rows that failed in earlier runs as done (counted in failed_before).
    restart_timeout: seconds a dead worker may take to restart before it is dropped.
    shared_filesystem: a local path is the same mount on every node (else refused on a cluster).
    runner: what each worker renders batches with; only the benchmarks' rehearsal gives another (a
        stand-in for the GPU math), never the CLI; its KIND is written into the manifest.
    """
    check_durable_root(config.out, is_local(open_root(config.out, config.storage_options)[0]), cluster_facts(),
                       shared_filesystem)  # before anything is written under it
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    tasks, skipped, fs, root, removed, failed_before = preflight(config, force, retry_failed)
    report = SweepReport(run_id, planned=sum(len(t.batch.features) for t in tasks) + len(skipped),
                         skipped=len(skipped), failed_before=failed_before)
    if failed_before:
        log.warning("%d planned result(s) failed in an earlier run and are kept (retry_failed off)", failed_before)
    summary = plan_summary(config, tasks)
    stats = {"planned": 0, "skipped": 0, "done": 0, "failed": 0, "batches": 0, "seconds": 0.0}
    for row in summary:
        report.per_model[row["model"]] = {**stats, "planned": row["features"]}
    for m, *_ in skipped:
        model = report.per_model.setdefault(m, dict(stats))
        model["skipped"] += 1
        model["planned"] += 1
    if max_batches is not None:
        tasks = tasks[:max_batches]
    if not tasks:
        log.info("nothing to do: all %d planned results are already in %s", len(skipped), config.out)
        return report

    handler, log_path = _file_log()
    add_redacting_filter(handler, config.storage_options)  # no credential in driver.log
    manifest = {"run_id": run_id, "config": config.to_dict(), "config_hash": config_hash(config.to_dict()),
                "versions": library_versions(), "runner": runner.KIND, "started_at": _now(), "status": "running",
                "force": force, "removed_for_force": removed, "shared_filesystem": shared_filesystem, "plan": summary}
    _write_json(fs, root, run_id, manifest)
    try:
        _dispatch(config, tasks, fs, root, report, progress, restart_timeout, runner)
        manifest["status"] = "finished"
        try:  # this run's parts into the index cache, so the next resume reads one file (sweep.store.index)
            read_stored(fs, root, cache=True)
        except SweepError as exc:
            log.warning("the feature index cache was not refreshed (%s); the next resume reads the parts", exc)
    except BaseException:
        manifest["status"] = "interrupted"
        raise
    finally:
        manifest.update(finished_at=_now(), counts={k: getattr(report, k) for k in (
            "planned", "skipped", "done", "failed", "failed_before", "worker_failures", "retries", "peak_workers")},
            workers=report.workers)
        _write_json(fs, root, run_id, manifest)
        logging.getLogger().removeHandler(handler)
        handler.close()
        with open(log_path, "rb") as fh:
            atomic_write(fs, posixpath.join(root, "runs", run_id, "driver.log"), fh.read())
        os.unlink(log_path)
    return report


@dataclass
class _Slot:
    """One worker actor, as the driver knows it."""

    handle: object
    incarnation: tuple[str, int] | None = None  # (node, pid) last seen alive; None until it first answers
    loaded: str | None = None  # the model its process holds
    task: Task | None = None  # the batch it runs, or holds while it restarts
    call: ray.ObjectRef | None = None  # its run() or info() in flight
    lost_at: float | None = None  # when its last call failed with RayActorError; None while healthy
    lost_cause: str = ""
    probe_at: float = 0.0
    dropped: bool = False  # given up on, or retired (elastic: nothing left for it)

    @property
    def healthy(self) -> bool:
        return not self.dropped and self.incarnation is not None and self.lost_at is None

    @property
    def idle(self) -> bool:
        return self.healthy and self.call is None and self.task is None


class _Workers:
    """The driver's side of the worker actors: batches out, results and deaths in.

    A call that fails with RayActorError does not mean a death: the actor may be restarting, or only
    unreachable. The worker is probed with info() until it answers; a new process id is one death,
    charged to the batch it was running (held meanwhile, given up after max_attempts deaths). A worker
    that does not answer within restart_timeout seconds is dropped and its batch goes to another.
    """

    def __init__(self, config: SweepConfig, tasks: list[Task], fs, root: str, report: SweepReport,
                 restart_timeout: float, bar, plan: WorkerPlan, runner: type[BatchRunner] = BatchRunner):
        self.runner = runner
        self.config, self.fs, self.root, self.report, self.bar = config, fs, root, report, bar
        self.restart_timeout, self.plan = restart_timeout, plan
        self.opts = {"num_gpus": plan.gpus, "num_cpus": config.resources.num_cpus}
        self.asked = -1  # workers' worth of resources last asked of the autoscaler (elastic)
        self.scale_at = 0.0
        self.unstaffed_since: float | None = None  # since when no worker has been healthy
        self.dead: set[str] = set()
        self.dead_at = 0.0
        self.watch_at = 0.0
        self.dispatcher = Dispatcher(tasks)
        self.ledger = Ledger(config.max_attempts)
        self.slots: list[_Slot] = []
        self.calls: dict[ray.ObjectRef, tuple[int, str]] = {}  # -> (worker, "run" | "info")
        self.seen: dict[str, dict] = {}
        self.last_loss = ""

    def start(self, n_workers: int) -> None:
        for _ in range(n_workers):
            handle = SweepWorker.options(**self.opts).remote(
                self.config.out, self.config.storage_options, self.config.engine,
                self.config.resources.allow_cpu_fallback, self.runner)
            self.slots.append(_Slot(handle))
            self._call(len(self.slots) - 1, "info", handle.info.remote())

    def scale(self) -> None:
        """Elastic: ask the autoscaler for what the work left can use; a worker per GPU slot that joined."""
        if not self.plan.elastic or time.monotonic() < self.scale_at:
            return
        self.scale_at = time.monotonic() + SCALE_INTERVAL_S
        live = [s for s in self.slots if not s.dropped]
        wanted = workers_wanted(len(self.dispatcher) + sum(s.task is not None for s in live),
                                self.config.resources.max_workers)
        if self.plan.autoscale and wanted != self.asked:
            request_resources(bundles=[{"GPU": self.plan.gpus, "CPU": self.opts["num_cpus"]}] * wanted)
            if self.asked < 0:
                log.info("asked the autoscaler for %d worker(s) of %s GPU, %s CPU each", wanted, self.plan.gpus,
                         self.opts["num_cpus"])
            self.asked = wanted
        new = workers_to_start(len(live), gpu_slots(ray.cluster_resources().get("GPU", 0.0), self.plan.gpus), wanted)
        if new:
            log.info("starting %d worker(s) on GPUs that joined (%d already)", new, len(live))
            self.start(new)

    def release(self) -> None:
        """Withdraw the autoscaler request, so that idle GPU nodes are scaled down."""
        if self.asked > 0:
            request_resources(bundles=[])
            self.asked = 0

    def loop(self) -> None:
        while self._busy():
            self.scale()
            self._watch_restarts()
            self._probe_lost()
            if self.calls:
                ready, _ = ray.wait(list(self.calls), num_returns=1, timeout=PROBE_INTERVAL_S)
            else:
                time.sleep(PROBE_INTERVAL_S)
                ready = []
            for ref in ready:
                self._settle(ref)
            self._fill()

    def stop(self) -> None:
        self.report.workers = list(self.seen.values())
        for slot in self.slots:
            ray.kill(slot.handle)

    def _busy(self) -> bool:
        live = [s for s in self.slots if not s.dropped]
        if any(s.task is not None for s in live):
            return True
        if not len(self.dispatcher):
            return False
        if not live and not self.plan.elastic:
            raise SweepError(f"no worker left: every worker died and did not come back ({self.last_loss}); "
                             "finished batches are saved, run the same command again to resume")
        self._check_staffed(live)
        return True

    def _check_staffed(self, live: list[_Slot]) -> None:
        """Work is waiting: stop, with one line, when no worker has run for start_timeout_s."""
        if any(s.healthy for s in live):
            self.unstaffed_since = None
            return
        now = time.monotonic()
        self.unstaffed_since = self.unstaffed_since or now
        timeout = self.config.resources.start_timeout_s
        if now - self.unstaffed_since > timeout:
            gpus = ray.cluster_resources().get("GPU", 0.0)
            raise SweepError(
                f"no worker running for {timeout:g} s (resources.start_timeout_s) with {len(self.dispatcher)} "
                f"batch(es) waiting: workers need {self.plan.gpus:g} GPU and {self.opts['num_cpus']:g} CPU each, "
                f"the cluster has {gpus:g} GPU(s)" + (f"; last worker lost: {self.last_loss}" if self.last_loss else "")
                + "; check that the cluster can add GPU nodes (node types, quotas), or use --cpu; finished "
                "batches are saved, run the same command again to resume")

    def _call(self, i: int, kind: str, ref: ray.ObjectRef) -> None:
        self.slots[i].call = ref
        self.calls[ref] = (i, kind)

    def _fill(self) -> None:
        for i, slot in enumerate(self.slots):
            if slot.idle:
                task = self.dispatcher.next(slot.loaded)
                if task is not None:
                    slot.task, slot.loaded = task, task.batch.model
                    self._call(i, "run", slot.handle.run.remote(task.batch))
                elif self.plan.elastic:
                    self._retire(i)

    def _retire(self, i: int) -> None:
        """Elastic: a worker with nothing left to do frees its GPU (a retry later starts a new one)."""
        slot = self.slots[i]
        slot.dropped = True
        if slot.loaded is not None:
            self.dispatcher.release(slot.loaded)
        log.info("worker %d: nothing left for it, retired", i)
        ray.kill(slot.handle, no_restart=True)

    def _probe_lost(self) -> None:
        now = time.monotonic()
        lost = [i for i, s in enumerate(self.slots) if not s.dropped and s.lost_at is not None]
        gone = self._dead_nodes() if lost and self.plan.elastic else set()
        for i in lost:
            slot = self.slots[i]
            if slot.incarnation is not None and slot.incarnation[0] in gone:
                # Elastic: its node is gone (preempted), so is its process; its batch goes to another
                # worker now, and a new worker starts when a GPU joins (no waiting for Ray's restart).
                self._drop(i, f"its node {slot.incarnation[0][:8]} was lost ({slot.lost_cause})")
            elif now - slot.lost_at > self.restart_timeout:
                self._drop(i, f"it did not come back within {self.restart_timeout:g} s ({slot.lost_cause})")
            elif slot.call is None and now >= slot.probe_at:
                self._call(i, "info", slot.handle.info.remote())

    def _watch_restarts(self) -> None:
        """A worker whose process died between two batches gets its next run() queued by Ray until the
        restart finishes; a restart that hangs (a process stuck in __init__) would hold that call, and
        the sweep, forever. So every SCALE_INTERVAL_S the GCS is asked for the state of each worker with
        a call in flight: one that is restarting counts as lost from then on, and `_probe_lost` drops
        it after restart_timeout like any other (a worker that comes back in time just goes on)."""
        if time.monotonic() < self.watch_at:
            return
        self.watch_at = time.monotonic() + SCALE_INTERVAL_S
        for slot in self.slots:
            if slot.dropped or slot.lost_at is not None or slot.call is None or slot.incarnation is None:
                continue
            state = _actor_state(slot.handle)
            if state in ("RESTARTING", "PENDING_CREATION", "DEPENDENCIES_UNREADY"):
                slot.lost_at = time.monotonic()
                slot.lost_cause = f"its process died and Ray is restarting it (state {state})"

    def _dead_nodes(self) -> set[str]:
        """Ids of the nodes the cluster has seen die (looked up at most every SCALE_INTERVAL_S)."""
        if time.monotonic() >= self.dead_at:
            self.dead_at = time.monotonic() + SCALE_INTERVAL_S
            self.dead = {n["NodeID"] for n in ray.nodes() if not n.get("Alive")}
        return self.dead

    def _settle(self, ref: ray.ObjectRef) -> None:
        i, kind = self.calls.pop(ref)
        slot = self.slots[i]
        slot.call = None
        try:
            out = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            if kind == "run":
                self._lost(i, exc)
            elif isinstance(exc, ray.exceptions.ActorDiedError):  # info() to a dead actor: it will not restart
                self._drop(i, f"it cannot be (re)started: {one_line(exc, 200)}")
            else:  # unavailable: still restarting, or unreachable for now
                slot.lost_at = slot.lost_at or time.monotonic()
                slot.lost_cause = slot.lost_cause or one_line(exc, 200)
                slot.probe_at = time.monotonic() + PROBE_INTERVAL_S
        except ray.exceptions.RayTaskError as exc:
            if kind == "info" and isinstance(exc.cause, SweepError):  # it cannot start (unusable GPU): stop
                raise SweepError(str(exc.cause)) from None
            if kind == "info":
                self._drop(i, f"it does not answer: {one_line(exc, 200)}")
            else:
                task, slot.task = slot.task, None
                self._task_error(task, exc)
        else:
            if kind == "run":
                task, slot.task = slot.task, None
                self._done(task, out)
                out = out["worker"]
            self._alive(i, out)

    def _lost(self, i: int, exc: Exception) -> None:
        """A run() failed because its actor is dead or unreachable: find out which, holding its batch."""
        slot = self.slots[i]
        slot.lost_at, slot.lost_cause, slot.probe_at = time.monotonic(), one_line(exc, 200), 0.0
        if slot.loaded is not None:
            self.dispatcher.release(slot.loaded)
        slot.loaded = None

    def _alive(self, i: int, info: dict) -> None:
        """The worker answered: if its process changed since it was last seen, that was one death."""
        slot = self.slots[i]
        incarnation = (info["node_id"], info["pid"])
        died = slot.incarnation is not None and incarnation != slot.incarnation
        if slot.incarnation is None or died:
            log.info("worker %d: pid %s on node %s, GPUs %s, device %s", i, info["pid"], info["node_id"][:8],
                     info["gpu_ids"], info["device"])
            self.seen.setdefault(info["actor_id"], info)
        if died:
            self.report.worker_failures += 1
        task, cause = (slot.task, slot.lost_cause) if slot.lost_at is not None else (None, "")
        if slot.lost_at is not None:
            what = f"running {task.batch.model} layer {task.batch.layer}" if task else "while idle"
            if died:
                log.warning("worker %d died %s (%s); restarted as pid %s", i, what, cause, info["pid"])
            else:
                log.warning("worker %d was unreachable %s (%s); it is back", i, what, cause)
            slot.task = None
        elif died:
            log.warning("worker %d died while idle; restarted as pid %s", i, info["pid"])
        slot.incarnation, slot.lost_at, slot.lost_cause = incarnation, None, ""
        self.report.peak_workers = max(self.report.peak_workers, sum(s.healthy for s in self.slots))
        if task is not None:
            self._hand_back(task, died, cause)

    def _drop(self, i: int, why: str) -> None:
        """Give up on a worker (one warning); its batch goes back to the queue."""
        slot = self.slots[i]
        if slot.call is not None:
            self.calls.pop(slot.call, None)
            slot.call = None
        slot.dropped = True
        self.last_loss = why
        self.report.worker_failures += 1
        if slot.loaded is not None:
            self.dispatcher.release(slot.loaded)
        task, slot.task = slot.task, None
        log.warning("dropping worker %d: %s%s", i, why, "; its batch goes to another worker" if task else "")
        ray.kill(slot.handle, no_restart=True)
        if task is not None:
            self._hand_back(task, True, why)

    def _hand_back(self, task: Task, died: bool, cause: str) -> None:
        """A batch whose worker was lost: again, unless its workers died max_attempts times running it."""
        self._apply(task, self.ledger.worker_lost(task, died, cause))

    def _apply(self, task: Task, verdict: Verdict) -> None:
        if verdict.failed:
            self._record_failures(task, verdict.failed)
            self.bar.update(len(verdict.failed))
        if verdict.again is not None:
            self.report.retries += len(verdict.again.batch.features)
            self.dispatcher.put_back(verdict.again)

    def _done(self, task: Task, out: dict) -> None:
        self.report.done += len(out["done"])
        stats = self.report.per_model[task.batch.model]
        stats["done"] += len(out["done"])
        stats["batches"] += 1
        stats["seconds"] += out["seconds"]
        self.bar.update(len(out["done"]))
        if out["failed"]:
            self._retry_or_fail(task, out["failed"])

    def _task_error(self, task: Task, exc: ray.exceptions.RayTaskError) -> None:
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        if isinstance(cause, SweepError):
            # A problem with the config itself (e.g. unreachable weights): every batch would
            # fail the same way, so stop the sweep with the reason instead of retrying.
            raise SweepError(str(cause)) from None
        log.warning("batch %s layer %d failed: %s", task.batch.model, task.batch.layer, one_line(cause, 200))
        self._retry_or_fail(task, {f: f"{type(cause).__name__}: {one_line(cause, 300)}" for f in task.batch.features})

    def _retry_or_fail(self, task: Task, errors: dict[int, str]) -> None:
        self._apply(task, self.ledger.features_failed(task, errors))

    def _record_failures(self, task: Task, errors: dict[int, str]) -> None:
        sub = dataclasses.replace(task.batch, features=tuple(sorted(errors)))
        rows = failure_rows(sub, errors)
        path = posixpath.join(self.root, FEATURES.part(sub.part_name, model=sub.model))
        atomic_write(self.fs, path, parquet_bytes(rows))
        self.report.failed += len(rows)
        self.report.per_model[sub.model]["failed"] += len(rows)
        for f, err in errors.items():
            log.error("%s layer %d %s %d failed for good: %s", sub.model, sub.layer, sub.site, f, err)


def _actor_state(handle) -> str | None:
    """The GCS's state of an actor (ALIVE, RESTARTING, ...), or None when it cannot be read."""
    try:
        from ray._private import state

        return state.actors(actor_id=handle._actor_id.hex()).get("State")
    except Exception:  # noqa: BLE001 - a private API: without it, the watch is skipped, nothing else
        return None


def _dispatch(config: SweepConfig, tasks: list[Task], fs, root: str, report: SweepReport, progress: bool,
              restart_timeout: float, runner: type[BatchRunner] = BatchRunner) -> None:
    plan = worker_plan(config, len(tasks))
    if plan.gpus == 0 and config.resources.num_gpus > 0:
        log.warning("%s (a Ray started by this job cannot add GPU nodes)", plan.reason)
    log.info("%s %d worker(s) (%s): %s GPU, %s CPU each", "up to" if plan.elastic else "starting", plan.count,
             plan.reason, plan.gpus, config.resources.num_cpus)
    total = sum(len(t.batch.features) for t in tasks)
    with tqdm(total=total, disable=not progress, unit="feature", desc="sweep", smoothing=0.1) as bar:
        workers = _Workers(config, tasks, fs, root, report, restart_timeout, bar, plan, runner)
        try:
            if not plan.elastic:
                workers.start(plan.count)
            workers.loop()
        finally:
            workers.stop()
            workers.release()


def _file_log() -> tuple[logging.Handler, str]:
    fd, path = tempfile.mkstemp(prefix="sweep-driver-", suffix=".log")
    os.close(fd)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    if logging.getLogger().level > logging.INFO or logging.getLogger().level == logging.NOTSET:
        logging.getLogger().setLevel(logging.INFO)
    return handler, path


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def _write_json(fs, root: str, run_id: str, data: dict) -> None:
    atomic_write(fs, posixpath.join(root, "runs", run_id, "manifest.json"),
                 json.dumps(redact(data), indent=2, default=str).encode())  # storage_options masked
