"""The paper run rehearsed at a fraction of its size: every stage's cost as the work grows.

Real: the paper preset's plan (random weights), the driver, the dispatcher, elastic Ray actors on
Ray's fake autoscaling cluster (`tests/fake_cluster.py`, the provider `tests/test_elastic.py` uses;
`--nodes` fake GPU nodes of 1 GPU and 1 CPU), PNGs and Parquet parts written to local disk and to an
S3-protocol server on loopback (moto's, counting every request it serves: `rehearsal/counting_s3.py`),
resume, the `Results` queries of the README and the atlas. Stand-in: the GPU math only
(`rehearsal/standin.py`), named in every row (`device` "rehearsal") and manifest (`runner`).

A fraction f takes every (1/f)-th (model, layer) of the paper preset's 813 layers x 256 features
(208,128 features over 47 models, 128 per batch), so every size spans the zoo. For each size and
storage, in order (each stage in a process of its own; a row each):
  plan              check_plan of the rehearsal config
  first_run         run_sweep into an empty root
  resume_complete   run_sweep again: nothing to do
  resume_damaged    after deleting 1 % of the Parquet parts and 1 % of the PNGs (seeded choice)
  verify            every planned feature exactly once, ok, its PNG present; workers' memory
  queries           Results.models(), features(model, layer, columns), features(model), features()
  atlas_full        build_atlas into an empty site
  sweep_new         1 % new features (more features of 1 % of the layers) into the same root
  atlas_incremental build_atlas again after them
Columns: wall_s (the stage's process, after its imports; the action alone is in `detail`: plan_s,
sweep_wall_s, query_s, atlas_s), driver_peak_mb (VmHWM of the stage's process), children_peak_mb (the atlas pool),
storage requests by kind (S3 only: list, head, get, put, delete, other; every client counted at the
server), files_written (local: files under the root and site, after minus before; S3: the PUTs).

    .venv/bin/python benchmarks/rehearse.py --fractions 0.005 0.05 --storage local s3 \
        --csv benchmarks/results/2026-12-07-rehearsal-cpu.csv
    .venv/bin/python benchmarks/rehearse.py --figure-from benchmarks/results/2026-12-07-rehearsal-cpu.csv \
        --figure benchmarks/results/2026-12-07-rehearsal-cpu.png
    .venv/bin/python benchmarks/rehearse.py --summary-from benchmarks/results/2026-12-07-rehearsal-cpu.csv

Other modes: `--ablations 5000 25000 50000` (the Ray Data ablations on synthetic ImageNet-layout
val sets, `rehearsal/ablations.py`), `--labels 10000` (the whole labels job: ViT-S's 12 x 1,536 units,
the `common` vocabulary, 10,000 synthetic probe images) and `--label-sums 18432 7609 10000` (its
driver-side reduction alone, `rehearsal/labels.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO), str(REPO / "tests")]
for key, value in {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "HF_HUB_OFFLINE": "1",
                   "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ.setdefault(key, value)

from benchmarks.csv_rows import append_rows  # noqa: E402

KINDS = ("list", "head", "get", "put", "delete", "other")
FIELDS = ["date", "machine", "cpus", "nodes", "storage", "fraction", "features", "batches", "stage", "wall_s",
          "driver_peak_mb", "children_peak_mb", *KINDS, "requests", "requests_per_100_features", "files_written",
          "detail"]
S3_OPTIONS = {"key": "rehearsal", "secret": "rehearsal", "client_kwargs": {"region_name": "us-east-1"}}


def paper_layers() -> list[tuple[str, int]]:
    """The paper preset's (model, layer) pairs in plan order."""
    from sweep.work.plan import SweepConfig, expand

    tasks = expand(SweepConfig.from_dict({"preset": "paper", "out": "unused", "weights": "random"}))
    return list(dict.fromkeys((t.batch.model, t.batch.layer) for t in tasks))


def spread(items: list, k: int) -> list:
    """k of items at a regular stride (first included)."""
    k = max(1, min(k, len(items)))
    return [items[int(i * len(items) / k)] for i in range(k)]


