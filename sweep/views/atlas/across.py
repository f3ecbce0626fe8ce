"""The atlas's views across models: the concept search, each unit's counterparts in other models
(`jobs/matching.py`) and the Rosetta sets page.

A unit's page lists, per other model, its best match (score, mutual or not), linked to that unit's
page with its picture where the unit was visualized; the Rosetta page lists the groups of units
that are mutual best matches across at least ROSETTA_MIN_MODELS models, one picture per model.
Everything read is untrusted like the rest of the root: a part that cannot be read is left out with
one warning, and every link is built from slugs, never from the text of a row.
"""

from __future__ import annotations

import logging
import posixpath

import pandas as pd
import pyarrow.parquet as pq

from sweep.experiments.matching import rosetta_sets
from sweep.store.layout import FEATURES, MATCH_SCHEMA
from sweep.views.atlas.inputs import READ_ERRORS, read_part
from sweep.views.atlas.render import href, render, script_data, slug

log = logging.getLogger(__name__)

#: Units kept per concept for the concept search (per layer, per model and for the whole site).
UNITS_PER_CONCEPT = 24
CONCEPTS_DATA = "concepts.js"
#: A Rosetta set on the atlas spans at least this many models (the job's own default).
ROSETTA_MIN_MODELS = 3
#: Sets listed on the Rosetta page, strongest first.
ROSETTA_SHOWN = 200
MATCH_COLUMNS = ["model_a", "layer_a", "site_a", "unit_a", "model_b", "layer_b", "site_b", "unit_b", "score", "rank",
                 "mutual"]


def read_matches(fs, root: str, rels: list[str], model: str | None = None) -> pd.DataFrame:
    """The rank-0 rows (each unit's best match in each other model) of these match parts, of
    `model`'s units only when given; a part that cannot be read is left out with one warning."""
    frames = []
    for rel in sorted(rels):
        part = read_part(fs, root, rel, MATCH_SCHEMA, "matches", MATCH_COLUMNS)
        if part is not None:
            frames.append(part[(part["rank"] == 0) & ((part["model_a"] == model) if model is not None else True)])
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=MATCH_COLUMNS)
    frame = frame.dropna(subset=["model_a", "model_b", "layer_a", "layer_b", "unit_a", "unit_b", "score"])
    return frame.fillna({"site_a": "", "site_b": "", "mutual": False})


def visualized_units(fs, root: str, parts: dict[str, list[str]]) -> dict[str, set]:
    """model -> {(layer, site, feature)} of its `ok` feature rows (the units that have a page with a
    picture), read from a few columns of every part."""
    out: dict[str, set] = {}
    for model, rels in parts.items():
        units = out.setdefault(model, set())
        for rel in rels:
            try:
                with fs.open(posixpath.join(root, rel), "rb") as fh:
                    rows = pq.read_table(fh, columns=["layer", "site", "feature", "status"]).to_pandas()
            except (*READ_ERRORS, ValueError):
                continue  # the model's own build warns about it
            rows = rows[(rows["status"] == "ok") & rows["layer"].notna() & rows["feature"].notna()]
            units |= {(int(r.layer), "" if r.site is None else str(r.site), int(r.feature))
                      for r in rows.itertuples(index=False)}
    return out


def unit_link(model: str, layer: int, site: str, unit: int, shown: set, up: tuple) -> dict:
    """Where a unit's page and picture are, when it has them (else None for both)."""
    stem = f"{slug(site)}-{int(unit)}"
    there = (int(layer), site, int(unit)) in shown
    return {"href": href(*up, "features", slug(model), str(int(layer)), f"{stem}.html") if there else None,
            "thumb": href(*up, "img", slug(model), str(int(layer)), f"{stem}-thumb.png") if there else None}


def counterparts(matches: pd.DataFrame, visualized: dict[str, set]) -> dict:
    """(layer, site, unit) -> [{model, layer, site, unit, score, mutual, href, thumb}] of one model's
    units, best score first; links relative to a feature page."""
    found: dict = {}
    for r in matches.sort_values("score", ascending=False, kind="stable").itertuples(index=False):
        other, layer, site, unit = str(r.model_b), int(r.layer_b), str(r.site_b), int(r.unit_b)
        found.setdefault((int(r.layer_a), str(r.site_a), int(r.unit_a)), []).append({
            "model": other, "layer": layer, "site": site, "unit": unit, "score": float(r.score),
            "mutual": bool(r.mutual), **unit_link(other, layer, site, unit, visualized.get(other, set()),
                                                  ("..", "..", ".."))})
    return found


def write_rosetta(writer, env, fs, root: str, rels: list[str], visualized: dict[str, set]) -> bool:
    """rosetta.html: the Rosetta sets of the root's matches, one picture per model; removed when the
    root has none. Returns whether the page is there."""
    sets = rosetta_sets(_mutual(read_matches(fs, root, rels)), ROSETTA_MIN_MODELS) if rels else pd.DataFrame()
    if sets.empty:
        writer.discard("rosetta.html")
        return False
    shown = []
    for set_id, members in list(sets.groupby("set", sort=True))[:ROSETTA_SHOWN]:
        shown.append({"id": int(set_id), "models": int(members["models"].iloc[0]),
                      "weakest": f"{members['score_min'].iloc[0]:.3f}", "mean": f"{members['score_mean'].iloc[0]:.3f}",
                      "units": [{"model": str(r.model), "layer": int(r.layer), "site": str(r.site), "unit": int(r.unit),
                                 **unit_link(str(r.model), int(r.layer), str(r.site), int(r.unit),
                                             visualized.get(str(r.model), set()), ())}
                                for r in members.itertuples(index=False)]})
    page = render(env, "rosetta.html", 0, search=False, sets=shown, total=int(sets["set"].nunique()),
                  min_models=ROSETTA_MIN_MODELS, title=f"Rosetta sets: {sets['set'].nunique()} across "
                  f"{ROSETTA_MIN_MODELS}+ models")
    if writer.read_bytes("rosetta.html") != page:
        writer.write("rosetta.html", page)
    return True


def _mutual(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["mutual"].astype(bool)]


def feature_parts(inputs: dict) -> dict[str, list[str]]:
    """model -> its features parts, from the listing (`list_inputs`)."""
    return {m: [rel for rel in inp.parts if FEATURES.keys_of(rel).get("model") == m] for m, inp in inputs.items()}


def write_concept_search(writer, env, models: dict, concepts_path) -> bool:
    """concepts.js (concept -> the units whose best concept it is, strongest first, across models) and
    concepts.html, from the models' concept files (`concepts_path(model)`); both removed when no
    model has labels."""
    merged: dict[str, list] = {}
    for model in sorted(models):
        got = writer.read_json(concepts_path(model)) or {}
        for concept, units in got.get("concepts", {}).items():
            merged.setdefault(concept, []).extend([model, got.get("slug", slug(model)), *u[1:], u[0]] for u in units)
    if not merged:
        for rel in (CONCEPTS_DATA, "concepts.html"):
            writer.discard(rel)
        return False
    data = {k: sorted(v, key=lambda e: -e[-1])[:UNITS_PER_CONCEPT] for k, v in sorted(merged.items())}
    for rel, body in ((CONCEPTS_DATA, script_data("atlasConcepts", "all", data)),
                      ("concepts.html", render(env, "concepts.html", 0, search=False,
                                               title=f"Concepts: {len(data)} labels over {len(models)} model(s)"))):
        if writer.read_bytes(rel) != body:
            writer.write(rel, body)
    return True
