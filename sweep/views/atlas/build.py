"""Build or update the atlas of a results root, incrementally, in parallel, to any fsspec URL.

    index.html                           models (source, family, input, blocks, features), a filter box
                                         and a go-to box (model, layer, site, feature)
    models/<m>/index.html                the model's layers, each with its strongest features first
    models/<m>/layer-<l>-<p>.html        a page of that layer's features, activation under each thumbnail;
                                         `#sort=act|rel|failed` shows that page of the whole layer sorted
    models/<m>/layer-<l>.js              the layer's features as data, for sorting across pages and the
                                         go-to box (a script, so it loads from file:// as from a bucket)
    features/<m>/<l>/<site>-<f>.html     one feature: image, previous/next feature and layer, curves with
                                         axes, concept labels, top natural images, activation maps, the
                                         row's provenance
    concepts.html, concepts.js           search the concept labels across models (`jobs/labels.py`): the
                                         units whose best concept a word is, strongest first
    img/<m>/<l>/<site>-<f>[-thumb].png   images copied from the results root
    _atlas/state.json, _atlas/models/    what the site holds, keyed by the inputs' fingerprints

A rebuild lists the results root (partition folders, file sizes and stamps) and compares each model
with the state: an unchanged model is not read at all. In a changed model only the layers whose parts
changed are read and rendered (all of them when its layer list, top images or maps changed), an image
is copied only when its row changed, and a page is written only when its text changed. Layers are
rendered in a process pool when there is enough work; paths and links are deterministic, so deep
links survive rebuilds. The state is written last: an interrupted build redoes its work next time.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import math
import multiprocessing
import os
import posixpath
from dataclasses import dataclass, field

import pandas as pd
from tqdm.auto import tqdm

from sweep.core.errors import SweepError
from sweep.models.names import source_of
from sweep.store.layout import DATA_FOLDERS, TOP_THUMBS, thumb_name
from sweep.store.outputs import check_writable, is_local, open_root, storage_problem
from sweep.views.atlas.across import (
    UNITS_PER_CONCEPT,
    counterparts,
    feature_parts,
    read_matches,
    visualized_units,
    write_concept_search,
    write_rosetta,
)
from sweep.views.atlas.inputs import (
    ModelInputs,
    RootImages,
    list_inputs,
    map_files,
    read_feature_parts,
    read_labels,
    read_top_images,
    read_transfer,
)
from sweep.views.atlas.publish import SiteWriter, digest, inside
from sweep.views.atlas.render import (
    curve,
    fmt,
    href,
    number,
    render,
    script_data,
    slug,
    templates,
    templates_digest,
    text,
)

log = logging.getLogger(__name__)

#: Bump when the site's layout or state format changes: every model is then built again.
ATLAS_FORMAT = 5
STATE = "_atlas/state.json"
#: Folders of the site that pages and images are written to.
SITE_FOLDERS = ("models", "features", "img", "_atlas")
#: Below this many features to render, layers are built in this process (a pool costs seconds to start).
POOL_MIN_FEATURES = 4000
#: Strongest features shown per layer on the model page.
TOP_PER_LAYER = 8


def _model_state_path(model: str) -> str:
    return f"_atlas/models/{slug(model)}.json"


def _model_concepts_path(model: str) -> str:
    """The model's units per concept (for the site's concept search), apart from its state: the search
    is rebuilt from these files without reading the models' states."""
    return f"_atlas/models/{slug(model)}.concepts.json"


def _layer_state_path(model: str, layer) -> str:
    """Each layer's file list on its own: a rebuild reads and writes only the layers it touches."""
    return f"_atlas/models/{slug(model)}/layer-{int(layer)}.json"


@dataclass
class LayerTask:
    """Everything one layer's pages need; picklable, so a pool process can build it."""

    results_root: str
    storage_options: dict | None
    site: str
    site_options: dict | None
    model: str
    layer: int
    layers: tuple[int, ...]
    page_size: int
    rows: pd.DataFrame
    tops: dict
    maps: dict   # (layer, site, feature) -> [(root-relative png, fingerprint)]
    salt: str = ""  # the site's format and templates: pages made with others are rendered again
    thumbs: dict = field(default_factory=dict)  # top_image_thumbs/... png -> fingerprint
    labels: dict = field(default_factory=dict)  # (layer, site, feature) -> [concept labels]
    matches: dict = field(default_factory=dict)  # (layer, site, feature) -> [its best unit in each other model]
    transfer: dict = field(default_factory=dict)  # (layer, site, feature) -> median z of its counterparts