def rehearsal_config(out: str, options: dict, layers: list[tuple[str, int]], features: dict | None = None,
                     nodes: int = 1) -> dict:
    """The paper preset narrowed to these (model, layer) pairs, random weights, elastic fake-GPU workers."""
    models = list(dict.fromkeys(m for m, _ in layers))
    per_model = {m: {"layers": [layer for mm, layer in layers if mm == m]} for m in models}
    config = {"preset": "paper", "out": out, "storage_options": options, "weights": "random", "models": models,
              "per_model": per_model, "max_attempts": 3,
              "resources": {"num_gpus": 1, "num_cpus": 0.5, "allow_cpu_fallback": True, "start_timeout_s": 300,
                            "max_workers": nodes}}
    if features is not None:
        config["features"] = features
    return config


def new_features_config(base: dict, layers: list[tuple[str, int]], total: int, nodes: int) -> tuple[dict, int]:
    """1 % more features: features 256.. of a few of the layers (each at most 256 more)."""
    n_new = max(1, round(total / 100))
    n_layers = math.ceil(n_new / 256)
    per_layer = math.ceil(n_new / n_layers)
    config = rehearsal_config(base["out"], base["storage_options"], spread(layers, n_layers),
                              {"mode": "list", "indices": list(range(256, 256 + per_layer))}, nodes)
    return config, n_layers * per_layer


class CountingS3:
    """The counting moto server in a process of its own."""

    def __init__(self, port: int):
        self.port, self.endpoint = port, f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, str(HERE / "rehearsal" / "counting_s3.py"), str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.counts()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the counting S3 server did not start")
                time.sleep(0.2)

    def counts(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.endpoint}/_counts", timeout=30) as resp:
            return json.loads(resp.read())

    def options(self) -> dict:
        return {**S3_OPTIONS, "client_kwargs": {**S3_OPTIONS["client_kwargs"], "endpoint_url": self.endpoint}}

    def make_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="rehearsal",
                     aws_secret_access_key="rehearsal").create_bucket(Bucket=name)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def count_files(fs, paths: list[str]) -> int:
    n = 0
    for p in paths:
        fs.invalidate_cache(p)
        if fs.exists(p):
            n += len(fs.find(p))
    return n


