"""A static, browsable atlas of a results root: no server needed, uploadable to a bucket as it is.

    index.html                         models (family, input, blocks, features, failures), searchable
    models/<m>/index.html              the model's layers, with counts
    models/<m>/layer-<l>-<p>.html      a page of that layer's features (thumbnails, lazy-loaded)
    features/<m>/<l>/<site>-<f>.html   one feature: image, metrics, loss curve, activation maps
    img/...                            full images and 96 px thumbnails copied from the results root

Pages hold no timestamps, so building again after nothing changed writes nothing, and after new
results arrive writes only the pages and images that changed.

Results roots are shared, so everything read from one is untrusted data: pages come from autoescaping
jinja2 templates (sweep/views/templates/atlas), file names are slugs (`slug`) checked to stay inside the site
folder, links are percent-encoded, images are read only from inside the root and published only when
they decode, and a damaged image or Parquet part costs its own entry (one warning), never the build.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import posixpath
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

import fsspec
import jinja2
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from sweep.core.errors import SweepError, one_line
from sweep.models.names import source_of
from sweep.store.outputs import FEATURE_SCHEMA, is_local, under_root
from sweep.store.results import Results

log = logging.getLogger(__name__)

#: Folders of a results root that hold its data: the site is never written into (or over) them.
DATA_FOLDERS = ("features", "images", "activation_maps", "top_images", "invariance", "ablations", "tuning", "runs")
#: Folders of the site that pages and images are written to.
SITE_FOLDERS = ("models", "features", "img")
#: What a damaged or hostile file raises while read or decoded (UnidentifiedImageError is an OSError).
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
READ_ERRORS = (OSError, pa.ArrowException)
_PLAIN = re.compile(r"[A-Za-z0-9_]{1,64}")


def slug(name) -> str:
    """A file name for a name read from the results root.

    Plain names (letters, digits, underscore) are kept; anything else is reduced to those characters
    plus a hash of the original, so a slug is never `..`, never holds a separator, a colon or NUL, and
    two names never share one (plain names have no '-', hashed ones do).
    """
    text = str(name)
    if _PLAIN.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{re.sub(r'[^A-Za-z0-9_]+', '_', text).strip('_')[:40] or 'x'}-{digest}"


def href(*segments) -> str:
    """A relative link with every path segment percent-encoded."""
    return "/".join(quote(str(s), safe="") for s in segments)


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


@dataclass
class SiteWriter:
    """Writes files under the site folder only when their bytes change, and nowhere else."""

    root: str
    written: list[str] = field(default_factory=list)
    unchanged: int = 0

    def path(self, rel: str) -> str:
        """The file for a site-relative path; a path that would leave the site folder is refused."""
        base = os.path.realpath(self.root)
        path = os.path.realpath(os.path.join(base, rel)) if "\x00" not in rel and not os.path.isabs(rel) else ""
        if not path or path == base or not _inside(path, base):
            raise SweepError(f"atlas: refusing to write {rel!r}: outside the site folder {self.root!r}")
        return path

    def write(self, rel: str, data: bytes) -> None:
        path = self.path(rel)
        try:
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
        except OSError as exc:
            raise SweepError(f"atlas: cannot write {path!r}: {one_line(exc)}") from None
        self.written.append(rel)


@dataclass
class Site:
    """The site being built: where it is written and the templates its pages come from."""

    out: SiteWriter
    env: jinja2.Environment

    def page(self, rel: str, template: str, depth: int, search: bool = False, **context) -> None:
        text = self.env.get_template(template).render(up="../" * depth, search=search, **context)
        self.out.write(rel, text.encode())


def _templates() -> jinja2.Environment:
    """Autoescaping everywhere: a value from the results root is text in a page, never markup."""
    return jinja2.Environment(loader=jinja2.PackageLoader("sweep.views", "templates/atlas"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


@dataclass
class RootImages:
    """PNGs read from inside the results root only, published only when they decode."""

    fs: fsspec.AbstractFileSystem
    root: str

    def locate(self, rel) -> str | None:
        """The root's file for a root-relative path, or None for anything that could point elsewhere:
        absolute paths, `..`, URL schemes, backslashes, NUL, and (locally) links leading out."""
        path = under_root(self.root, rel)
        if path is not None and is_local(self.fs):
            root = os.path.realpath(self.root)
            if not _inside(os.path.realpath(path), root):
                return None
        return path

    def read(self, rel) -> tuple[bytes, bytes] | None:
        """(the PNG, its thumbnail), or None with one warning when it is outside the root or damaged."""
        if not isinstance(rel, str) or not rel:
            log.warning("atlas: a result has no image path; shown as unavailable")
            return None
        path = self.locate(rel)
        if path is None:
            log.warning("atlas: image path %r is not inside the results root; shown as unavailable", rel)
            return None
        try:
            data = self.fs.cat_file(path)
            return data, _thumb(data)
        except IMAGE_ERRORS as exc:
            why = "not a decodable image" if isinstance(exc, UnidentifiedImageError) else one_line(exc)
            log.warning("atlas: image %r cannot be read (%s); shown as unavailable", rel, why)
            return None


def _curve(steps, values, width: int = 360, height: int = 120) -> dict | None:
    """The loss curve's polyline, built from finite floats only (anything else in the row is dropped)."""
    pts = []
    for s, v in zip(steps if steps is not None else [], values if values is not None else []):
        try:
            s, v = float(s), float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(s) and math.isfinite(v):
            pts.append((s, v))
    if not pts:
        return None
    lo, hi = min(v for _, v in pts), max(v for _, v in pts)
    span = (hi - lo) or 1.0
    last = max(s for s, _ in pts) or 1.0
    xy = [(5 + (width - 10) * s / last, height - 5 - (height - 10) * (v - lo) / span) for s, v in pts]
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy if math.isfinite(x) and math.isfinite(y))
    return {"width": width, "height": height, "points": points, "lo": f"{lo:.4g}", "hi": f"{hi:.4g}",
            "last": f"{last:g}"}


