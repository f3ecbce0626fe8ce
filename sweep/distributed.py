"""The distributed sweep on Ray: a thin layer of actors around `BatchRunner`.

The driver validates the whole plan and the results root before any work, skips what the root
already holds, then hands batches to actors (one per GPU, or CPU workers) through a dispatcher
that keeps each actor on the model it has loaded and sends idle actors to the model with the most
work left. An actor that dies is restarted by Ray and its batch handed out again; a batch that
keeps failing is recorded as failed. Each batch is committed by one atomically written Parquet part
whose name derives from its content, so a batch run twice replaces itself: nothing is lost or
duplicated.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import logging
import os
import posixpath
import tempfile
import time
import uuid
from dataclasses import dataclass, field

import ray
from tqdm.auto import tqdm

from sweep.batch import (Batch, BatchRunner, check_batch, failure_rows, library_versions, visualization_hash,
                         weights_label)
from sweep.engine import Engine
from sweep.errors import SweepError, one_line
from sweep.models.anatomy import anatomy_of
from sweep.outputs import atomic_write, check_writable, features_dir, is_local, open_root, parquet_bytes
from sweep.plan import SweepConfig, Task, expand, plan_summary
from sweep.recipe import config_hash
from sweep.results import drop_triples, read_index

log = logging.getLogger(__name__)

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


@ray.remote(max_restarts=-1, max_task_retries=0)
class SweepWorker:
    """Holds one BatchRunner (and so one loaded model) per worker process."""

    def __init__(self, out: str, storage_options: dict, engine: Engine):
        self.runner = BatchRunner(out, storage_options, None, engine)

    def info(self) -> dict:
        ctx = ray.get_runtime_context()
        return {"pid": os.getpid(), "node_id": ctx.get_node_id(), "actor_id": ctx.get_actor_id(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "device": str(self.runner.device)}

    def run(self, batch: Batch) -> dict:
        started = time.perf_counter()
        result = self.runner.run(batch)
        return {"done": [r["feature"] for r in result["rows"]], "failed": result["failed"],
                "seconds": time.perf_counter() - started, "worker": self.info()}


@dataclass
class SweepReport:
    """What a sweep did, per model and in total."""

    run_id: str
    planned: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    worker_failures: int = 0
    retries: int = 0
    per_model: dict[str, dict] = field(default_factory=dict)
    workers: list[dict] = field(default_factory=list)

    def table(self) -> str:
        header = ("model", "planned", "skipped", "done", "failed", "batches", "worker s")
        rows = [(m, *(str(round(v[k], 1)) for k in ("planned", "skipped", "done", "failed", "batches", "seconds")))
                for m, v in self.per_model.items()]
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in (header, *rows))


def preflight(config: SweepConfig, force: bool) -> tuple[list[Task], set[Triple], object, str, int]:
    """Everything that can fail before work starts: plan, root access, existing results.

    Returns the tasks still to do, the triples already done, the filesystem and root, and the
    number of old rows removed for --force.
    """
    full = expand(config)
    if not full:
        raise SweepError("the sweep plan is empty: no (model, layer, feature) to visualize")
    if config.weights == "pretrained":
        lacking = sorted({t.batch.model for t in full if not anatomy_of(t.batch.model).entry.has_pretrained})
        if lacking:
            raise SweepError(f"{', '.join(lacking)} has no pretrained weights; use weights: random or a PATH")
    fs, root = open_root(config.out, config.storage_options)
    check_writable(fs, root, config.out)
    index = read_index(fs, root)
    wanted_hash = {}
    for t in full:
        h = _hash_of(t.batch)
        wanted_hash.update((tr, h) for tr in t.triples())
    existing = {(row.model, int(row.layer), row.site, int(row.feature)): row.config_hash
                for row in index.itertuples(index=False)}
    clash = [tr for tr, h in wanted_hash.items() if tr in existing and existing[tr] != h]
    if clash and not force:
        m, layer, site, f = clash[0]
        raise SweepError(f"{len(clash)} planned result(s) already exist under {config.out!r} with a different "
                         f"recipe or weights (e.g. {m} layer {layer} {site} {f}); use another --out, or --force "
                         "to replace them")
    done = {tr for tr in wanted_hash if tr in existing}
    removed = 0
    if force and done:
        removed = drop_triples(fs, index, done)
        done = set()
    return expand(config, skip=done), done, fs, root, removed


def _hash_of(batch: Batch) -> str:
    anatomy, site, recipe, _ = check_batch(batch)
    return visualization_hash(anatomy.entry.key, weights_label(batch.weights, anatomy.entry.tag), batch.layer,
                              site, batch.base_seed, recipe)


def worker_count(config: SweepConfig, n_tasks: int) -> tuple[int, float]:
    """How many workers and how many GPUs each; CPU workers when the cluster has no GPU."""
    res = config.resources
    gpus = res.num_gpus
    total = ray.cluster_resources()
    if res.workers is not None:
        n = res.workers
    elif gpus > 0 and total.get("GPU", 0) >= gpus:
        n = int(total["GPU"] // gpus)
    else:
        if gpus > 0:
            log.warning("the cluster has no GPU: running CPU workers")
        gpus = 0.0
        n = max(1, int(total.get("CPU", 1) // max(res.num_cpus, 1e-3)))
    return max(1, min(n, n_tasks)), gpus


def run_sweep(config: SweepConfig, *, force: bool = False, max_batches: int | None = None,
              progress: bool = True) -> SweepReport:
    """Run a sweep on the Ray instance this process is connected to; returns its report.

    max_batches stops after that many batches (to try a config; the rest resumes on a re-run).
    """
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    tasks, skipped, fs, root, removed = preflight(config, force)
    report = SweepReport(run_id, planned=sum(len(t.batch.features) for t in tasks) + len(skipped),
                         skipped=len(skipped))
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
    manifest = {"run_id": run_id, "config": config.to_dict(), "config_hash": config_hash(config.to_dict()),
                "versions": library_versions(), "started_at": _now(), "status": "running", "force": force,
                "removed_for_force": removed, "plan": summary}
    _write_json(fs, root, run_id, manifest)
    try:
        _dispatch(config, tasks, fs, root, report, progress)
        manifest["status"] = "finished"
    except BaseException:
        manifest["status"] = "interrupted"
        raise
    finally:
        manifest.update(finished_at=_now(), counts={k: getattr(report, k) for k in (
            "planned", "skipped", "done", "failed", "worker_failures", "retries")}, workers=report.workers)
        _write_json(fs, root, run_id, manifest)
        logging.getLogger().removeHandler(handler)
        handler.close()
        with open(log_path, "rb") as fh:
            atomic_write(fs, posixpath.join(root, "runs", run_id, "driver.log"), fh.read())
        os.unlink(log_path)
    return report


def _dispatch(config: SweepConfig, tasks: list[Task], fs, root: str, report: SweepReport,
              progress: bool) -> None:
    n_workers, gpus = worker_count(config, len(tasks))
    opts = {"num_gpus": gpus, "num_cpus": config.resources.num_cpus}
    workers = [SweepWorker.options(**opts).remote(config.out, config.storage_options, config.engine)
               for _ in range(n_workers)]
    log.info("%d workers requested (%s GPU, %s CPU each); on an autoscaling cluster they start as nodes "
             "come up", n_workers, gpus, config.resources.num_cpus)
    if len(ray.nodes()) > 1 and is_local(fs):
        log.warning("the results root %s is a local path on a multi-node cluster: each node writes to its own "
                    "disk unless the path is shared storage", config.out)
    seen_workers: dict[str, dict] = {}
    dispatcher = Dispatcher(tasks)
    attempts: collections.Counter[Triple] = collections.Counter()
    deaths: collections.Counter[str] = collections.Counter()
    loaded: dict[int, str | None] = {i: None for i in range(n_workers)}
    inflight: dict[ray.ObjectRef, tuple[int, Task]] = {}
    total = sum(len(t.batch.features) for t in tasks)

    def submit(i: int) -> None:
        task = dispatcher.next(loaded[i])
        if task is not None:
            loaded[i] = task.batch.model
            inflight[workers[i].run.remote(task.batch)] = (i, task)

    def record_failures(task: Task, errors: dict[int, str]) -> None:
        sub = dataclasses.replace(task.batch, features=tuple(sorted(errors)))
        rows = failure_rows(sub, errors)
        atomic_write(fs, posixpath.join(root, features_dir(sub.model), sub.part_name), parquet_bytes(rows))
        report.failed += len(rows)
        report.per_model[sub.model]["failed"] += len(rows)
        for f, err in errors.items():
            log.error("%s layer %d %s %d failed for good: %s", sub.model, sub.layer, sub.site, f, err)

    def retry_or_fail(task: Task, errors: dict[int, str]) -> None:
        for f in errors:
            attempts[(task.batch.model, task.batch.layer, task.batch.site, f)] += 1
        final = {f: e for f, e in errors.items()
                 if attempts[(task.batch.model, task.batch.layer, task.batch.site, f)] >= config.max_attempts}
        again = tuple(f for f in task.batch.features if f in errors and f not in final)
        if final:
            record_failures(task, final)
            bar.update(len(final))
        if again:
            report.retries += len(again)
            batch = task.batch if again == task.batch.features else dataclasses.replace(task.batch, features=again)
            dispatcher.put_back(Task(batch, task.cost * len(again) / len(task.batch.features)))

    try:
        with tqdm(total=total, disable=not progress, unit="feature", desc="sweep", smoothing=0.1) as bar:
            for i in range(n_workers):
                submit(i)
            while inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1)
                ref = ready[0]
                i, task = inflight.pop(ref)
                model = task.batch.model
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    # The process died (killed, out of memory, node lost): Ray restarts the actor.
                    report.worker_failures += 1
                    deaths[task.key] += 1
                    dispatcher.release(model)
                    loaded[i] = None
                    log.warning("worker %d died running %s layer %d: %s; handing the batch out again", i, model,
                                task.batch.layer, one_line(exc, 160))
                    if deaths[task.key] > 3 * config.max_attempts:
                        retry_or_fail(task, {f: f"worker died: {one_line(exc, 200)}" for f in task.batch.features})
                    else:
                        report.retries += len(task.batch.features)
                        dispatcher.put_back(task)
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                    if isinstance(cause, SweepError):
                        # A problem with the config itself (e.g. unreachable weights): every batch would
                        # fail the same way, so stop the sweep with the reason instead of retrying.
                        raise SweepError(str(cause)) from None
                    log.warning("batch %s layer %d failed: %s", model, task.batch.layer, one_line(cause, 200))
                    retry_or_fail(task, {f: f"{type(cause).__name__}: {one_line(cause, 300)}"
                                         for f in task.batch.features})
                else:
                    if out["worker"]["actor_id"] not in seen_workers:
                        seen_workers[out["worker"]["actor_id"]] = out["worker"]
                        log.info("worker %d: pid %s on node %s, GPUs %s, device %s", i, out["worker"]["pid"],
                                 out["worker"]["node_id"][:8], out["worker"]["gpu_ids"], out["worker"]["device"])
                    report.done += len(out["done"])
                    stats = report.per_model[model]
                    stats["done"] += len(out["done"])
                    stats["batches"] += 1
                    stats["seconds"] += out["seconds"]
                    bar.update(len(out["done"]))
                    if out["failed"]:
                        retry_or_fail(task, out["failed"])
                submit(i)
                for j in range(n_workers):  # a put-back batch may wake an idle worker
                    if j not in {k for k, _ in inflight.values()}:
                        submit(j)
    finally:
        report.workers = list(seen_workers.values())
        for w in workers:
            ray.kill(w)


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
                 json.dumps(data, indent=2, default=str).encode())
