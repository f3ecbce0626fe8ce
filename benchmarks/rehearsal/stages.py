"""One stage of the rehearsal, run in a process of its own so that its peak memory is its own.

    python benchmarks/rehearse.py _stage SPEC_JSON      (the orchestrator calls this; see rehearse.py)

Each stage prints one line `RESULT {...}`: its wall time, the process's peak resident memory (VmHWM)
and its children's (the atlas's pool), and what it checked. Stages: plan, sweep (a first run or a
resume), verify (every planned feature exactly once, ok, with its image), queries (the README's
`Results` calls, checked against the rows the stand-in writes), atlas (full or incremental build,
checked to hold a page per feature).
"""

from __future__ import annotations

import json
import logging
import posixpath
import resource
import sys
import time

import torch


def peak_mb() -> tuple[float, float]:
    """This process's peak resident memory and its waited-for children's, in MiB."""
    own = float("nan")
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                own = int(line.split()[1]) / 1024
    return own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def planned(config) -> set[tuple[str, int, str, int]]:
    from sweep.work.plan import expand

    return {tr for t in expand(config) for tr in t.triples()}


def expected_act_final(seed: int) -> float:
    """What the stand-in writes for a feature of this seed (standin.RehearsalRunner.render_batch)."""
    g = torch.Generator().manual_seed(seed)
    torch.rand(3, 16, 16, generator=g)
    first = torch.rand((), generator=g)
    return float(first + torch.rand((), generator=g) * 10)


def stage_plan(spec: dict, config) -> dict:
    from sweep.work.plan import check_plan, plan_summary

    started = time.perf_counter()
    tasks = check_plan(config)
    return {"plan_s": round(time.perf_counter() - started, 3), "batches": len(tasks), "features": sum(len(t.batch.features) for t in tasks),
            "models": len(plan_summary(config, tasks))}


def stage_sweep(spec: dict, config) -> dict:
    import ray

    from sweep.pipelines.feature_sweep import run_sweep

    from rehearsal import standin

    ray.cloudpickle.register_pickle_by_value(standin)  # the workers need not import the benchmarks
    if spec.get("ray"):  # a stage process joins the rehearsal's cluster; in-process (tests) Ray is up already
        ray.init(address=spec["ray"], log_to_driver=False)
    try:
        started = time.perf_counter()
        report = run_sweep(config, progress=False, shared_filesystem=True,
                           runner=standin.runner(spec.get("standin_s", 0.0)))
        wall = time.perf_counter() - started
    finally:
        if spec.get("ray"):
            ray.shutdown()
    batches = sum(v["batches"] for v in report.per_model.values())
    worker_s = sum(v["seconds"] for v in report.per_model.values())
    return {"done": report.done, "skipped": report.skipped, "failed": report.failed, "batches": batches,
            "worker_s": round(worker_s, 2), "peak_workers": report.peak_workers, "sweep_wall_s": round(wall, 2),
            "worker_failures": report.worker_failures}


def stage_verify(spec: dict, config) -> dict:
    from sweep.store.outputs import open_root
    from sweep.store.index import read_index

    fs, root = open_root(config.out, config.storage_options)
    index = read_index(fs, root)
    keys = list(zip(index["model"], index["layer"].astype(int), index["site"], index["feature"].astype(int)))
    want = planned(config)
    mine = [k for k in keys if k in want]
    images = {posixpath.join(root, p) for p in index["image_path"]}
    listed = set(fs.find(posixpath.join(root, "images")))
    rows = index.assign(k=keys).set_index("k")
    # worker memory against batches run, from the stand-in's rows (runner, pid, batches_run, rss_mb)
    from sweep.store.results import Results

    versions = Results(config.out, config.storage_options).features(columns=["versions"])["versions"]
    per_pid: dict[int, list[tuple[int, float]]] = {}
    for v in set(versions):
        info = json.loads(v)
        per_pid.setdefault(info["pid"], []).append((info["batches_run"], info["rss_mb"]))
    growth = []
    for points in per_pid.values():
        points.sort()
        if len(points) >= 4:
            half = len(points) // 2
            growth.append(max(r for _, r in points[half:]) - max(r for _, r in points[:half]))
    return {"exactly_once": len(mine) == len(set(mine)) == len(want),
            "all_ok": bool((rows.loc[list(want), "status"] == "ok").all()) if len(mine) == len(want) else False,
            "images_present": images <= listed, "rows": len(index), "planned": len(want),
            "runner_rehearsal": all(json.loads(v)["runner"] == "rehearsal" for v in set(versions)),
            "workers_seen": len(per_pid), "worker_rss_growth_mb": round(max(growth), 1) if growth else None}