def run_stage(stage: str, config: dict, env: dict, **extra) -> dict:
    spec = json.dumps({"stage": stage, "config": config, **extra})
    proc = subprocess.run([sys.executable, str(HERE / "rehearsal" / "stages.py"), spec], env=env, cwd=REPO,
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"stage {stage} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def damage(fs, root: str, seed: int = 0) -> dict:
    """Delete 1 % of the Parquet parts and 1 % of the PNGs (at least one of each), seeded."""
    fs.invalidate_cache(root)
    parts = sorted(p for p in fs.find(f"{root}/features") if p.endswith(".parquet"))
    images = sorted(p for p in fs.find(f"{root}/images") if p.endswith(".png"))
    rng = random.Random(seed)
    gone = rng.sample(parts, max(1, len(parts) // 100)) + rng.sample(images, max(1, len(images) // 100))
    fs.rm(gone)
    fs.invalidate_cache(root)
    return {"parts_deleted": max(1, len(parts) // 100), "pngs_deleted": max(1, len(images) // 100)}


def rehearse(fraction: float, storage: str, layers_all, cluster, s3: CountingS3 | None, work: Path, args) -> list[dict]:
    import fsspec

    layers = spread(layers_all, round(fraction * len(layers_all)))
    tag = f"{storage}-{fraction:g}".replace(".", "p")
    if storage == "s3":
        bucket = f"rehearsal-{tag}".lower()
        s3.make_bucket(bucket)
        out, site, options = f"s3://{bucket}/root", f"s3://{bucket}/site", s3.options()
        fs = fsspec.filesystem("s3", **options)
        root_paths = [f"{bucket}/root", f"{bucket}/site"]
    else:
        out, site, options = str(work / tag / "root"), str(work / tag / "site"), {}
        fs = fsspec.filesystem("file")
        root_paths = [out, site]
    config = rehearsal_config(out, options, layers, nodes=args.nodes)
    features = len(layers) * 256
    extra_config, n_new = new_features_config(config, layers, features, args.nodes)
    env = {**os.environ, **cluster.env, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}
    rows = []

    def measure(stage: str, kind: str, cfg: dict, **extra) -> dict:
        counted = s3 is not None and storage == "s3"
        before = s3.counts() if counted else {}
        files_before = 0 if counted else count_files(fs, root_paths)
        result = run_stage(kind, cfg, env, ray=cluster.address, standin_s=args.standin_seconds, **extra)
        after = s3.counts() if counted else {}
        counts = {k: after.get(k, 0) - before.get(k, 0) for k in KINDS} if counted else {k: "" for k in KINDS}
        total = sum(counts.values()) if counted else ""
        row = {"date": dt.date.today().isoformat(), "machine": platform.machine(), "cpus": os.cpu_count(),
               "nodes": args.nodes, "storage": storage, "fraction": fraction, "features": features,
               "batches": math.ceil(features / 128), "stage": stage, "wall_s": result.pop("wall_s"),
               "driver_peak_mb": result.pop("driver_peak_mb"), "children_peak_mb": result.pop("children_peak_mb"),
               **counts, "requests": total,
               "requests_per_100_features": round(100 * total / features, 3) if counted else "",
               # on S3 the PUTs are the files written (a listing costs moto O(objects) per page)
               "files_written": counts["put"] if counted else count_files(fs, root_paths) - files_before,
               "detail": json.dumps(result, sort_keys=True)}
        print(f"{storage:5} {fraction:<6g} {stage:18} {row['wall_s']:9.2f} s  {row['driver_peak_mb']:7.0f} MB  "
              f"requests {total!s:>7}  files {row['files_written']:>7}  {row['detail']}", flush=True)
        rows.append(row)
        return result

    measure("plan", "plan", config)
    measure("first_run", "sweep", config)
    measure("resume_complete", "sweep", config)
    damage_info = damage(fs, root_paths[0])
    measure("resume_damaged", "sweep", config, note=damage_info)
    measure("verify", "verify", config)
    measure("queries", "queries", config)
    atlas = storage == "local" or features <= args.s3_atlas_max
    if atlas:
        measure("atlas_full", "atlas", config, site=site)
    measure("sweep_new", "sweep", extra_config)
    if atlas:
        measure("atlas_incremental", "atlas", config, site=site)
    else:
        print(f"s3 {fraction:g}: atlas stages skipped (over --s3-atlas-max {args.s3_atlas_max} features: "
              "moto serves ~200 requests/s and a full build makes ~5 per feature)", flush=True)
    return rows


ABLATION_FIELDS = ["date", "machine", "cpus", "experiment", "conditions", "images", "stage", "wall_s",
                   "driver_peak_mb", "rows", "exactly_once", "rows_per_s", "detail"]
#: The frequency experiment's conditions in the rehearsal: the paper's grid has 19 (each a filtered copy of
#: every image); 4 of them keep a 50,000-image run within minutes on 2 cores, and the job's cost per row is
#: the same for any condition.
FREQUENCY_CONDITIONS = ("original", "lowpass_gauss_1", "lowpass_fft_0.25", "highpass_gauss_1")


@contextlib.contextmanager
def own_head(prefix: str, cpus: int, object_store_mb: int):
    """A Ray head of the rehearsal's own, yielding (its pid, its address, the env for stages there).

    Its own token (`ray start` turns token auth on where ~/.ray/auth_token exists, and a client then
    needs the mode and the token), never RAY_ADDRESS's Ray; stopped by its process group, nothing else.
    """
    from sweep_checks import free_port, start_ray_head, stop_process_group

    temp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")  # short: Unix socket paths stop at ~107 chars
    port = free_port()
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    base = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    head = start_ray_head(temp, port, {**base, **auth}, f"--num-cpus={cpus}", "--num-gpus=0",
                          f"--object-store-memory={object_store_mb * 2**20}")
    address = f"127.0.0.1:{port}"
    env = {**base, **auth, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}
    try:
        wait_for_head(address, env)
        yield head.pid, address, env
    finally:
        stop_process_group(head)
        shutil.rmtree(temp, ignore_errors=True)


def rehearse_ablations(sizes: list[int], work: Path, args) -> list[dict]:
    """fg/bg and frequency on 50,000-image-style val sets: each size, the bare classifier, a kill and resume."""
    from rehearsal import ablations

    root = str(work / "imagenet")
    started = time.perf_counter()
    ablations.make_val(root, max(sizes))
    print(f"synthetic val set: {max(sizes)} JPEGs in {time.perf_counter() - started:.0f} s", flush=True)
    rows = []
    with own_head("rab", 2, 512) as (_pid, address, env):
        for experiment, conditions in (("foreground_background", None), ("frequency", FREQUENCY_CONDITIONS)):
            conds = len(conditions) if conditions else 3
            times = {}
            for n in sizes:
                cfg = ablations.config(experiment, root, n, str(work / f"abl-{experiment}-{n}"),
                                       list(conditions) if conditions else None)
                result = run_stage("ablation", cfg, env, ray=address, images=n)
                times[n] = result["job_wall_s"]
                rows.append(ablation_row(experiment, conds, n, "job", result))
            bare = run_stage("bare", ablations.config(experiment, root, 2000, "unused", list(conditions) if conditions
                                                      else None), env, images=2000, threads=1)
            rows.append(ablation_row(experiment, conds, 2000, "bare_classifier", bare))
            a, b = sorted(sizes)[-2:] if len(sizes) > 1 else (0, sizes[0])
            steady = (b - a) * conds / max(1e-9, times[b] - times.get(a, 0.0))
            rows[-1]["detail"] = json.dumps({**json.loads(rows[-1]["detail"]), "pipeline_steady_rows_s": round(steady, 1),
                                             "ratio_vs_bare_forward": round(steady / bare["bare_forward_rows_s"], 3),
                                             "ratio_vs_bare_decode_forward":
                                                 round(steady / bare["bare_decode_forward_rows_s"], 3)}, sort_keys=True)
            print(f"{experiment}: steady {steady:.0f} rows/s, bare forward {bare['bare_forward_rows_s']:.0f}, "
                  f"bare decode+forward {bare['bare_decode_forward_rows_s']:.0f}", flush=True)
            if experiment == "foreground_background":
                rows.append(kill_and_resume(ablations, experiment, root, max(sizes), times[max(sizes)], work, env,
                                            address))
    return rows


def rehearse_labels(images: int, work: Path, args) -> list[dict]:
    """The whole labels job at size on a Ray head of its own (4 logical CPUs on this machine's cores: the
    actor's 2 and the decode tasks'), its workers' peak memory sampled from /proc while it runs."""
    import threading

    from rehearsal import ablations

    probe = work / "probe"
    started = time.perf_counter()
    ablations.make_val(str(probe), images)
    print(f"synthetic probe set: {images} JPEGs in {time.perf_counter() - started:.0f} s", flush=True)
    peaks: dict[int, tuple[str, float]] = {}
    done = threading.Event()
    with own_head("rlb", 4, 1024) as (pid, address, env):  # 4 logical CPUs: the actor's 2 and the decode tasks'
        sampler = threading.Thread(target=sample_workers, args=(pid, peaks, done), daemon=True)
        sampler.start()
        try:
            result = run_stage("labels", {}, env, ray=address, images_dir=str(probe / "val"),
                               out=str(work / "labels-root"), actor_cpus=2, vocabulary=args.vocabulary)
        finally:
            done.set()
    by_kind: dict[str, float] = {}
    for name, peak, _ in peaks.values():
        by_kind[name] = max(by_kind.get(name, 0.0), peak)
    busiest = max(peaks.values(), key=lambda p: len(p[2]) if p[0] == "ray::MapWorker" else 0, default=None)
    if busiest and busiest[0] == "ray::MapWorker":  # the labels actor: memory against batches run
        result["actor_rss_growth_mb"] = round(rss_growth(busiest[2]), 1)
    result["worker_peak_mb"] = round(max(by_kind.values(), default=float("nan")), 1)
    result["worker_peaks_mb"] = {k: round(v, 1) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])[:4]}
    wall = result.pop("wall_s")
    row = {"date": dt.date.today().isoformat(), "machine": platform.machine(), "cpus": os.cpu_count(),
           "stage": "labels_job", "images": images, "vocabulary": args.vocabulary, "wall_s": wall,
           "driver_peak_mb": result.pop("driver_peak_mb"),
           "worker_peak_mb": result["worker_peak_mb"], "detail": json.dumps(result, sort_keys=True)}
    print(json.dumps(row), flush=True)
    return [row]


def sample_workers(session: int, peaks: dict, done, every: float = 2.0) -> None:
    """Every `every` s, each Ray worker process (`ray::...`) of the head's session: its resident memory
    (VmRSS) and peak (VmHWM), MiB, by pid, with the process title (task or actor class) it had at its
    peak. peaks[pid] = (name, peak, [(seconds, rss), ...])."""
    start = time.monotonic()
    while not done.wait(every):
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[3]) != session:
                        continue
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    title = fh.read().split(b"\0")[0].decode(errors="replace")
                if not title.startswith("ray::"):
                    continue
                with open(f"/proc/{pid}/status") as fh:
                    status = {ln.split(":")[0]: ln.split()[1] for ln in fh if ln.startswith(("VmHWM:", "VmRSS:"))}
                hwm, rss = int(status["VmHWM"]) / 1024, int(status["VmRSS"]) / 1024
            except (OSError, ValueError, IndexError, KeyError):
                continue
            name = title.split()[0].split("(")[0]
            old_name, old_peak, series = peaks.get(int(pid), (name, 0.0, []))
            series.append((time.monotonic() - start, rss))
            peaks[int(pid)] = (name, hwm, series) if hwm > old_peak else (old_name, old_peak, series)


def rss_growth(series: list[tuple[float, float]]) -> float:
    """Resident memory's growth over a worker's life: its highest in the second half of the samples
    minus its highest in the first half (after the first quarter: start-up, the model's load)."""
    if len(series) < 8:
        return float("nan")
    rss = [r for _, r in series]
    q = len(rss) // 4
    return max(rss[2 * q:]) - max(rss[q:2 * q])


def wait_for_head(address: str, env: dict, timeout: float = 90) -> None:
    code = f"import ray; ray.init(address={address!r}, log_to_driver=False); ray.shutdown()"
    deadline = time.monotonic() + timeout
    while subprocess.run([sys.executable, "-c", code], env=env, capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the rehearsal's Ray head at {address} did not start")
        time.sleep(1)


def kill_and_resume(ablations, experiment: str, root: str, n: int, full_s: float, work: Path, env: dict,
                    address: str) -> dict:
    """The job killed (SIGKILL) halfway through its measured time, then run again: rows exactly once."""
    out = str(work / f"abl-{experiment}-{n}-killed")
    cfg = ablations.config(experiment, root, n, out)
    spec = json.dumps({"stage": "ablation", "config": cfg, "ray": address, "images": n})
    proc = subprocess.Popen([sys.executable, str(HERE / "rehearsal" / "stages.py"), spec], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(full_s / 2)
    killed = proc.poll() is None
    proc.kill()
    proc.wait()
    parts = sum(len(f) for _, _, f in os.walk(out)) if os.path.exists(out) else 0
    result = run_stage("ablation", cfg, env, ray=address, images=n)
    result.update(killed_running=killed, files_when_killed=parts)
    return ablation_row(experiment, 3, n, "resume_after_kill", result)


def ablation_row(experiment: str, conds: int, n: int, stage: str, result: dict) -> dict:
    wall = result.pop("wall_s")
    row = {"date": dt.date.today().isoformat(), "machine": platform.machine(), "cpus": os.cpu_count(),
           "experiment": experiment, "conditions": conds, "images": n, "stage": stage, "wall_s": wall,
           "driver_peak_mb": result.pop("driver_peak_mb"), "rows": result.get("rows", result.get("bare_rows")),
           "exactly_once": result.get("exactly_once", ""),
           "rows_per_s": round(result["rows"] / result["job_wall_s"], 1) if "job_wall_s" in result else "",
           "detail": json.dumps(result, sort_keys=True)}
    print(f"{experiment:22} {n:6d} {stage:18} {wall:8.1f} s  {row['driver_peak_mb']:6.0f} MB  {row['detail']}",
          flush=True)
    return row


def append_csv(path: str, rows: list[dict], fields: list[str] = FIELDS) -> None:
    append_rows(path, rows, fields)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.005, 0.05],
                        help="sizes as fractions of the paper preset's 208,128 features (default 0.005 0.05)")
    parser.add_argument("--storage", nargs="+", choices=("local", "s3"), default=["local", "s3"])
    parser.add_argument("--nodes", type=int, default=4, help="fake GPU nodes (1 GPU, 1 CPU each; at most 16)")
    parser.add_argument("--standin-seconds", type=float, default=0.0, help="seconds the stand-in sleeps per batch")
    parser.add_argument("--s3-atlas-max", type=int, default=20_000, metavar="FEATURES",
                        help="skip the atlas stages on S3 above this many features (default 20000)")
    parser.add_argument("--work", help="folder for local roots (default: a temporary folder, removed after)")
    parser.add_argument("--csv", help="append one row per stage to this CSV")
    parser.add_argument("--figure", help="write the cost-against-size figure here (PNG)")
    parser.add_argument("--figure-from", help="draw the figure from this CSV instead of running")
    parser.add_argument("--ablations", type=int, nargs="+", metavar="IMAGES",
                        help="instead of the sweep: the ablations on synthetic val sets of these sizes (e.g. 5000 "
                        "25000 50000); rows go to --csv with their own columns")
    parser.add_argument("--label-sums", type=int, nargs=3, metavar=("UNITS", "CONCEPTS", "IMAGES"),
                        help="instead of the sweep: the labels job's driver-side reduction alone at this size "
                        "(e.g. 18432 7609 10000: ViT-S's 12 x 1,536 units, the common vocabulary, 10,000 images)")
    parser.add_argument("--labels", type=int, metavar="IMAGES",
                        help="instead of the sweep: the whole labels job over this many synthetic probe images "
                        "(ViT-S's 12 x 1,536 units, the common vocabulary, the ViT-B-32 judge; random weights)")
    parser.add_argument("--vocabulary", default="common",
                        help="--labels: a shipped vocabulary or a file of concepts (default common, 7,609)")
    parser.add_argument("--summary-from", help="print the targets' numbers from this CSV instead of running")
    args = parser.parse_args(argv)
    # SIGTERM ends the rehearsal through its `finally`s: the fake cluster, the S3 server and the Ray
    # head it started go with it (they are its own; nothing else is stopped)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bad = [f for f in args.fractions if not 0 < f <= 1]
    if bad:
        print(f"error: --fractions: each must be in (0, 1]; got {bad[0]}", file=sys.stderr)
        return 2
    if args.standin_seconds < 0 or args.s3_atlas_max < 0:
        print("error: --standin-seconds and --s3-atlas-max must be >= 0", file=sys.stderr)
        return 2
    if not 1 <= args.nodes <= 16:
        print(f"error: --nodes: must be 1 to 16; got {args.nodes}", file=sys.stderr)
        return 2
    if args.summary_from:
        print(summarize(args.summary_from))
        return 0
    if args.figure_from:
        if not args.figure:
            print("error: --figure-from needs --figure (where to write it)", file=sys.stderr)
            return 2
        figure(args.figure_from, args.figure)
        return 0

    if args.label_sums:
        if min(args.label_sums) < 1:
            print("error: --label-sums: UNITS, CONCEPTS and IMAGES must be whole numbers >= 1", file=sys.stderr)
            return 2
        units, concepts, images = args.label_sums
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}
        result = run_stage("label_sums", {}, env, units=units, concepts=concepts, images=images, batch=32)
        print(json.dumps(result, sort_keys=True))
        if args.csv:
            append_csv(args.csv, [{"date": dt.date.today().isoformat(), "machine": platform.machine(),
                                   "cpus": os.cpu_count(), **result}], ["date", "machine", "cpus", *result])
        return 0
    if args.labels:
        if args.labels < 2:
            print("error: --labels: IMAGES must be a whole number >= 2", file=sys.stderr)
            return 2
        work = Path(args.work or tempfile.mkdtemp(prefix="rehearsal-"))
        try:
            rows = rehearse_labels(args.labels, work, args)
        finally:
            if not args.work:
                shutil.rmtree(work, ignore_errors=True)
        if args.csv:
            append_csv(args.csv, rows, list(rows[0]))
        return 0
    if args.ablations:
        if min(args.ablations) < 1:
            print("error: --ablations: sizes must be whole numbers >= 1", file=sys.stderr)
            return 2
        work = Path(args.work or tempfile.mkdtemp(prefix="rehearsal-"))
        try:
            rows = rehearse_ablations(sorted(set(args.ablations)), work, args)
        finally:
            if not args.work:
                shutil.rmtree(work, ignore_errors=True)
        if args.csv:
            append_csv(args.csv, rows, ABLATION_FIELDS)
        return 0

    from fake_cluster import autoscaling_cluster
    from sweep_checks import free_port

    layers_all = paper_layers()
    print(f"paper preset: {len(layers_all)} layers, {len(layers_all) * 256} features", flush=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="rehearsal-"))
    s3 = CountingS3(free_port()) if "s3" in args.storage else None
    all_rows = []
    try:
        with autoscaling_cluster(max_gpu_workers=args.nodes, min_gpu_workers=args.nodes, head_cpus=2, worker_cpus=1,
                                 worker_gpus=1, idle_timeout_minutes=60, start_timeout=120) as cluster:
            cluster.wait_for(f"{args.nodes} fake GPU nodes", lambda: len(cluster.gpu_nodes()) >= args.nodes,
                             timeout=60 + 20 * args.nodes)
            for fraction in args.fractions:
                for storage in args.storage:
                    rows = rehearse(fraction, storage, layers_all, cluster, s3, work, args)
                    all_rows += rows
                    if args.csv:
                        append_csv(args.csv, rows)
                    if not args.work:
                        shutil.rmtree(work / f"{storage}-{fraction:g}".replace(".", "p"), ignore_errors=True)
    finally:
        if s3:
            s3.stop()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    if args.csv:
        print(summarize(args.csv))
        if args.figure:
            figure(args.csv, args.figure)
    return 0


