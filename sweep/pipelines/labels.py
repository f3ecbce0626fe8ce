"""Concept labels for every unit of a model on Ray Data: the concepts' text embeddings made once by a
task, decode and resize as tasks, an actor pool that reads the units and embeds the images with the
judge, the driver folding each batch into the correlation sums.

One Parquet part per layer, `labels/model=<m>/layer=<l>/part-<key>.parquet`, whose key hashes
everything the labels depend on (vocabulary, prompts, judge and its weights, method, split, site,
the model's weights): a layer whose part is there is skipped (resume), a changed vocabulary or
judge gives a new key and labels again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import posixpath
import time

import numpy as np
import pandas as pd
import torch

from sweep.core.errors import SweepError
from sweep.core.redact import secret_values
from sweep.data.imagenet import Listing
from sweep.data.vocabulary import load_vocabulary
from sweep.experiments.judge import templates
from sweep.experiments.labels import (
    METHOD,
    VISUALIZATION_METHOD,
    LabelScanner,
    LabelsConfig,
    ProfileStats,
    VisualizationJudge,
    concept_embeddings,
    vocabulary_hash,
)
from sweep.experiments.top_images import unit_table
from sweep.models.build import check_weights
from sweep.pipelines.images import gpus_per_actor, prepared_images, stacked
from sweep.store.layout import LABEL_SCHEMA, LABELS
from sweep.store.outputs import atomic_write, check_writable, frame_parquet_bytes, open_root

log = logging.getLogger(__name__)


def part_key(config: LabelsConfig, vocab_hash: str, site: str, method: str = METHOD) -> str:
    blob = json.dumps({"vocabulary": vocab_hash, "split": config.split if method == METHOD else "", "site": site,
                       "weights": config.weights, "method": method}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def concept_text(config: LabelsConfig, concepts: tuple[str, ...], prompts: tuple[str, ...], vhash: str,
                 memo: dict | None = None) -> np.ndarray:
    """The concepts' (C, d) text embeddings, made once for the job by a Ray task with an actor's
    resources (a GPU where the actors get one): every actor and the driver share them. `memo`, the
    caller's, keeps them by vocabulary hash for a second labelling in the same job (--method both)."""
    import ray

    if memo is not None and vhash in memo:
        return memo[vhash]
    task = ray.remote(concept_embeddings).options(num_gpus=gpus_per_actor(), num_cpus=config.actor_cpus)
    log.info("embedding %d concept(s) x %d prompt(s) with the judge %s", len(concepts), len(prompts), config.judge)
    started = time.perf_counter()
    text = ray.get(task.remote(config.judge, config.judge_weights, concepts, prompts))
    log.info("embedded the concepts in %.1f s", time.perf_counter() - started)
    if memo is not None:
        memo[vhash] = text
    return text


def check_labels(config: LabelsConfig):
    """Everything checked before Ray starts (the job calls it first): the model, its layers and site,
    the weights, the vocabulary and prompts, the judge (a known open_clip model, with a tag for
    pretrained weights), --k against the vocabulary, a writable root. Returns (anatomy, blocks, site,
    vocabulary name, concepts, prompts, vocabulary hash)."""
    from sweep.models.sources import OpenClip

    anatomy, blocks, site, _ = unit_table(config)
    for b in blocks:
        b.site(site)
    name, concepts = load_vocabulary(config.vocabulary, config.storage_options)
    prompts = templates(config.templates)
    if config.k > len(concepts):
        raise SweepError(f"--k: {config.k} is above the vocabulary's {len(concepts)} concept(s); give at most "
                         f"{len(concepts)}")
    judge = OpenClip().entry(config.judge, ())  # an unknown judge architecture or tag: one line
    if config.judge_weights == "pretrained" and not judge.tag:
        raise SweepError(f"judge {config.judge!r} names no pretrained tag (ARCH/TAG, e.g. ViT-B-32/openai); or "
                         "--judge-weights random for a test run")
    check_weights(anatomy.entry, config.weights)
    fs, root = open_root(config.out, config.storage_options)
    check_writable(fs, root, config.out)
    vhash = vocabulary_hash(concepts, prompts, config.judge, config.judge_weights)
    return anatomy, blocks, site, name, concepts, prompts, vhash