def stage_queries(spec: dict, config) -> dict:
    from sweep.store.results import Results

    want = planned(config)
    started = time.perf_counter()
    r = Results(config.out, config.storage_options)
    models = r.models()
    got = {pick: r.features(model=pick[0], layer=pick[1], columns=["feature", "seed", "act_final"])
           for pick in _picks(want)}
    whole = r.features(columns=["layer", "feature", "act_final"])
    one_model = r.features(model=_picks(want)[0][0])
    query_s = time.perf_counter() - started
    agree = set(models) >= {m for m, *_ in want}
    for (m, layer), rows in got.items():
        expect = {f for mm, ll, _, f in want if (mm, ll) == (m, layer)}
        agree &= set(rows["feature"]) >= expect
        sample = rows.head(8)
        agree &= all(abs(a - expected_act_final(int(s))) < 1e-4 for s, a in zip(sample["seed"], sample["act_final"]))
    first = _picks(want)[0][0]
    agree &= len(whole) >= len(want) and len(one_model) >= sum(1 for m, *_ in want if m == first)
    return {"queries_agree": bool(agree), "rows_read": len(whole), "models": len(models), "query_s": round(query_s, 3)}


def _picks(want) -> list[tuple[str, int]]:
    """The first, middle and last (model, layer) of the plan: the README's per-layer query, three times."""
    layers = sorted({(m, layer) for m, layer, _, _ in want})
    return [layers[0], layers[len(layers) // 2], layers[-1]]


def stage_atlas(spec: dict, config) -> dict:
    from sweep.store.outputs import open_root
    from sweep.views.atlas import build_atlas

    started = time.perf_counter()
    out = build_atlas(config.out, spec["site"], config.storage_options, site_options=config.storage_options)
    atlas_s = time.perf_counter() - started
    fs, site = open_root(spec["site"], config.storage_options)
    fs.invalidate_cache(site)
    pages = [p for p in fs.find(posixpath.join(site, "features")) if p.endswith(".html")]
    return {"atlas_s": round(atlas_s, 3), "atlas_written": len(out["written"]), "atlas_models_read": len(out["models_read"]),
            "atlas_feature_pages": len(pages), "atlas_holds_plan": len(pages) >= len(planned(config))}


STAGES = {"plan": stage_plan, "sweep": stage_sweep, "verify": stage_verify, "queries": stage_queries,
          "atlas": stage_atlas}


def main(spec_json: str) -> int:
    from sweep.work.plan import SweepConfig

    from rehearsal import ablations, labels

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    spec = json.loads(spec_json)
    started = time.perf_counter()
    if spec["stage"] in ("ablation", "bare", "labels", "label_sums"):
        result = {"ablation": ablations.stage_ablation, "bare": ablations.stage_bare, "labels": labels.stage_labels,
                  "label_sums": labels.stage_label_sums}[spec["stage"]](spec)
    else:
        result = STAGES[spec["stage"]](spec, SweepConfig.from_dict(spec["config"]))
    wall = time.perf_counter() - started
    own, children = peak_mb()
    print("RESULT " + json.dumps({"wall_s": round(wall, 3), "driver_peak_mb": round(own, 1),
                                  "children_peak_mb": round(children, 1), **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
