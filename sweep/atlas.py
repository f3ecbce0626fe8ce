"""A static, browsable atlas of a results root: no server needed, uploadable to a bucket as it is.

    index.html                         models (family, input, blocks, features, failures), searchable
    models/<m>/index.html              the model's layers, with counts
    models/<m>/layer-<l>-<p>.html      a page of that layer's features (thumbnails, lazy-loaded)
    features/<m>/<l>/<site>-<f>.html   one feature: image, metrics, loss curve, activation maps
    img/...                            full images and 96 px thumbnails copied from the results root

Pages hold no timestamps, so building again after nothing changed writes nothing, and after new
results arrive writes only the pages and images that changed.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import logging
import math
import os
import posixpath
from dataclasses import dataclass, field

import pandas as pd
from PIL import Image

from sweep.errors import SweepError
from sweep.results import Results

log = logging.getLogger(__name__)

STYLE = """body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222}
a{color:#0b57d0;text-decoration:none} table{border-collapse:collapse} td,th{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:6px} .cell{width:100px;text-align:center;font-size:.75rem}
.cell img{width:96px;height:96px;image-rendering:pixelated;border:1px solid #ccc} .failed{color:#b00}
input{padding:.3rem;margin:.5rem 0;width:20rem} nav{margin-bottom:1rem}"""
FILTER_JS = """<script>
function filterRows(q){q=q.toLowerCase();document.querySelectorAll('[data-key]').forEach(function(e){
e.style.display=e.getAttribute('data-key').toLowerCase().indexOf(q)>=0?'':'none';});}
</script>"""


def slug(model: str) -> str:
    return model.replace("/", "__")


def _page(title: str, body: str, depth: int, search: bool = False) -> bytes:
    up = "../" * depth
    search_box = ('<input placeholder="filter..." oninput="filterRows(this.value)">' if search else "")
    return (f"<!doctype html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style>{FILTER_JS if search else ''}</head><body>"
            f"<nav><a href='{up}index.html'>atlas</a></nav><h1>{html.escape(title)}</h1>{search_box}{body}"
            f"</body></html>").encode()


@dataclass
class SiteWriter:
    """Writes files under the site folder only when their bytes change."""

    root: str
    written: list[str] = field(default_factory=list)
    unchanged: int = 0

    def write(self, rel: str, data: bytes) -> None:
        path = os.path.join(self.root, rel)
        if os.path.exists(path):
            with open(path, "rb") as fh:
                if hashlib.sha256(fh.read()).digest() == hashlib.sha256(data).digest():
                    self.unchanged += 1
                    return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        self.written.append(rel)


def _svg_curve(steps, values, width=360, height=120) -> str:
    if not len(values):
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    last = max(steps) or 1
    pts = " ".join(f"{5 + (width - 10) * s / last:.1f},{height - 5 - (height - 10) * (v - lo) / span:.1f}"
                   for s, v in zip(steps, values))
    return (f"<svg width='{width}' height='{height}' role='img' aria-label='loss curve'>"
            f"<rect width='100%' height='100%' fill='white' stroke='#ccc'/>"
            f"<polyline fill='none' stroke='#0b57d0' stroke-width='2' points='{pts}'/></svg>"
            f"<div>loss {lo:.4g} .. {hi:.4g} over {last} iterations</div>")


def _thumb(png: bytes, size: int = 96) -> bytes:
    with Image.open(io.BytesIO(png)) as im:
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()


def build_atlas(results_root: str, site: str, storage_options: dict | None = None, page_size: int = 256) -> dict:
    """Build or update the site; returns {"written": [...], "unchanged": n}."""
    from sweep.models.anatomy import anatomy_of
    from sweep.models.zoo import REGISTRY

    results = Results(results_root, storage_options)
    features = results.features()
    if features.empty:
        raise SweepError(f"no feature results under {results_root!r}")
    out = SiteWriter(site)
    fs, root = results.fs, results.root
    maps = _activation_map_files(fs, root)
    tops = _top_images(results)
    rows = []
    for model, mdf in features.groupby("model", sort=True):
        entry = REGISTRY.get(model) if model in REGISTRY else None
        anatomy = anatomy_of(model) if entry else None
        ok = mdf[mdf["status"] == "ok"]
        rows.append((model, entry.family if entry else "", anatomy.preprocess.input_size if anatomy else "",
                     len(anatomy.blocks) if anatomy else "", len(ok), len(mdf) - len(ok)))
        _model_pages(out, fs, root, model, mdf, page_size, maps, tops)
    table = "".join(
        f"<tr data-key='{html.escape(m)} {f}'><td><a href='models/{slug(m)}/index.html'>{html.escape(m)}</a></td>"
        f"<td>{f}</td><td>{size}</td><td>{blocks}</td><td>{n}</td><td class='failed'>{bad or ''}</td></tr>"
        for m, f, size, blocks, n, bad in rows)
    out.write("index.html", _page(f"Atlas: {len(rows)} models, {len(features)} features",
                                  "<table><tr><th>model</th><th>family</th><th>input</th><th>blocks</th>"
                                  f"<th>features</th><th>failed</th></tr>{table}</table>", 0, search=True))
    log.info("atlas: %d file(s) written, %d unchanged", len(out.written), out.unchanged)
    return {"written": out.written, "unchanged": out.unchanged}


def _activation_map_files(fs, root: str) -> dict:
    """(model, layer, site, feature) -> [png paths] of activation maps present under the root."""
    import urllib.parse

    base = posixpath.join(root, "activation_maps", "files")
    found: dict = {}
    if not fs.exists(base):
        return found
    for path in fs.find(base):
        if not path.endswith(".png"):
            continue
        parts = path[len(base) + 1:].split("/")
        if len(parts) < 4:
            continue
        model = urllib.parse.unquote(parts[0].split("=", 1)[1])
        layer = int(parts[1].split("=", 1)[1])
        site, _, feat = parts[2].rpartition("-")
        found.setdefault((model, layer, site, int(feat)), []).append(path)
    return found


def _top_images(results: Results) -> dict:
    """(model, layer, site, feature) -> [(split, rank, image_id, activation)] where top images exist."""
    if not results.fs.exists(posixpath.join(results.root, "top_images")):
        return {}
    top = results.top_images()
    found: dict = {}
    for r in top.sort_values(["split", "rank"]).itertuples(index=False):
        found.setdefault((r.model, int(r.layer), r.site, int(r.feature)), []).append(
            (r.split, int(r.rank), r.image_id, float(r.activation)))
    return found


def _model_pages(out: SiteWriter, fs, root: str, model: str, mdf: pd.DataFrame, page_size: int, maps: dict,
                 tops: dict) -> None:
    m = slug(model)
    layer_rows = []
    for (layer, layer_name), ldf in mdf.groupby(["layer", "layer_name"], sort=True):
        ldf = ldf.sort_values(["site", "feature"])
        pages = max(1, math.ceil(len(ldf) / page_size))
        layer_rows.append(f"<tr data-key='{layer} {html.escape(layer_name)}'><td>{layer}</td><td>{html.escape(layer_name)}</td>"
                          f"<td>{len(ldf)}</td><td>" + " ".join(
                              f"<a href='layer-{layer}-{p}.html'>page {p + 1}</a>" for p in range(pages)) + "</td></tr>")
        for p in range(pages):
            chunk = ldf.iloc[p * page_size:(p + 1) * page_size]
            cells = []
            for r in chunk.itertuples(index=False):
                page = f"../../features/{m}/{layer}/{r.site}-{r.feature}.html"
                if r.status == "ok":
                    thumb = f"img/{m}/{layer}/{r.site}-{r.feature}-thumb.png"
                    _copy_image(out, fs, root, r.image_path, f"img/{m}/{layer}/{r.site}-{r.feature}.png", thumb)
                    img = f"<img loading='lazy' src='../../{thumb}' alt='{r.site} {r.feature}'>"
                else:
                    img = "<div class='failed'>failed</div>"
                cells.append(f"<div class='cell' data-key='{r.site} {r.feature}'><a href='{page}'>{img}<br>"
                             f"{r.site} {r.feature}</a></div>")
                key = (model, int(layer), r.site, int(r.feature))
                _feature_page(out, model, r, maps.get(key, []), tops.get(key, []), fs)
            nav = " ".join(f"<a href='layer-{layer}-{q}.html'>{q + 1}</a>" if q != p else f"<b>{q + 1}</b>"
                           for q in range(pages))
            out.write(f"models/{m}/layer-{layer}-{p}.html",
                      _page(f"{model}: layer {layer} ({layer_name})",
                            f"<p><a href='index.html'>layers</a> | page {nav}</p><div class='grid'>{''.join(cells)}</div>",
                            2, search=True))
    out.write(f"models/{m}/index.html", _page(model, "<table><tr><th>layer</th><th>block</th><th>features</th>"
                                                     f"<th>pages</th></tr>{''.join(layer_rows)}</table>", 2, search=True))


def _copy_image(out: SiteWriter, fs, root: str, image_path: str, full: str, thumb: str) -> None:
    data = fs.cat_file(posixpath.join(root, image_path))
    out.write(full, data)
    out.write(thumb, _thumb(data))


def _feature_page(out: SiteWriter, model: str, r, map_paths: list[str], tops: list, fs) -> None:
    m = slug(model)
    layer = int(r.layer)
    metrics = {"model": model, "layer": f"{layer} ({r.layer_name})", "site": r.site, "feature": int(r.feature),
               "status": r.status, "error": r.error or "", "activation init": r.act_init,
               "activation final": r.act_final, "final loss": r.loss_final, "seed": int(r.seed),
               "steps": int(r.steps), "lr": r.lr, "tv": r.tv, "config": r.config_hash}
    table = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in metrics.items())
    body = f"<p><a href='../../../models/{m}/layer-{layer}-0.html'>layer {layer}</a></p>"
    if r.status == "ok":
        body += f"<img src='../../../img/{m}/{layer}/{r.site}-{r.feature}.png' alt='visualization' width='336'>"
        body += "<h2>Loss</h2>" + _svg_curve(list(r.curve_steps), list(r.loss_curve))
    body += f"<h2>Metrics</h2><table>{table}</table>"
    if tops:
        body += ("<h2>Top natural images</h2><table><tr><th>split</th><th>rank</th><th>image</th><th>activation</th></tr>"
                 + "".join(f"<tr><td>{html.escape(str(sp))}</td><td>{rank + 1}</td><td>{html.escape(str(img))}</td>"
                           f"<td>{act:.4g}</td></tr>" for sp, rank, img, act in tops) + "</table>")
    if map_paths:
        imgs = []
        for i, path in enumerate(sorted(map_paths)):
            rel = f"img/{m}/{layer}/{r.site}-{r.feature}-map{i}.png"
            out.write(rel, fs.cat_file(path))
            imgs.append(f"<img src='../../../{rel}' alt='activation map' width='160'>")
        body += "<h2>Activation maps</h2><div class='grid'>" + "".join(imgs) + "</div>"
    out.write(f"features/{m}/{layer}/{r.site}-{r.feature}.html",
              _page(f"{model} L{layer} {r.site} {r.feature}", body, 3))


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.5g}"
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)
