"""Cross-model unit matching on Ray: a Ray Data scan per model writes its unit profiles in shards, then
one Ray task per model pair streams two models' shards into correlation sums and writes the pair's
matches (sweep/experiments/matching.py says what and why).

Resumable at three levels: a model whose profiles for this probe set, weights, site and layers are
all there (`done.json`) is not scanned again; a pair whose part (named by both models' profile keys
and k) is there is skipped; within a pair, each finished group of layer pairs is kept
(`_pair_checkpoints/`) until the pair's part is written, so a task that dies resumes at its group. A pair made with another probe set or other weights is replaced by the
new one, so a root holds one current matching per pair.
"""

from __future__ import annotations

import datetime as dt
import logging
import posixpath
import resource
import time

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from sweep.core.errors import SweepError
from sweep.core.redact import secret_values
from sweep.experiments.matching import (
    METHOD,
    GroupCheckpoint,
    MatchConfig,
    ProfileWriter,
    mark_mutual,
    match_pair,
    match_rows,
    moments,
    pair_key,
    profile_key,
    read_done,
    shards,
)
from sweep.models.anatomy import anatomy_of
from sweep.models.build import check_weights
from sweep.pipelines.images import gpus_per_actor, scan_activations
from sweep.store.layout import MATCH_SCHEMA, MATCHES, PAIR_CHECKPOINTS, PROFILES, pair_name
from sweep.store.outputs import check_writable, frame_parquet_bytes, open_root, replace_part

log = logging.getLogger(__name__)


def check_matching(config: MatchConfig, check: bool = True) -> list[dict]:
    """Everything checked before Ray starts or anything is written: at least two distinct models, each
    known with its layers, site and weights; a root that holds no rows of these models made with other
    weights; a writable root. Returns one description per model (model, name, weights, site, layers,
    widths, flops to the last layer); `keyed` adds the profile key once the probe images are known.
    check=False (a dry run) leaves the weights and the root alone."""
    if len(config.models) < 2:
        raise SweepError(f"models: matching needs at least two models; got {len(config.models)}")
    if len(config.weights) not in (1, len(config.models)):
        raise SweepError(f"weights: give one (for every model) or one per model ({len(config.models)}); "
                         f"got {len(config.weights)}")
    models, seen = [], {}
    for i, name in enumerate(config.models):
        anatomy = anatomy_of(name)  # an unknown model: one line
        key = anatomy.entry.key
        if key in seen:
            raise SweepError(f"models: {name!r} is {key!r} again (as {seen[key]!r}); name each model once")
        seen[key] = name
        site = config.site or anatomy.default_site
        blocks = list(anatomy.blocks) if config.layers is None else [anatomy.block(layer) for layer in config.layers]
        widths = [b.width(site) for b in blocks]  # a site the model lacks: one line
        weights = config.weights_of(i)
        if check:
            check_weights(anatomy.entry, weights)
        layers = [b.index for b in blocks]
        flops = anatomy.flops[max(layers)] if anatomy.flops else 0.0
        models.append({"model": key, "name": name, "weights": weights, "site": site, "layers": layers,
                       "widths": widths, "flops": flops})
    if not check:
        return models
    fs, root = open_root(config.out, config.storage_options)
    check_writable(fs, root, config.out)
    check_one_weights(config, models)
    return models


def keyed(config: MatchConfig, models: list[dict], records: list[dict], probe_hash: str) -> list[dict]:
    """The models with their profile keys, once the probe images are known (at least 2 of them)."""
    if len(records) < 2:
        raise SweepError(f"probe images: {len(records)} found; a correlation needs at least 2")
    return [{**m, "key": profile_key(probe_hash, m["weights"], m["site"], m["layers"], config.chunk)} for m in models]


def check_one_weights(config: MatchConfig, models: list[dict]) -> None:
    """A root's rows of one model all come from one set of weights: matching a model with weights other
    than its visualizations' or its earlier matches' would put two networks under one name."""
    from sweep.store.results import Results

    from sweep.work.batch import weights_label

    results = Results(config.out, config.storage_options)
    for m in models:
        found = set()
        label = weights_label(m["weights"], anatomy_of(m["name"]).entry.tag)  # how feature rows name weights
        for read, column, mine in ((results.features, "weights", label), (results.matches, "weights_a", m["weights"])):
            try:
                frame = read(model=m["model"], columns=[column])
            except SweepError:  # the dataset is not there
                continue
            found |= set(frame[column].dropna().astype(str)) - {mine}
        if found:
            other = sorted(found)[0]
            raise SweepError(f"weights: {m['model']!r} has rows made with weights {other!r} in {config.out!r}, "
                             f"not {m['weights']!r}; match with the weights they were made with or use another --out")


def scan_profiles(config: MatchConfig, model: dict, records: list[dict], probe_hash: str = "") -> dict:
    """One model's unit profiles over the probe images, written in shards (skipped when all there)."""
    fs, root = open_root(config.out, config.storage_options)
    folder = posixpath.join(root, PROFILES.folder(model=model["model"], key=model["key"]))
    done = read_done(fs, folder)
    if done is not None and done["images"] == len(records):
        log.info("%s: profiles already there (%s), not scanned again", model["model"], model["key"])
        return done
    anatomy = anatomy_of(model["name"])
    writer = ProfileWriter(fs, folder, len(records), model["layers"], model["widths"], config.chunk)
    started = time.perf_counter()
    with tqdm(total=len(records), desc=f"profiles {model['model']}", unit="img", leave=False) as bar:
        for index, acts in scan_activations(records, anatomy, model["weights"], model["layers"], model["site"],
                                            config.batch_size, config.actors, config.actor_cpus,
                                            config.storage_options, what="probe images: "):
            writer.add(index, acts)
            bar.update(len(acts))
    done = writer.finish({"model": model["model"], "weights": model["weights"], "site": model["site"],
                          "method": METHOD, "probe_hash": probe_hash})
    log.info("%s: profiles of %d unit(s) over %d image(s) (%d readable) in %.1f s", model["model"],
             sum(model["widths"]), len(records), done["readable"], time.perf_counter() - started)
    return done