def label_units(config: LabelsConfig, listing: Listing, memo: dict | None = None, checked: tuple | None = None) -> dict:
    """Label every unit of the requested layers over `listing`; returns a summary
    {"labelled": [layers], "skipped": [layers], "rows": n, "vocabulary_hash": h}. `checked`: the
    result of `check_labels` when the caller ran it (else it is run here)."""
    anatomy, blocks, site, name, concepts, prompts, vhash = checked or check_labels(config)
    fs, root = open_root(config.out, config.storage_options)
    key = part_key(config, vhash, site)
    model = anatomy.entry.key
    parts = {b.index: posixpath.join(root, LABELS.part(f"part-{key}.parquet", model=model, layer=b.index))
             for b in blocks}
    done = [b.index for b in blocks if fs.exists(parts[b.index])]
    todo = [b for b in blocks if b.index not in done]
    if done:
        log.info("%s: layer(s) %s already labelled with this vocabulary and judge (%s), skipped", model,
                 ", ".join(map(str, done)), vhash)
    if not todo:
        return {"labelled": [], "skipped": done, "rows": 0, "vocabulary_hash": vhash}
    records = listing.records
    if not records:
        raise SweepError("no probe images to label with")
    text = concept_text(config, concepts, prompts, vhash, memo)
    ds = prepared_images(records, anatomy.preprocess.input_size, storage_options=config.storage_options,
                         preprocess=anatomy.preprocess)
    ds = ds.map_batches(LabelScanner, fn_constructor_args=(model, config.weights, [b.index for b in todo], site,
                                                           config.judge, config.judge_weights),
                        batch_size=config.batch_size, concurrency=config.actors or 1, num_gpus=gpus_per_actor(),
                        num_cpus=config.actor_cpus)
    widths = [b.width(site) for b in todo]
    stats = ProfileStats(sum(widths), text.shape[1])
    seen = skipped = 0
    for batch in ds.iter_batches(batch_format="numpy", batch_size=config.batch_size):
        acts = torch.from_numpy(stacked(batch["acts"]))
        embeds = torch.from_numpy(stacked(batch["embeds"]))
        ok = ~(torch.isnan(acts).any(dim=1) | torch.isnan(embeds).any(dim=1))
        for error in np.asarray(batch["error"])[~ok.numpy()]:
            log.warning("image skipped: %s", error)
        skipped += int((~ok).sum())
        stats.update(acts[ok], embeds[ok])
        seen += len(ok)
    if seen != len(records):
        raise SweepError(f"scanned {seen} images, expected {len(records)}")
    if stats.n < 2:
        raise SweepError(f"{stats.n} readable probe image(s): a correlation needs at least 2")
    values, index = stats.top(torch.tensor(text), config.k)
    created = dt.datetime.now(dt.timezone.utc).isoformat()
    start, total = 0, 0
    for block, width in zip(todo, widths):
        v, i = values[start:start + width], index[start:start + width]
        start += width
        k = v.shape[1]
        rows = pd.DataFrame({
            "layer_name": block.name, "site": site, "feature": np.repeat(np.arange(width, dtype=np.int32), k),
            "rank": np.tile(np.arange(k, dtype=np.int32), width),
            "concept": [concepts[c] for c in i.reshape(-1).tolist()], "score": v.reshape(-1).numpy(),
            "method": METHOD, "judge": config.judge, "vocabulary": name, "vocabulary_hash": vhash,
            "split": config.split, "images": stats.n, "weights": config.weights, "created_at": created})
        atomic_write(fs, parts[block.index],
                     frame_parquet_bytes(rows, LABEL_SCHEMA, secret_values(config.storage_options)))
        total += len(rows)
    log.info("%s: labelled %d unit(s) of layer(s) %s with %d concept(s) of %s over %d image(s) (%d unreadable)",
             model, sum(widths), ", ".join(str(b.index) for b in todo), len(concepts), name, stats.n, skipped)
    return {"labelled": [b.index for b in todo], "skipped": done, "rows": total, "vocabulary_hash": vhash}