def _row_key(r) -> str:
    """Identifies the row an image came from: a re-run feature (new image) gets a new key."""
    fields = [text(getattr(r, c, "")) for c in ("image_path", "status", "created_at", "config_hash", "weights")]
    return hashlib.sha256("\0".join(fields).encode()).hexdigest()[:16]


def build_layer(task: LayerTask) -> dict:
    """Write one layer's images and pages where they changed; return its state and summary."""
    writer = SiteWriter(task.site, task.site_options)
    held = (writer.read_json(_layer_state_path(task.model, task.layer)) or {}).get("files", {})
    fs, root = open_root(task.results_root, task.storage_options)
    images = RootImages(fs, root)
    env = templates()
    model, layer, m = task.model, task.layer, slug(task.model)
    files: dict[str, str] = {}

    def put(rel: str, data: bytes, key: str | None = None) -> None:
        files[rel] = key or digest(data)
        if held.get(rel) != files[rel]:
            writer.write(rel, data)

    rows = task.rows.sort_values(["site", "feature"], kind="stable")
    acts = [number(v) for v in rows["act_final"]]
    best = max((a for a in acts if a is not None), default=None)
    name = ", ".join(sorted({text(n) for n in rows["layer_name"]} - {""}))
    stems = [f"{slug(text(s))}-{int(f)}" for s, f in zip(rows["site"], rows["feature"])]
    names = [f"{text(s)} {int(f)}" for s, f in zip(rows["site"], rows["feature"])]
    n_pages = max(1, math.ceil(len(rows) / task.page_size))
    pages = [href(f"layer-{layer}-{p}.html") for p in range(n_pages)]
    position = {lay: i for i, lay in enumerate(task.layers)}.get(layer, 0)
    neighbours = {"previous": task.layers[position - 1] if position > 0 else None,
                  "next": task.layers[position + 1] if position + 1 < len(task.layers) else None}
    img_dir = ("img", m, str(layer))
    cells = []
    # Every image first: a feature's page shows its unit's images at the other side of its GELU too.
    shown_at = [_copy_row_image(r, stems[i], img_dir, images, held, files, put)
                for i, r in enumerate(rows.itertuples(index=False))]
    by_unit = {(text(r.site), int(r.feature)): i for i, r in enumerate(rows.itertuples(index=False))}
    for i, r in enumerate(rows.itertuples(index=False)):
        site, feature, stem = text(r.site), int(r.feature), stems[i]
        shown = shown_at[i]
        same = [{"site": other, "method": text(getattr(rows.iloc[j], "method", "")) or "pixel unit",
                 "act": fmt(rows.iloc[j]["act_final"], ".4g"), "post": fmt(getattr(rows.iloc[j], "post_final", None), ".4g"),
                 "href": href(f"{stems[j]}.html"), "thumb": href("..", "..", "..", *img_dir, f"{stems[j]}-thumb.png")}
                for other in SAME_UNIT.get(site, ()) if (j := by_unit.get((other, feature))) is not None and shown_at[j]]
        map_srcs = []
        for rel, fp in sorted(task.maps.get((layer, site, feature), [])):
            name = f"{stem}-map{len(map_srcs)}.png"
            if _copy_image(rel, posixpath.join(*img_dir, name), digest(f"{rel}\0{fp}".encode()), images, held,
                           files, put):
                map_srcs.append(href("..", "..", "..", *img_dir, name))
        extra = _extra_images(r, stem, img_dir, images, held, files, put) if r.status == "ok" else {}
        up = ("..", "..", "..")
        feature_href = href("..", "..", "features", m, str(layer), f"{stem}.html")
        labels = [names[j] if 0 <= j < len(rows) else None for j in (i - 1, i + 1)]
        tops = [{**t, "thumb": _top_thumb(t, task, images, held, files, put, img_dir)}
                for t in task.tops.get((layer, site, feature), [])]
        concepts = task.labels.get((layer, site, feature), [])
        matched = task.matches.get((layer, site, feature), [])
        page_rel = posixpath.join("features", m, str(layer), f"{stem}.html")
        # Everything the feature's page shows: when none of it changed, the page is not even rendered.
        page_key = digest(json.dumps([task.salt, _row_key(r), fmt(r.act_final), fmt(r.loss_final), text(r.error),
                                      text(r.part), shown, map_srcs, labels, i // task.page_size,
                                      fmt(tops), fmt(concepts), extra, fmt(measures(r)),
                                      fmt(matched), fmt(same)]).encode())
        if held.get(page_rel) == page_key:
            files[page_rel] = page_key
        else:
            metrics = {"model": model, "source": source_of(model), "method": text(getattr(r, "method", "")) or
                       "pixel unit", **measures(r), "weights": text(r.weights),
                       "layer": f"{layer} ({text(r.layer_name)})", "site": site, "feature": feature,
                       "status": text(r.status), "error": text(r.error), "activation init": r.act_init,
                       "activation final": r.act_final, "final loss": r.loss_final, "seed": r.seed,
                       "steps": r.steps, "lr": r.lr, "tv": r.tv, "device": text(r.device),
                       "precision": text(r.precision), "config": text(r.config_hash), "created": text(r.created_at),
                       "results file": text(r.part)}
            link = {k: (href(f"{stems[j]}.html"), labels[n]) if labels[n] is not None else None
                    for n, (k, j) in enumerate((("previous", i - 1), ("next", i + 1)))}
            curves = [c for c in (curve(r.curve_steps, r.loss_curve, "loss"),
                                  curve(r.curve_steps, r.act_curve, "activation (augmented copies)")) if c
                      ] if r.status == "ok" else []
            page = render(env, "feature.html", 3, search=False, title=f"{model} L{layer} {site} {feature}",
                          model=model, model_href=href(*up, "models", m, "index.html"), layer=layer,
                          layer_href=href(*up, "models", m, f"layer-{layer}-{i // task.page_size}.html"),
                          links=link, curves=curves,
                          image=href(*up, *img_dir, f"{stem}.png") if shown else None,
                          unavailable=r.status == "ok" and not shown,
                          metrics=[(k, fmt(v)) for k, v in metrics.items()],
                          variants=[href(*up, *img_dir, n) for n in extra.get("variants", [])],
                          start=href(*up, *img_dir, extra["start"]) if extra.get("start") else None,
                          attribution=href(*up, *img_dir, extra["attribution"]) if extra.get("attribution") else None,
                          tops=[{**t, "activation": fmt(t["activation"], ".4g")} for t in tops], maps=map_srcs,
                          concepts=[{**c, "score": fmt(c["score"], ".3f")} for c in concepts],
                          matches=[{**c, "score": fmt(c["score"], ".3f")} for c in matched], same=same)
            put(page_rel, page, page_key)
        act = acts[i]
        rel_act = act / best if act is not None and best not in (None, 0) else None
        cells.append({"label": f"{site} {feature}", "href": feature_href, "feature": feature, "stem": stem,
                      "concept": concepts[0]["concept"] if concepts else "",
                      "concept_score": concepts[0]["score"] if concepts else None,
                      "thumb": href("..", "..", *img_dir, f"{stem}-thumb.png") if shown else None,
                      "act": fmt(act, ".3g") if act is not None else "", "act_value": act if act is not None else "",
                      "rel": f"{rel_act:.2f}" if rel_act is not None else "", "failed": r.status != "ok",
                      "sorts": [number(getattr(r, "shift_robustness", None)), number(getattr(r, "plausibility", None)),
                                task.transfer.get((layer, site, feature))]})
    # The whole layer as data (label, file stem, activation, relative, failed, image shown, texts): the
    # pages sort across pages and the index's go-to box finds a feature's page with it.
    put(posixpath.join("models", m, f"layer-{layer}.js"), script_data("atlasLayers", f"{m}/{layer}", {
        "size": task.page_size,
        "cells": [[c["label"], c["stem"], c["act_value"] if c["act_value"] != "" else None,
                   number(c["rel"]), int(c["failed"]), int(c["thumb"] is not None), c["act"], c["rel"], c["concept"],
                   *c["sorts"]] for c in cells]}))
    for p in range(n_pages):
        page = render(env, "layer.html", 2, search=True, title=f"{model}: layer {layer} ({name})",
                      model_href="index.html", cells=cells[p * task.page_size:(p + 1) * task.page_size],
                      slug=m, layer=layer, page_size=task.page_size,
                      sorts=[k for k, i in (("shift", 0), ("plausible", 1), ("transfer", 2))
                             if any(c["sorts"][i] is not None for c in cells)],
                      pages=pages, current=p, layer_links={k: (href(f"layer-{v}-0.html"), v) if v is not None
                                                            else None for k, v in neighbours.items()})
        put(posixpath.join("models", m, f"layer-{layer}-{p}.html"), page)
    for rel in sorted(set(held) - set(files)):  # features that left the root, pages no longer needed
        writer.delete(rel)
    strongest = sorted((c for c in cells if c["act_value"] != ""), key=lambda c: -c["act_value"])[:TOP_PER_LAYER]
    by_concept: dict[str, list] = {}  # a unit under its best concept: [score, layer, stem, label, shown]
    for c in cells:
        if c["concept"] and c["concept_score"] is not None:
            by_concept.setdefault(c["concept"], []).append(
                [round(c["concept_score"], 4), layer, c["stem"], c["label"], int(c["thumb"] is not None)])
    concept_units = {k: sorted(v, key=lambda e: -e[0])[:UNITS_PER_CONCEPT] for k, v in sorted(by_concept.items())}
    ok = sum(not c["failed"] for c in cells)
    summary = {"layer": layer, "name": name, "count": len(cells), "ok": ok, "failed": len(cells) - ok,
               "pages": pages, "best": fmt(best, ".3g") if best is not None else "", "best_value": best,
               "sites": sorted({text(s) for s in rows["site"]}), "concepts": concept_units,
               "top": [{k: c[k] for k in ("label", "href", "thumb", "act")} for c in strongest]}
    writer.write_json(_layer_state_path(model, layer), {"files": files})
    return {"layer": layer, "files": len(files), "summary": summary, "written": writer.written,
            "deleted": writer.deleted}