def summarize(csv_path: str) -> str:
    """The issue's targets, read off a CSV of this script: one line per (storage, size), then growth.
    The driver's peak is over the pipeline's stages (not `verify`, the rehearsal's own check); the
    overhead per batch is the worker slots' time not spent in a batch: (workers x wall - worker
    seconds) / batches, start-up included; the atlas ratio compares the builds alone."""
    import pandas as pd

    data = pd.read_csv(csv_path)
    lines = ["storage  features  resume_s  req/100f  peak_driver_mb  overhead_s/batch  worker_rss_growth_mb  "
             "atlas_incr/full"]
    for (storage, features), rows in data.groupby(["storage", "features"], sort=True):
        by = rows.drop_duplicates("stage", keep="last").set_index("stage")
        first = json.loads(by.loc["first_run", "detail"])
        slots = first["peak_workers"] * first["sweep_wall_s"]
        overhead = (slots - first["worker_s"]) / max(1, first["batches"])
        growth = json.loads(by.loc["verify", "detail"]).get("worker_rss_growth_mb")

        def atlas(stage: str) -> float:  # the build alone (older rows: the stage's process)
            return json.loads(by.loc[stage, "detail"]).get("atlas_s") or by.loc[stage, "wall_s"]

        ratio = f"{atlas('atlas_incremental') / atlas('atlas_full'):.3f}" if "atlas_full" in by.index else ""

        req = by.loc["resume_complete", "requests_per_100_features"]
        lines.append(f"{storage:7}  {features:8d}  {by.loc['resume_complete', 'wall_s']:8.2f}  "
                     f"{'' if pd.isna(req) else f'{req:.3f}':>8}  {by.drop(index='verify', errors='ignore')['driver_peak_mb'].max():14.0f}  "
                     f"{overhead:16.3f}  {'' if growth is None else growth:>20}  "
                     f"{ratio:>15}")
    lines.append("growth of each stage's wall time between consecutive sizes (work ratio in brackets):")
    for storage, rows in data.groupby("storage"):
        sizes = sorted(rows["features"].unique())
        for a, b in zip(sizes, sizes[1:]):
            ra = rows[rows["features"] == a].drop_duplicates("stage", keep="last").set_index("stage")["wall_s"]
            rb = rows[rows["features"] == b].drop_duplicates("stage", keep="last").set_index("stage")["wall_s"]
            cells = "  ".join(f"{s} {rb[s] / ra[s]:.1f}x" for s in ra.index if s in rb)
            lines.append(f"  {storage} {a} -> {b} [{b / a:.1f}x]: {cells}")
    return "\n".join(lines)


def figure(csv_path: str, out: str) -> None:
    """Cost against size per stage, log-log, one panel per storage, with a linear reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    data = pd.read_csv(csv_path)
    storages = sorted(data["storage"].unique())
    fig, axes = plt.subplots(1, len(storages), figsize=(6.5 * len(storages), 5), squeeze=False)
    for ax, storage in zip(axes[0], storages):
        sub = data[data["storage"] == storage]
        for stage, rows in sub.groupby("stage", sort=False):
            rows = rows.groupby("features", as_index=False)["wall_s"].last()
            ax.plot(rows["features"], rows["wall_s"], marker="o", label=stage)
        xs = sorted(sub["features"].unique())
        if len(xs) >= 2:
            ref = sub[sub["stage"] == "first_run"].groupby("features")["wall_s"].last()
            y0 = float(ref.iloc[0]) if len(ref) else 1.0
            ax.plot(xs, [y0 * x / xs[0] for x in xs], "k--", linewidth=1, label="linear (from first_run)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("features")
        ax.set_ylabel("wall seconds")
        ax.set_title(f"rehearsal on {storage}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