def label_visualizations(config: LabelsConfig, memo: dict | None = None, checked: tuple | None = None) -> dict:
    """Label each unit's visualization (the sweep's PNG in the same root) with its k best concepts by
    the judge's cosine similarity; one part per layer like `label_units`, method
    `visualization-zero-shot`. Units without a visualization are left out. `checked` as `label_units`."""
    import ray

    from sweep.store.results import Results

    anatomy, blocks, site, name, concepts, prompts, vhash = checked or check_labels(config)
    fs, root = open_root(config.out, config.storage_options)
    model = anatomy.entry.key
    key = part_key(config, vhash, site, VISUALIZATION_METHOD)
    try:
        rows = Results(config.out, config.storage_options).features(model=model)
    except SweepError:
        rows = pd.DataFrame(columns=["layer", "site", "feature", "status", "image_path", "layer_name"])
    rows = rows[(rows["status"] == "ok") & (rows["site"] == site) & rows["image_path"].notna()
                & rows["layer"].isin([b.index for b in blocks])]
    rows = rows.drop_duplicates(["layer", "feature"], keep="last")
    parts = {b.index: posixpath.join(root, LABELS.part(f"part-{key}.parquet", model=model, layer=b.index))
             for b in blocks}
    done = [b.index for b in blocks if fs.exists(parts[b.index])]
    todo = sorted(set(int(x) for x in rows["layer"]) - set(done))
    if not todo:
        return {"labelled": [], "skipped": done, "rows": 0, "vocabulary_hash": vhash}
    items = [{"layer": int(r.layer), "layer_name": str(r.layer_name), "site": site, "feature": int(r.feature),
              "image_path": str(r.image_path)} for r in rows[rows["layer"].isin(todo)].itertuples(index=False)]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // 16, 200)))
    text = concept_text(config, concepts, prompts, vhash, memo)
    ds = ds.map_batches(VisualizationJudge, fn_constructor_args=(config.out, config.storage_options, config.judge,
                                                                 config.judge_weights, text, config.k),
                        batch_size=config.batch_size, concurrency=config.actors or 1, num_gpus=gpus_per_actor(),
                        num_cpus=config.actor_cpus)
    got = ds.to_pandas()
    for error in got.loc[got["error"] != "", "error"]:
        log.warning("visualization not labelled: %s", error)
    got = got[got["error"] == ""]
    created = dt.datetime.now(dt.timezone.utc).isoformat()
    total = 0
    for layer in todo:
        mine = got[got["layer"] == layer].sort_values("feature")
        if mine.empty:
            continue
        k = len(mine.iloc[0]["scores"])
        frame = pd.DataFrame({
            "layer_name": np.repeat(mine["layer_name"].to_numpy(), k), "site": site,
            "feature": np.repeat(mine["feature"].to_numpy().astype(np.int32), k),
            "rank": np.tile(np.arange(k, dtype=np.int32), len(mine)),
            "concept": [concepts[int(c)] for cs in mine["concepts"] for c in cs],
            "score": np.concatenate([np.asarray(v, np.float32) for v in mine["scores"]]),
            "method": VISUALIZATION_METHOD, "judge": config.judge, "vocabulary": name, "vocabulary_hash": vhash,
            "split": "visualization", "images": 1, "weights": config.weights, "created_at": created})
        atomic_write(fs, parts[layer], frame_parquet_bytes(frame, LABEL_SCHEMA, secret_values(config.storage_options)))
        total += len(frame)
    log.info("%s: labelled the visualizations of layer(s) %s with %d concept(s) of %s", model,
             ", ".join(map(str, todo)), len(concepts), name)
    return {"labelled": todo, "skipped": done, "rows": total, "vocabulary_hash": vhash}