#: Sites that read the same unit: an MLP unit after its GELU (the paper's) and before it (issue 28's
#: `mlp_pre`, which cannot win by switching the unit off): a feature's page shows the other's image.
SAME_UNIT = {"mlp": ("mlp_pre",), "mlp_pre": ("mlp",)}


def _copy_row_image(r, stem: str, img_dir: tuple, images: RootImages, held: dict, files: dict, put) -> bool:
    """Copy a row's visualization and its thumbnail into the site (unless this very row's already are);
    whether the page can show it."""
    if r.status != "ok":
        return False
    img, thumb = posixpath.join(*img_dir, f"{stem}.png"), posixpath.join(*img_dir, f"{stem}-thumb.png")
    key = _row_key(r)
    if held.get(img) == key and held.get(thumb) == key:
        files[img] = files[thumb] = key  # copied by an earlier build from this very row
        return True
    got = images.read(r.image_path)
    if got is None:
        return False
    put(img, got[0], key)
    put(thumb, got[1], key)
    return True


def measures(r) -> dict:
    """The row's measures for the feature page (sweep/method/measures.py; absent in older roots)."""
    names = {"pre-GELU final": "pre_final", "post-GELU final": "post_final", "shift robustness": "shift_robustness",
             "scale robustness": "scale_robustness", "plausibility": "plausibility",
             "plausibility of the photos": "plausibility_reference"}
    return {k: getattr(r, c) for k, c in names.items() if number(getattr(r, c, None)) is not None}