def _thumb(png: bytes, size: int = 96) -> bytes:
    with Image.open(io.BytesIO(png)) as im:
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()


def _check_site(site, results: Results) -> str:
    """The site folder, refused when empty or when writing it could touch the results root's data."""
    site = os.fspath(site) if isinstance(site, (str, os.PathLike)) else ""
    if not site.strip() or "\x00" in site:
        raise SweepError(f"atlas output folder must be a non-empty path, got {site!r}")
    if os.path.exists(site) and not os.path.isdir(site):
        raise SweepError(f"atlas output folder {site!r} is a file; give a folder")
    if is_local(results.fs):
        target, root = os.path.realpath(site), os.path.realpath(results.root)
        data = [os.path.join(root, d) for d in DATA_FOLDERS]
        written = [os.path.join(target, d) for d in SITE_FOLDERS]
        if target == root or any(_inside(target, d) or _inside(d, w) for d in data for w in written):
            raise SweepError(f"atlas output folder {site!r} is the results root or overlaps its data folders "
                             f"({', '.join(DATA_FOLDERS)}); choose a separate folder")
    return site


def _read_features(results: Results) -> pd.DataFrame:
    """Every readable feature row: when the root cannot be read whole, part by part, skipping (with a
    warning) a part that cannot be read, and rows without a whole layer or feature number."""
    try:
        frame = results.features()
    except READ_ERRORS as exc:
        log.warning("atlas: some results under %r cannot be read (%s); reading part by part",
                    results.root, one_line(exc))
        frame = _read_parts(results.fs, posixpath.join(results.root, "features"))
    if frame.empty:
        return frame
    frame = frame.assign(**{name: None for name in ["model", *FEATURE_SCHEMA.names] if name not in frame})
    for name in ("layer", "feature"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    usable = frame["model"].notna() & (frame["layer"] % 1 == 0) & (frame["feature"] % 1 == 0)
    if not usable.all():
        log.warning("atlas: skipping %d row(s) without a model or a whole layer and feature number",
                    int((~usable).sum()))
    return frame[usable]


def _read_parts(fs, base: str) -> pd.DataFrame:
    """Each Parquet part under `base` on its own, with its model from its folder name (the files and
    names pyarrow's hive discovery would use)."""
    frames = []
    for path in sorted(fs.find(base)):
        names = path[len(base) + 1:].split("/")
        if any(n.startswith((".", "_")) for n in names):
            continue
        try:
            with fs.open(path, "rb") as fh:
                frame = pq.read_table(fh).to_pandas()
        except READ_ERRORS as exc:
            log.warning("atlas: skipping %r: cannot be read (%s)", path, one_line(exc))
            continue
        model = next((unquote(n[len("model="):]) for n in names if n.startswith("model=")), None)
        frames.append(frame.assign(model=model))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def build_atlas(results_root: str, site: str, storage_options: dict | None = None, page_size: int = 256) -> dict:
    """Build or update the site; returns {"written": [...], "unchanged": n}."""
    from sweep.models.anatomy import anatomy_of
    from sweep.models.zoo import REGISTRY

    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise SweepError(f"atlas page size must be a whole number >= 1, got {page_size!r}")
    results = Results(results_root, storage_options)
    site = _check_site(site, results)
    features = _read_features(results)
    if features.empty:
        raise SweepError(f"no feature results under {results_root!r}")
    out = Site(SiteWriter(site), _templates())
    images = RootImages(results.fs, results.root)
    maps = _activation_map_files(results.fs, results.root)
    tops = _top_images(results)
    models = []
    for model, mdf in features.groupby("model", sort=True):
        model = str(model)
        # Only zoo models are built for their anatomy: a name read from the root is data, and building
        # a `module:` name would import and call code the root names.
        entry = REGISTRY.get(model) if model in REGISTRY else None
        anatomy = anatomy_of(model) if entry else None
        ok = int((mdf["status"] == "ok").sum())
        models.append({"name": model, "href": href("models", slug(model), "index.html"),
                       "source": source_of(model), "family": entry.family if entry else "",
                       "input": anatomy.preprocess.input_size if anatomy else "",
                       "blocks": len(anatomy.blocks) if anatomy else "", "ok": ok, "failed": len(mdf) - ok})
        _model_pages(out, images, model, mdf, page_size, maps, tops)
    out.page("index.html", "index.html", 0, search=True, models=models,
             title=f"Atlas: {len(models)} models, {len(features)} features")
    log.info("atlas: %d file(s) written, %d unchanged", len(out.out.written), out.out.unchanged)
    return {"written": out.out.written, "unchanged": out.out.unchanged}


def _activation_map_files(fs, root: str) -> dict:
    """(model, layer, site, feature) -> [root-relative png paths] of activation maps under the root."""
    base = posixpath.join(root, "activation_maps", "files")
    found: dict = {}
    if not fs.exists(base):
        return found
    for path in fs.find(base):
        if not path.endswith(".png"):
            continue
        parts = path[len(base) + 1:].split("/")
        try:
            site, _, feat = parts[2].rpartition("-")
            key = (unquote(parts[0].split("=", 1)[1]), int(parts[1].split("=", 1)[1]), site, int(feat))
        except (IndexError, ValueError):
            log.warning("atlas: skipping %r: not activation_maps/files/model=<m>/layer=<l>/<site>-<f>/<image>.png",
                        path)
            continue
        found.setdefault(key, []).append(path[len(root) + 1:])
    return found


def _top_images(results: Results) -> dict:
    """(model, layer, site, feature) -> [(split, rank, image_id, activation)] where top images exist."""
    if not results.fs.exists(posixpath.join(results.root, "top_images")):
        return {}
    try:
        top = results.top_images()
    except READ_ERRORS as exc:
        log.warning("atlas: top images under %r cannot be read (%s); left out", results.root, one_line(exc))
        return {}
    top = top.dropna(subset=["model", "layer", "feature", "rank"])
    found: dict = {}
    for r in top.sort_values(["split", "rank"]).itertuples(index=False):
        found.setdefault((r.model, int(r.layer), r.site, int(r.feature)), []).append(
            {"split": _text(r.split), "rank": int(r.rank) + 1, "image": _text(r.image_id),
             "activation": _fmt(r.activation, ".4g")})
    return found


def _model_pages(out: Site, images: RootImages, model: str, mdf: pd.DataFrame, page_size: int, maps: dict,
                 tops: dict) -> None:
    m = slug(model)
    layers = []
    for layer, ldf in mdf.groupby("layer", sort=True):
        layer = int(layer)
        ldf = ldf.sort_values(["site", "feature"])
        pages = [href(f"layer-{layer}-{p}.html") for p in range(max(1, math.ceil(len(ldf) / page_size)))]
        name = ", ".join(sorted({_text(n) for n in ldf["layer_name"]}))
        layers.append({"layer": layer, "name": name, "count": len(ldf), "pages": pages})
        for p in range(len(pages)):
            cells = [_feature(out, images, model, r, maps, tops)
                     for r in ldf.iloc[p * page_size:(p + 1) * page_size].itertuples(index=False)]
            out.page(posixpath.join("models", m, f"layer-{layer}-{p}.html"), "layer.html", 2, search=True,
                     title=f"{model}: layer {layer} ({name})", cells=cells, pages=pages, current=p)
    out.page(posixpath.join("models", m, "index.html"), "model.html", 2, search=True, title=model, layers=layers,
             source=source_of(model))


def _feature(out: Site, images: RootImages, model: str, r, maps: dict, tops: dict) -> dict:
    """Copy one feature's image, write its page, and return its cell on the layer page."""
    m, layer, feature, site = slug(model), int(r.layer), int(r.feature), _text(r.site)
    stem, folder = f"{slug(site)}-{feature}", ("img", m, str(layer))
    shown = None
    if r.status == "ok":
        got = images.read(r.image_path)
        if got is not None:
            out.out.write(posixpath.join(*folder, f"{stem}.png"), got[0])
            out.out.write(posixpath.join(*folder, f"{stem}-thumb.png"), got[1])
            shown = stem
    key = (model, layer, site, feature)
    map_srcs = []
    for rel in sorted(maps.get(key, [])):
        got = images.read(rel)
        if got is not None:
            name = f"{stem}-map{len(map_srcs)}.png"
            out.out.write(posixpath.join(*folder, name), got[0])
            map_srcs.append(href("..", "..", "..", *folder, name))
    metrics = {"model": model, "source": source_of(model), "weights": _text(getattr(r, "weights", "")),
               "layer": f"{layer} ({_text(r.layer_name)})", "site": site, "feature": feature,
               "status": r.status, "error": r.error, "activation init": r.act_init, "activation final": r.act_final,
               "final loss": r.loss_final, "seed": r.seed, "steps": r.steps, "lr": r.lr, "tv": r.tv,
               "config": r.config_hash}
    out.page(posixpath.join("features", m, str(layer), f"{stem}.html"), "feature.html", 3,
             title=f"{model} L{layer} {site} {feature}", layer=layer,
             layer_href=href("..", "..", "..", "models", m, f"layer-{layer}-0.html"),
             image=href("..", "..", "..", *folder, f"{stem}.png") if shown else None,
             unavailable=r.status == "ok" and not shown,
             curve=_curve(r.curve_steps, r.loss_curve) if r.status == "ok" else None,
             metrics=[(k, _fmt(v)) for k, v in metrics.items()], tops=tops.get(key, []), maps=map_srcs)
    label = f"{site} {feature}"
    return {"label": label, "href": href("..", "..", "features", m, str(layer), f"{stem}.html"),
            "thumb": href("..", "..", *folder, f"{stem}-thumb.png") if shown else None, "failed": r.status != "ok"}


def _text(v) -> str:
    """A cell as text: missing values are empty."""
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _fmt(v, spec: str = ".5g") -> str:
    """A metric as text: numbers formatted, lists as JSON, missing values empty."""
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, float):
        return "" if math.isnan(v) else format(v, spec)
    return json.dumps(v) if isinstance(v, (list, dict)) else _text(v)