def pair_part(config: MatchConfig, a: dict, b: dict) -> str:
    fs, root = open_root(config.out, config.storage_options)
    return posixpath.join(root, MATCHES.part(f"part-{pair_key(a, b, config.k)}.parquet",
                                             pair=pair_name(a["model"], b["model"])))


def match_models(config: MatchConfig, a: dict, b: dict, probe: str, probe_hash: str) -> dict:
    """One model pair: both ways, every unit's k best units of the other model; written as one part
    (stale parts of the pair, from another probe set or weights, removed after it). A Ray task."""
    from sweep.core.devices import assigned_gpus, resolve_device

    device = resolve_device(None, gpu_ids=assigned_gpus())  # a GPU given but unusable: one line
    fs, root = open_root(config.out, config.storage_options)
    folders = {m["model"]: posixpath.join(root, PROFILES.folder(model=m["model"], key=m["key"])) for m in (a, b)}
    done = {name: read_done(fs, folder) for name, folder in folders.items()}
    for name, d in done.items():
        if d is None:
            raise SweepError(f"{name}: profiles missing under {folders[name]}")
    for m in (a, b):
        if done[m["model"]]["layers"] != m["layers"] or done[m["model"]]["widths"] != m["widths"]:
            raise SweepError(f"{m['model']}: profiles under {folders[m['model']]} are of other layers or widths; "
                             "delete that folder to scan again")
    if done[a["model"]]["images"] != done[b["model"]]["images"]:
        raise SweepError(f"profiles of {a['model']} and {b['model']} cover different numbers of images")
    started = time.perf_counter()
    fa, fb, da, db = folders[a["model"]], folders[b["model"]], done[a["model"]], done[b["model"]]
    checkpoint = GroupCheckpoint(fs, posixpath.join(root, PAIR_CHECKPOINTS.folder(pair=pair_name(a["model"], b["model"]))),
                                 pair_key(a, b, config.k))
    top_a, top_b, n = match_pair(lambda layers: shards(fs, fa, da, layers), a["layers"], a["widths"],
                                 lambda layers: shards(fs, fb, db, layers), b["layers"], b["widths"],
                                 config.k, device, moments(fs, fa, da), moments(fs, fb, db),
                                 budget_bytes=config.pair_memory_gb * 1e9, checkpoint=checkpoint)
    rows = pd.concat([match_rows(a, b, top_a, config.k), match_rows(b, a, top_b, config.k)], ignore_index=True)
    rows = mark_mutual(rows)
    weights = {a["model"]: a["weights"], b["model"]: b["weights"]}
    rows["method"] = METHOD
    rows["probe"], rows["probe_hash"], rows["images"] = config.probe, probe_hash, np.int32(n)
    rows["weights_a"] = rows["model_a"].map(weights)
    rows["weights_b"] = rows["model_b"].map(weights)
    rows["created_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
    path = pair_part(config, a, b)
    replace_part(fs, path, frame_parquet_bytes(rows, MATCH_SCHEMA, secret_values(config.storage_options)))
    checkpoint.clear()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux: this worker's peak so far
    gpu_peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    return {"pair": (a["model"], b["model"]), "rows": len(rows), "mutual": int(rows["mutual"].sum()),
            "images": n, "seconds": time.perf_counter() - started, "device": str(device), "peak_rss_mib": peak,
            "gpu_peak_mib": gpu_peak}


def run_matching(config: MatchConfig, records: list[dict], probe_hash: str, models: list[dict]) -> dict:
    """Both stages, after `check_matching`: profiles per model (skipped where there), then one task per
    model pair not yet matched. Returns a summary."""
    import ray

    fs, _ = open_root(config.out, config.storage_options)
    for model in models:
        scan_profiles(config, model, records, probe_hash)
    pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1:]]
    todo = [(a, b) for a, b in pairs if not fs.exists(pair_part(config, a, b))]
    if len(todo) < len(pairs):
        log.info("%d model pair(s) already matched on this probe set, skipped", len(pairs) - len(todo))
    task = ray.remote(match_models).options(num_cpus=config.pair_cpus, num_gpus=gpus_per_actor())
    pending = [task.remote(config, a, b, config.probe, probe_hash) for a, b in todo]
    made = []
    with tqdm(total=len(pending), desc="model pairs", unit="pair", leave=False) as bar:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            made.append(ray.get(ready[0]))
            bar.update(1)
            log.info("%s ~ %s: %d row(s), %d mutual, %d image(s), %.1f s on %s", *made[-1]["pair"], made[-1]["rows"],
                     made[-1]["mutual"], made[-1]["images"], made[-1]["seconds"], made[-1]["device"])
    return {"pairs": len(pairs), "matched": len(made), "skipped": len(pairs) - len(made),
            "rows": sum(m["rows"] for m in made), "mutual": sum(m["mutual"] for m in made), "made": made}