def _copy_image(rel, target: str, key: str, images: RootImages, held: dict, files: dict, put) -> bool:
    """Copy the root's image `rel` to the site's `target` unless this build or the last one already
    has it under `key`; False when it cannot be read (outside the root, damaged: one warning)."""
    if files.get(target) == key or held.get(target) == key:
        files[target] = key
        return True
    got = images.read(rel)
    if got is None:
        return False
    put(target, got[0], key)
    return True


def _extra_images(r, stem: str, img_dir: tuple, images: RootImages, held: dict, files: dict, put) -> dict:
    """A row's other images copied from the root: its diversity variants, MACO's attribution map and
    the photo an accentuation started from ({"variants": [file names], "attribution", "start": a file name})."""
    key = _row_key(r)
    out: dict = {"variants": []}
    paths = getattr(r, "variant_paths", None)
    for j, rel in enumerate(list(paths) if paths is not None and not isinstance(paths, float) else []):
        name = f"{stem}-v{j + 1}.png"
        if _copy_image(rel, posixpath.join(*img_dir, name), key, images, held, files, put):
            out["variants"].append(name)
    rel = getattr(r, "attribution_path", None)
    name = f"{stem}-attribution.png"
    if isinstance(rel, str) and rel and _copy_image(rel, posixpath.join(*img_dir, name), key, images, held, files,
                                                    put):
        out["attribution"] = name
    start = getattr(r, "start_path", None)
    if isinstance(start, str) and start:
        name = f"start-{digest(start.encode())[:12]}.png"
        same = digest(f"{start}\0{text(r.config_hash)}".encode())  # one photo per recipe: shared by its rows
        if _copy_image(start, posixpath.join(*img_dir, name), same, images, held, files, put):
            out["start"] = name
    return out


