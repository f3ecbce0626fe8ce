"""Transferability on Ray Data: each visualization of a model, shown to another model, scored against
its unit's counterpart there (sweep/experiments/transfer.py). One Parquet part per (model, other),
`transfer/model=<m>/other=<o>/part-<key>.parquet`, whose key hashes the feature rows, the matches and
the counterparts' statistics it was made from: a re-run with nothing changed skips the pair."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import posixpath

import numpy as np
import pandas as pd
import ray

from sweep.core.errors import SweepError
from sweep.core.redact import secret_values
from sweep.experiments.matching import read_done, unit_stats
from sweep.experiments.transfer import METHOD, TransferConfig, TransferScanner, profile_folder, transfer_scores
from sweep.models.anatomy import anatomy_of
from sweep.pipelines.images import gpus_per_actor
from sweep.store.layout import TRANSFER, TRANSFER_SCHEMA
from sweep.store.outputs import check_writable, frame_parquet_bytes, open_root, replace_part
from sweep.store.results import Results

log = logging.getLogger(__name__)


def check_transfer(config: TransferConfig) -> list[dict]:
    """Everything checked before Ray starts: the model has visualizations in the root, each other model
    is another model with matches to it (`jobs/matching.py`) and its counterparts' probe statistics; a
    writable root. Returns one plan per other model: its rows (visualization x counterpart), its
    weights, site and the statistics' folder."""
    fs, root = open_root(config.out, config.storage_options)
    check_writable(fs, root, config.out)
    results = Results(config.out, config.storage_options)
    model = anatomy_of(config.model).entry.key
    try:
        feats = results.features(model=model, columns=["layer", "site", "feature", "status", "image_path",
                                                       "created_at", "config_hash"])
    except SweepError:
        feats = pd.DataFrame()
    feats = feats[(feats["status"] == "ok") & feats["image_path"].notna()] if len(feats) else feats
    if feats.empty:
        raise SweepError(f"--model: {model!r} has no visualizations in {config.out!r}; run the sweep first")
    feats = feats.sort_values("created_at", kind="stable").drop_duplicates(["layer", "site", "feature"], keep="last")
    plans, seen = [], set()
    for name in config.others:
        other = anatomy_of(name).entry.key  # an unknown model: one line
        if other == model or other in seen:
            raise SweepError(f"--other: {other!r} is {'the model itself' if other == model else 'given twice'}; "
                             "name each other model once")
        seen.add(other)
        try:
            matches = results.matches(model=model, other=other)
        except SweepError:
            matches = pd.DataFrame()
        if matches.empty:
            raise SweepError(f"--other: no matches of {model!r} with {other!r} in {config.out!r}; run "
                             f"jobs/matching.py --model {model} {other} --out {config.out} first")
        best = matches[matches["rank"] == 0]
        weights, site, probe = (best["weights_b"].iloc[0], best["site_b"].iloc[0], best["probe_hash"].iloc[0])
        folder = profile_folder(fs, root, other, probe, weights, site)
        done = read_done(fs, folder) if folder else None
        if done is None:
            raise SweepError(f"--other: the probe statistics of {other!r} (profiles of probe {probe}) are not in "
                             f"{config.out!r}; run jobs/matching.py again to scan them")
        rows = feats.merge(best.rename(columns={"layer_a": "layer", "site_a": "site", "unit_a": "feature"})[
            ["layer", "site", "feature", "layer_b", "site_b", "unit_b", "score", "probe_hash"]],
            on=["layer", "site", "feature"], how="inner")
        if rows.empty:
            log.warning("%s: none of its visualized units has a match in %s", model, other)
        key = hashlib.sha256(json.dumps([rows[["layer", "site", "feature", "image_path", "created_at", "layer_b",
                                                "unit_b", "score"]].astype(str).values.tolist(), weights, folder,
                                         METHOD]).encode()).hexdigest()[:16]
        plans.append({"model": model, "other": other, "weights": weights, "site": site, "folder": folder, "done": done,
                      "rows": rows, "key": key,
                      "path": posixpath.join(root, TRANSFER.part(f"part-{key}.parquet", model=model, other=other))})
    return plans


def run_transfer(config: TransferConfig, plans: list[dict]) -> list[dict]:
    """Score every visualization against each other model (skipping pairs already scored with these
    rows); returns a summary per other model."""
    fs, root = open_root(config.out, config.storage_options)
    summaries = []
    for plan in plans:
        if fs.exists(plan["path"]) or plan["rows"].empty:
            summaries.append({"other": plan["other"], "rows": 0, "skipped": True})
            continue
        rows = plan["rows"]
        layers = sorted({int(v) for v in rows["layer_b"]})
        items = [{"image_path": str(r.image_path), "layer_b": int(r.layer_b), "unit_b": int(r.unit_b), "row": i}
                 for i, r in enumerate(rows.itertuples(index=False))]
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // 16, 200)))
        ds = ds.map_batches(TransferScanner, fn_constructor_args=(config.out, config.storage_options, plan["other"],
                                                                  plan["weights"], plan["site"], layers),
                            batch_size=config.batch_size, concurrency=config.actors or 1, num_gpus=gpus_per_actor(),
                            num_cpus=config.actor_cpus)
        got = ds.to_pandas().sort_values("row")
        for error in got.loc[got["error"] != "", "error"]:
            log.warning("visualization not scored: %s", error)
        stats = unit_stats(fs, plan["folder"], plan["done"])
        layer_b, unit_b = got["layer_b"].to_numpy(int), got["unit_b"].to_numpy(int)
        mean, std, top = (np.array([stats[la][j][u] for la, u in zip(layer_b, unit_b)]) for j in range(3))
        act = got["act_b"].to_numpy(np.float64)
        z, beats = transfer_scores(act, mean, std, top)
        frame = pd.DataFrame({
            "layer": rows["layer"].to_numpy(np.int32), "site": rows["site"].astype(str),
            "feature": rows["feature"].to_numpy(np.int32), "image_path": rows["image_path"].astype(str),
            "layer_b": layer_b.astype(np.int32), "site_b": plan["site"], "unit_b": unit_b.astype(np.int32),
            "match_score": rows["score"].to_numpy(np.float32), "act_b": act, "z": z,
            "probe_mean": mean, "probe_std": std, "probe_max": top,
            "beats_probe": np.where(np.isnan(act), None, beats), "error": got["error"].astype(str).to_numpy(),
            "method": METHOD, "probe_hash": rows["probe_hash"].astype(str), "weights_b": plan["weights"],
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat()})
        replace_part(fs, plan["path"], frame_parquet_bytes(frame, TRANSFER_SCHEMA, secret_values(config.storage_options)))
        ok = frame["error"] == ""
        summaries.append({"other": plan["other"], "rows": len(frame), "skipped": False,
                          "median_z": float(np.nanmedian(frame.loc[ok, "z"])) if ok.any() else float("nan"),
                          "beats": int(frame.loc[ok, "beats_probe"].astype(bool).sum()), "scored": int(ok.sum())})
        log.info("%s -> %s: %d visualization(s) scored, median z %.2f, %d beat every probe image", plan["model"],
                 plan["other"], summaries[-1]["scored"], summaries[-1]["median_z"], summaries[-1]["beats"])
    return summaries