def _top_thumb(top: dict, task: LayerTask, images: RootImages, held: dict, files: dict, put, img_dir) -> str | None:
    """The site address of a top image's thumbnail, copied once per layer from the root; None if the
    root has none (the top images job makes them) or it does not decode."""
    rel = TOP_THUMBS.part(thumb_name(top["image"]), split=top["split"])
    if rel not in task.thumbs:
        return None
    target = posixpath.join(*img_dir, "top", posixpath.basename(rel))
    key = digest(f"{rel}\0{task.thumbs[rel]}".encode())
    if target not in files:
        if held.get(target) == key:
            files[target] = key
        else:
            got = images.read(rel)
            if got is None:
                return None
            put(target, got[0], key)
    return href("..", "..", "..", *img_dir, "top", posixpath.basename(rel))


def _drop_layer(writer: SiteWriter, model: str, layer) -> None:
    """Delete a layer's files and its state (the layer left the results root)."""
    for rel in (writer.read_json(_layer_state_path(model, layer)) or {}).get("files", {}):
        writer.delete(rel)
    writer.delete(_layer_state_path(model, layer))
    writer.deleted.pop()


def _check_site(site, results_fs, results_root: str, site_options: dict | None) -> SiteWriter:
    """The site's writer, refused when empty or when writing it could touch the results root's data."""
    site = os.fspath(site) if isinstance(site, (str, os.PathLike)) else ""
    if not site.strip() or "\x00" in site:
        raise SweepError(f"atlas output folder must be a non-empty path or URL, got {site!r}")
    writer = SiteWriter(site, site_options)
    if writer.local and os.path.exists(writer.root) and not os.path.isdir(writer.root):
        raise SweepError(f"atlas output folder {site!r} is a file; give a folder")
    same_store = writer.local == is_local(results_fs) and (
        writer.local or (writer.protocol == (results_fs.protocol if isinstance(results_fs.protocol, str)
                                             else results_fs.protocol[0])))
    if same_store:
        norm = os.path.realpath if writer.local else posixpath.normpath
        target, root = norm(writer.root), norm(results_root)
        data = [posixpath.join(root, d) for d in DATA_FOLDERS]
        written = [posixpath.join(target, d) for d in SITE_FOLDERS]
        if target == root or any(inside(target, d) or inside(d, w) for d in data for w in written):
            raise SweepError(f"atlas output folder {site!r} is the results root or overlaps its data folders "
                             f"({', '.join(DATA_FOLDERS)}); choose a separate folder")
    if not writer.local:  # credentials, bucket, endpoint: one line before any work (a local folder is made later)
        check_writable(writer.fs, writer.root, site, what="atlas output folder")
    return writer


def build_atlas(results_root: str, site: str, storage_options: dict | None = None, page_size: int = 256,
                site_options: dict | None = None, workers: int | None = None, progress: bool = False) -> dict:
    """Build or update the site; returns {"written": [...], "unchanged": n, "deleted": [...],
    "models_read": [...]}. storage_options open the results root, site_options the site."""
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise SweepError(f"atlas page size must be a whole number >= 1, got {page_size!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise SweepError(f"atlas workers must be a whole number >= 1, got {workers!r}")
    fs, root = open_root(results_root, storage_options)
    writer = _check_site(site, fs, root, site_options)
    try:
        inputs = list_inputs(fs, root)
    except SweepError:
        raise
    except Exception as exc:  # noqa: BLE001 - credentials, endpoint, permissions: whatever the store says
        raise SweepError(f"atlas: cannot list the results root {results_root!r}: {storage_problem(exc)}") from None
    if not inputs:
        raise SweepError(f"no features under {results_root!r}: nothing to show (run a sweep into it first)")
    salt = f"{ATLAS_FORMAT}:{templates_digest()}:{page_size}"
    state = writer.read_json(STATE) or {}
    known = state.get("models", {}) if state.get("salt") == salt else {}
    changed = [m for m, inp in inputs.items() if known.get(m, {}).get("digest") != inp.digest(salt)]
    total_files = sum(int(v.get("files", 0)) for v in known.values())
    written, deleted, summaries = [], [], {m: known[m] for m in inputs if m not in changed}
    tasks, contexts = [], {}
    seen: dict = {}

    def visualized() -> dict:  # every model's visualized units: read once, and only if a page links them
        if "units" not in seen:
            seen["units"] = visualized_units(fs, root, feature_parts(inputs))
        return seen["units"]

    for model in changed:
        mstate = (writer.read_json(_model_state_path(model)) or {}) if model in known else {}
        found, context = _plan_model(fs, root, inputs[model], mstate, salt, results_root, storage_options,
                                     site, site_options, page_size, visualized)
        tasks += found
        contexts[model] = context
    n_features = sum(len(t.rows) for t in tasks)
    pool_size = workers or (min(os.cpu_count() or 1, len(tasks)) if n_features >= POOL_MIN_FEATURES else 1)
    results: dict[str, dict[int, dict]] = {m: {} for m in changed}
    with tqdm(total=n_features, disable=not progress, unit="feature", desc="atlas") as bar:
        if pool_size > 1 and len(tasks) > 1:
            ctx = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited threads or handles
            with concurrent.futures.ProcessPoolExecutor(pool_size, mp_context=ctx) as pool:
                futures = {pool.submit(build_layer, t): t for t in tasks}
                for fut in concurrent.futures.as_completed(futures):
                    t = futures[fut]
                    results[t.model][t.layer] = fut.result()
                    bar.update(len(t.rows))
        else:
            for t in tasks:
                results[t.model][t.layer] = build_layer(t)
                bar.update(len(t.rows))
    env = templates()
    for model in changed:
        summary = _finish_model(writer, env, model, contexts[model], results[model], salt)
        for res in results[model].values():
            written += res["written"]
            deleted += res["deleted"]
        summaries[model] = summary
    removed = sorted(set(known) - set(inputs))
    for model in removed:  # a model no longer in the root: its pages go too
        mstate = writer.read_json(_model_state_path(model)) or {}
        for layer in mstate.get("layers", {}):
            _drop_layer(writer, model, layer)
        for rel in (_model_state_path(model), posixpath.join("models", slug(model), "index.html")):
            writer.delete(rel)
        writer.deleted.pop(-2)
        writer.discard(_model_concepts_path(model), report=False)
    deleted += writer.deleted
    has_concepts = bool(state.get("concepts"))
    match_items = sorted(next(iter(inputs.values())).matches.items())  # every model holds the same list
    match_rels = [rel for rel, _ in match_items]
    rosetta_key = digest(json.dumps([salt, match_items, {m: sorted(inputs[m].parts.items()) for m in sorted(inputs)}
                                     if match_items else []]).encode())
    has_rosetta = bool(state.get("rosetta"))
    if rosetta_key != state.get("rosetta_key"):
        has_rosetta = write_rosetta(writer, env, fs, root, match_rels, visualized() if match_rels else {})
    if changed or removed or not state or rosetta_key != state.get("rosetta_key"):
        has_concepts = write_concept_search(writer, env, {m: s for m, s in summaries.items()
                                                          if s["index"].get("concepts")}, _model_concepts_path)
        models = [{"name": m, "href": href("models", slug(m), "index.html"), "slug": slug(m), **summaries[m]["index"]}
                  for m in sorted(summaries) if summaries[m]["index"]["layers"]]  # a model with no readable row: none
        page = render(env, "index.html", 0, search=True, models=models, concepts=has_concepts, rosetta=has_rosetta,
                      title=f"Atlas: {len(models)} models, {sum(m['ok'] + m['failed'] for m in models)} features",
                      catalog={m["name"]: {"slug": m["slug"], "layers": m["sites"]} for m in models})
        if digest(page) != state.get("index"):
            writer.write("index.html", page)
        index_digest = digest(page)
        writer.write_json(STATE, {"salt": salt, "index": index_digest, "models": summaries, "concepts": has_concepts,
                                  "rosetta": has_rosetta, "rosetta_key": rosetta_key})
    written = sorted(set(written + writer.written))
    held = sum(int(v.get("files", 0)) for v in summaries.values()) + 1 + (2 if has_concepts else 0) + has_rosetta
    log.info("atlas: %d model(s) read of %d, %d file(s) written, %d deleted", len(changed), len(inputs),
             len(written), len(deleted))
    return {"written": written, "unchanged": max(0, max(total_files, held) - len(written)),
            "deleted": sorted(set(deleted)), "models_read": changed}


def _plan_model(fs, root, inputs: ModelInputs, mstate: dict, salt: str, results_root, storage_options,
                site, site_options, page_size, visualized=dict) -> tuple[list[LayerTask], dict]:
    """The layer tasks of a changed model: read only the parts of layers that changed. `visualized()`
    gives every model's visualized units (read once per build, only where there are matches)."""
    model = inputs.model
    old_parts: dict = mstate.get("parts", {})  # part -> [fingerprint, [layers]]
    changed_parts = [p for p, fp in inputs.parts.items() if old_parts.get(p, [None])[0] != fp]
    gone = [p for p in old_parts if p not in inputs.parts]
    fresh = read_feature_parts(fs, root, changed_parts)
    part_layers = {p: sorted(set(v[1])) for p, v in old_parts.items() if p in inputs.parts and p not in changed_parts}
    for p, g in fresh.groupby("part"):
        part_layers[p] = sorted({int(x) for x in g["layer"]})
    for p in changed_parts:
        part_layers.setdefault(p, [])
    layers = tuple(sorted({lay for ls in part_layers.values() for lay in ls}))
    old_layers = tuple(sorted(int(k) for k in mstate.get("layers", {})))
    side = digest(json.dumps([sorted(inputs.tops.items()), sorted(inputs.maps.items()),
                              sorted(inputs.thumbs.items()), sorted(inputs.labels.items()),
                              sorted(inputs.matches.items()), sorted(inputs.others.items()),
                              sorted(inputs.transfer.items())]).encode())
    if side != mstate.get("side"):
        affected = set(layers)
    else:
        affected = {lay for p in changed_parts for lay in part_layers.get(p, [])}
        affected |= {lay for p in gone for lay in old_parts[p][1]}
        for lay in set(layers) ^ set(old_layers):  # a layer came or went: its neighbours' links change
            below, above = [x for x in layers if x < lay], [x for x in layers if x > lay]
            affected |= {lay, *below[-1:], *above[:1]}
        affected &= set(layers)
    more = [p for p, ls in part_layers.items() if p not in changed_parts and affected & set(ls)]
    rows = pd.concat([fresh, read_feature_parts(fs, root, more)], ignore_index=True) if more else fresh
    if len(rows):
        rows = rows.sort_values("created_at", kind="stable", na_position="first").drop_duplicates(
            ["layer", "site", "feature"], keep="last")
    tops = read_top_images(fs, root, list(inputs.tops)) if affected and inputs.tops else {}
    maps = {k: [(rel, inputs.maps[rel]) for rel in v] for k, v in map_files(inputs.maps).items()} if affected else {}
    labels = read_labels(fs, root, list(inputs.labels)) if affected and inputs.labels else {}
    matches = counterparts(read_matches(fs, root, list(inputs.matches), model), visualized()) \
        if affected and inputs.matches else {}
    transfer = read_transfer(fs, root, list(inputs.transfer)) if affected and inputs.transfer else {}
    tasks = []
    for layer in sorted(affected):
        lrows = rows[rows["layer"] == layer]
        if lrows.empty:
            continue
        tasks.append(LayerTask(results_root, storage_options, site, site_options, model, layer, layers, page_size,
                               lrows, {k: v for k, v in tops.items() if k[0] == layer},
                               {k: v for k, v in maps.items() if k[0] == layer}, salt, inputs.thumbs,
                               {k: v for k, v in labels.items() if k[0] == layer},
                               {k: v for k, v in matches.items() if k[0] == layer},
                               {k: v for k, v in transfer.items() if k[0] == layer}))
    context = {"inputs": inputs, "part_layers": part_layers, "layers": layers, "side": side,
               "old_layers": mstate.get("layers", {}),
               "model_page": mstate.get("model_page")}
    return tasks, context


def _finish_model(writer: SiteWriter, env, model: str, context: dict, built: dict[int, dict], salt: str) -> dict:
    """The model page and state from its layers (rebuilt ones and kept ones); its index-row summary."""
    from sweep.models.anatomy import anatomy_of
    from sweep.models.zoo import REGISTRY

    old = context["old_layers"]
    layers = {}
    for layer in context["layers"]:
        if layer in built:
            layers[str(layer)] = {"files": built[layer]["files"], "summary": built[layer]["summary"]}
        elif str(layer) in old:
            layers[str(layer)] = old[str(layer)]
    for key in set(old) - set(layers):  # a layer that left the root
        _drop_layer(writer, model, key)
    m = slug(model)
    summaries = [layers[k]["summary"] for k in sorted(layers, key=int)]
    page = render(env, "model.html", 2, search=True, title=model, source=source_of(model), layers=summaries)
    model_page = posixpath.join("models", m, "index.html")
    if context["model_page"] != digest(page):
        writer.write(model_page, page)
    files = sum(int(v["files"]) for v in layers.values()) + 1
    writer.write_json(_model_state_path(model), {
        "parts": {p: [context["inputs"].parts[p], context["part_layers"].get(p, [])] for p in context["inputs"].parts},
        "layers": layers, "side": context["side"], "model_page": digest(page)})
    # Only zoo models are built for their anatomy: a name read from the root is data, and building a
    # `module:` name would import and call code the root names.
    entry = REGISTRY.get(model) if model in REGISTRY else None
    anatomy = anatomy_of(model) if entry else None
    ok = sum(s["ok"] for s in summaries)
    merged: dict[str, list] = {}
    for s in summaries:
        for concept, units in s.get("concepts", {}).items():
            merged.setdefault(concept, []).extend(units)
    concepts = {k: sorted(v, key=lambda e: -e[0])[:UNITS_PER_CONCEPT] for k, v in sorted(merged.items())}
    if concepts:
        writer.write_json(_model_concepts_path(model), {"slug": m, "concepts": concepts})
    else:
        writer.discard(_model_concepts_path(model), report=False)
    index = {"source": source_of(model), "family": entry.family if entry else "", "concepts": len(concepts),
             "input": anatomy.preprocess.input_size if anatomy else "",
             "blocks": len(anatomy.blocks) if anatomy else "", "layers": len(summaries), "ok": ok,
             "failed": sum(s["failed"] for s in summaries),
             "sites": {str(s["layer"]): s.get("sites", []) for s in summaries}}
    return {"digest": context["inputs"].digest(salt), "files": files, "index": index}
