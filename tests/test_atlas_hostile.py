"""The atlas of a hostile results root: script and attribute payloads in every string column and in
partition folder names, `..` and absolute image paths, links out of the root, damaged PNGs and Parquet
parts. No payload becomes markup, no file is read from outside the root or written outside the site,
and Chromium runs no script on any page."""

import hashlib
import io
import json
import logging
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from test_atlas import browsing

from sweep.core.errors import SweepError
from sweep.store.layout import (
    FEATURE_SCHEMA,
    LABEL_SCHEMA,
    LABELS,
    MATCH_SCHEMA,
    MATCHES,
    TOP_SCHEMA,
    TRANSFER,
    partition_value,
)
from sweep.views.atlas import SiteWriter, build_atlas, slug

SCRIPT = "<script>alert(1)</script>"
ONERROR = '"><img src=x onerror=alert(1)>'
#: Feature sites, one per model (folder names of activation maps: no '/').
SITES = [ONERROR, "../../../../escaped", "javascript:alert(1)", "'\"><svg onload=alert(1)>", "..\\..\\win"]
PAYLOADS = [SCRIPT, ONERROR, "javascript:alert(1)", "'\"><svg onload=alert(1)>", "../../../../escaped",
            "/etc/hostname", "..\\..\\win", "nul\x00byte"]
#: Model partitions: URI-encoded payloads (as sweep writes them) and one raw folder name.
MODELS = {SCRIPT: partition_value(SCRIPT), "javascript:alert(1)": partition_value("javascript:alert(1)"),
          "../../../../escaped": partition_value("../../../../escaped"), "..": "..",
          "<img src=x onerror=alert(1)>": "<img src=x onerror=alert(1)>"}


def _png(color=(200, 30, 30), size=8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def _row(layer, site, feature, image_path, status="ok", text=SCRIPT) -> dict:
    """A feature row whose every string column holds a payload."""
    strings = {f.name: text for f in FEATURE_SCHEMA if f.type == pa.string()}
    return {**strings, "layer": layer, "layer_name": text, "site": site, "feature": feature, "status": status,
            "error": ONERROR, "seed": 1, "steps": 3, "lr": 0.05, "tv": float("inf"), "act_init": float("nan"),
            "curve_steps": [0, 1, 2, 3], "loss_curve": [1.0, float("nan"), float("inf"), 0.5],
            "image_path": image_path, "attribution_path": None, "start_path": None}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    results, outside = base / "results", base / "outside"
    outside.mkdir()
    secret_png = _png((1, 2, 3), 9)  # a valid image outside the root: it must never be copied
    (outside / "secret.png").write_bytes(secret_png)
    good = _png()
    rows = {}
    for i, (model, folder) in enumerate(MODELS.items()):
        img_dir = results / "images" / f"model={folder}" / "layer=0"
        img_dir.mkdir(parents=True)
        (img_dir / "ok.png").write_bytes(good)
        rel = f"images/model={folder}/layer=0/ok.png"
        rows[folder] = [_row(0, SITES[i], 0, rel, text=PAYLOADS[(i + 1) % len(PAYLOADS)]),
                        _row(1, "mlp", 1, rel, status="failed", text=PAYLOADS[(i + 2) % len(PAYLOADS)])]
    # The bad image paths, all on the first model: out of the root, links out, URLs, damaged PNGs.
    first = MODELS[SCRIPT]
    img_dir = results / "images" / f"model={first}" / "layer=0"
    os.symlink(outside / "secret.png", img_dir / "link.png")
    (img_dir / "empty.png").write_bytes(b"")
    (img_dir / "truncated.png").write_bytes(good[: len(good) // 2])
    bad_paths = ["/etc/hostname", str(outside / "secret.png"), "../outside/secret.png",
                 f"images/model={first}/layer=0/../../../../outside/secret.png", "file:///etc/hostname",
                 "javascript:alert(1)", f"images/model={first}/layer=0/link.png", "images\\..\\..\\x.png",
                 f"images/model={first}/layer=0/empty.png", f"images/model={first}/layer=0/truncated.png", None]
    rows[first] += [_row(0, "attn", 10 + i, path) for i, path in enumerate(bad_paths)]
    # A good image whose other images (diversity, attribution, accentuation start) point out of the root.
    rows[first].append({**_row(0, "attn", 99, f"images/model={first}/layer=0/ok.png"),
                        "variant_paths": ["/etc/hostname"], "attribution_path": str(outside / "secret.png"),
                        "start_path": "../outside/secret.png"})
    for folder, part_rows in rows.items():
        part = results / "features" / f"model={folder}"
        part.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(part_rows, schema=FEATURE_SCHEMA), part / "part-0.parquet")
    # A truncated Parquet part next to good ones, in a model of its own.
    damaged = results / "features" / f"model={partition_value('damaged')}"
    damaged.mkdir()
    whole = (results / "features" / f"model={first}" / "part-0.parquet").read_bytes()
    (damaged / "part-0.parquet").write_bytes(whole[: len(whole) // 3])
    # A part of another schema, whose layer and feature are not numbers.
    (results / "features" / "model=wrongtypes").mkdir()
    pq.write_table(pa.table({"layer": ["zero"], "feature": ["one"], "status": [1], "site": [SCRIPT]}),
                   results / "features" / "model=wrongtypes" / "part-0.parquet")
    # Activation maps and top images under hostile names (one map is a link out of the root).
    maps = results / "activation_maps" / "files" / f"model={first}" / "layer=0" / f"{ONERROR}-0"
    maps.mkdir(parents=True)
    (maps / "img.png").write_bytes(good)
    os.symlink(outside / "secret.png", maps / "link.png")
    (results / "activation_maps" / "files" / f"model={first}" / "layer=x").mkdir()
    (results / "activation_maps" / "files" / f"model={first}" / "layer=x" / "a.png").write_bytes(good)
    top = results / "top_images" / f"split={partition_value(ONERROR)}" / f"model={first}"
    top.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"layer": 0, "layer_name": SCRIPT, "site": ONERROR, "feature": 0,
                                          "rank": 0, "image_id": ONERROR, "activation": 1.5}], schema=TOP_SCHEMA),
                   top / "part-00000.parquet")
    # Concept labels whose concepts, vocabulary and judge are payloads (the concept search shows them).
    labels = results / LABELS.part("part-x.parquet", model=SCRIPT, layer=0)
    labels.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"layer_name": SCRIPT, "site": SITES[0], "feature": 0, "rank": r,
                                          "concept": text, "score": 0.5 - r / 10, "method": SCRIPT, "judge": ONERROR,
                                          "vocabulary": "javascript:alert(1)", "vocabulary_hash": SCRIPT,
                                          "split": ONERROR, "images": 3, "weights": SCRIPT, "created_at": ""}
                                         for r, text in enumerate([SCRIPT, ONERROR, "'\"><svg onload=alert(1)>"])],
                                        schema=LABEL_SCHEMA), labels)
    # Matches whose model names and sites are payloads (one linking a visualized unit, one a model with no
    # rows, mutual across three: a Rosetta set), a damaged matches part and a damaged transfer part.
    trio = [(SCRIPT, 0, SITES[0], 0), ("javascript:alert(1)", 0, SITES[1], 0), (ONERROR, 5, SCRIPT, 3)]
    match_rows = [{"model_a": a[0], "layer_a": a[1], "site_a": a[2], "unit_a": a[3], "model_b": b[0], "layer_b": b[1],
                   "site_b": b[2], "unit_b": b[3], "score": 0.9, "rank": 0, "mutual": True, "method": SCRIPT,
                   "probe": ONERROR, "probe_hash": SCRIPT, "images": 3, "weights_a": SCRIPT, "weights_b": SCRIPT,
                   "created_at": SCRIPT} for a in trio for b in trio if a is not b]
    pair = results / MATCHES.part("part-x.parquet", pair=SCRIPT)
    pair.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(match_rows, schema=MATCH_SCHEMA), pair)
    (results / MATCHES.part("part-bad.parquet", pair=ONERROR)).parent.mkdir(parents=True)
    (results / MATCHES.part("part-bad.parquet", pair=ONERROR)).write_bytes(b"PAR1 not really")
    bad_transfer = results / TRANSFER.part("part-bad.parquet", model=SCRIPT, other=ONERROR)
    bad_transfer.parent.mkdir(parents=True)
    bad_transfer.write_bytes(b"not parquet")
    site = base / "sitebox" / "site"
    before = _snapshot(base)
    logger = logging.getLogger("sweep")
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        stats = build_atlas(str(results), str(site), page_size=2)
    finally:
        logger.removeHandler(handler)
    return base, results, site, before, stats, [r.getMessage() for r in records], secret_png


def _snapshot(base: Path) -> dict:
    """Every file under base (links not followed) with a hash of its bytes."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in filenames:
            path = Path(dirpath) / name
            found[str(path)] = "link" if path.is_symlink() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


class _Markup(HTMLParser):
    """Tags, attributes and script bodies of a page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.scripts, self.text, self._in_script = [], [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        (self.scripts if self._in_script else self.text).append(data)


#: A marker of each script the templates hold.
OUR_SCRIPTS = ("function filterRows", "getElementById('layer-info')", "addEventListener('keydown'",
               "addEventListener('submit'", "getElementById('sort').addEventListener", "window.atlasConcepts")


def _pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def test_nothing_written_or_read_outside(hostile):
    base, results, site, before, stats, _, secret_png = hostile
    after = _snapshot(base)
    outside_site = {p: h for p, h in after.items() if not p.startswith(str(site) + os.sep)}
    assert outside_site == before  # the results root and its neighbours are unchanged, nothing new beside them
    assert stats["written"] and all(os.path.realpath(site / rel).startswith(str(site.resolve()) + os.sep)
                                    for rel in stats["written"])
    hostname = Path("/etc/hostname").read_bytes() if Path("/etc/hostname").exists() else None
    for path in site.rglob("*"):
        assert not path.is_symlink()
        if path.is_file():
            data = path.read_bytes()
            assert data != secret_png and data != hostname, path
            if path.suffix == ".png":
                with Image.open(io.BytesIO(data)) as im:
                    assert im.size[0] != 9  # nothing of the 9 px secret, not even as a thumbnail
    for rel in stats["written"]:
        assert all(c.isalnum() or c in "_-./" for c in rel) and ".." not in rel.split("/"), rel


def test_no_payload_became_markup(hostile):
    _, _, site, _, _, _, _ = hostile
    pages = _pages(site)
    assert len(pages) > 20
    shown = ""
    for page in pages:
        parser = _Markup()
        parser.feed(page.read_text())
        parser.close()
        tags = {t for t, _ in parser.tags}
        assert tags <= {"html", "head", "meta", "link", "title", "style", "script", "body", "nav", "main", "a", "h1",
                        "h2", "input", "label", "select", "option", "form", "button", "table", "tr", "th", "td", "div",
                        "span", "p", "b", "br", "img", "svg", "rect", "line", "text", "polyline", "figure",
                        "figcaption", "ul", "li", "thead", "tbody", "datalist", "code"}, (page, tags)
        for script in parser.scripts:  # only the templates' own scripts, and the index's data as inert JSON
            if script.lstrip().startswith("{"):
                assert "<" not in script and isinstance(json.loads(script), dict), page
            else:
                assert any(m in script for m in OUR_SCRIPTS) and SCRIPT not in script and "alert" not in script, page
        for tag, attrs in parser.tags:
            for name, value in attrs:
                assert not name.startswith("on") or (tag, name, value) in {
                    ("input", "oninput", "filterRows(this.value)")}, (page, tag, name)
                if name in ("href", "src"):
                    assert value == "data:," or (":" not in value and not value.startswith("/")), (page, value)
                    assert value != "x"
        shown += "".join(parser.text)
    data = sorted(site.rglob("*.js"))  # each layer's data: one inert assignment, no markup, no way out
    assert len(data) >= len(MODELS) and (site / "concepts.js").exists()
    for path in data:
        body = path.read_text()
        got = re.fullmatch(r'\(window\["(atlasLayers|atlasConcepts)"\]=window\["\1"\]\|\|\{\}\)\[("[a-z0-9_/-]+")\]='
                           r'(.*);\n', body, re.I | re.S)
        assert got and "<" not in body and ">" not in got[3] and "&" not in body, path
        assert isinstance(json.loads(got[3]), dict), path
    # The payloads are there, as text.
    for text in (SCRIPT, ONERROR, "javascript:alert(1)", "../../../../escaped", "<img src=x onerror=alert(1)>"):
        assert text in shown, text


def test_bad_images_unavailable_with_one_warning_each(hostile):
    _, _, site, _, _, warnings, _ = hostile
    outside = [w for w in warnings if "not inside the results root" in w]
    damaged = [w for w in warnings if "cannot be read" in w and ".png" in w]
    assert len(outside) == 12  # 8 bad image paths of the first model, one link-out map, 3 bad other images
    assert sum("has no image path" in w for w in warnings) == 1
    assert any("'/etc/hostname'" in w for w in outside) and any("link.png" in w for w in outside)
    assert sorted("empty.png" in w for w in damaged) == [False, True]  # the empty and the truncated PNG
    assert any("layer=x" in w for w in warnings)  # a malformed activation map folder, skipped
    assert all("\n" not in w for w in warnings)
    first = slug(next(iter(MODELS)))
    unavailable = [p for p in (site / "features" / first / "0").glob("attn-*.html")
                   if "image unavailable" in p.read_text()]
    assert len(unavailable) == 11
    feature = (site / "features" / first / "0" / f"{slug(ONERROR)}-0.html").read_text()
    assert feature.count("<img ") == 3  # its visualization, its visualized match, the one activation map inside the root
    assert "Top natural images" in feature and "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in feature


def test_hostile_matches_are_text_and_damaged_parts_one_warning(hostile):
    _, _, site, _, _, warnings, _ = hostile
    assert sum("matches" in w and "part-bad.parquet" in w and "cannot be read" in w for w in warnings) >= 1
    assert sum("transfer" in w and "part-bad.parquet" in w and "cannot be read" in w for w in warnings) == 1
    rosetta = (site / "rosetta.html").read_text()
    assert "Set 0: 3 models" in rosetta and "&lt;script&gt;alert(1)&lt;/script&gt;" in rosetta
    first = slug(next(iter(MODELS)))
    feature = (site / "features" / first / "0" / f"{slug(SITES[0])}-0.html").read_text()
    assert "The same unit in other models" in feature
    linked = slug("javascript:alert(1)")
    assert f'href="../../../features/{linked}/0/{slug(SITES[1])}-0.html"' in feature  # visualized: a slug link


def test_damaged_part_does_not_break_the_atlas(hostile, caplog):
    """The truncated part and the part of other column types are skipped with a warning naming each,
    by the atlas and by `Results` alike (one rule: `sweep.store.results.fit_schema`)."""
    from sweep.store.results import Results

    _, results, site, _, _, warnings, _ = hostile
    index = (site / "index.html").read_text()
    assert f"Atlas: {len(MODELS)} models" in index  # every readable model; the damaged parts are left out
    assert any("model=damaged/part-0.parquet" in w for w in warnings)
    assert any("model=wrongtypes/part-0.parquet" in w and "column 'layer' is string" in w for w in warnings)
    with caplog.at_level("WARNING", logger="sweep.store.results"):
        rows = Results(str(results)).features()
    assert "wrongtypes" not in set(rows["model"]) and len(set(rows["model"])) == len(MODELS)
    warned = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(warned) == 1 and "model=wrongtypes/part-0.parquet" in warned[0] and "model=damaged" in warned[0]


@pytest.mark.browser
def test_browser_runs_no_script(hostile):
    from selenium.common.exceptions import NoAlertPresentException

    _, _, site, _, _, _, _ = hostile
    with browsing(site) as (base, driver):
        pages = _pages(site)
        sorted_views = [p for p in pages if p.name.startswith("layer-")]
        assert sorted_views
        searches = [(site / "concepts.html", q) for q in ("#q=script", "#q=img", "#q=svg")]  # payload concepts shown
        for page, view in [(p, "") for p in pages] + [(p, "#sort=act") for p in sorted_views] + searches:
            driver.get(base + page.relative_to(site).as_posix() + view)
            driver.execute_script("document.querySelectorAll('img').forEach(function(i){i.loading='eager';});")
            with pytest.raises(NoAlertPresentException):
                driver.switch_to.alert.text
            broken = driver.execute_script(
                "return Array.from(document.images).filter(function(i){return i.complete && !i.naturalWidth;})"
                ".map(function(i){return i.src;});")
            assert broken == [], (page, broken)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors


def test_site_writer_stays_inside(tmp_path):
    site, outside = tmp_path / "site", tmp_path / "outside"
    outside.mkdir()
    writer = SiteWriter(str(site))
    for rel in ("../escaped.html", "a/../../escaped.html", str(outside / "x.html"), "a\x00b.html", "."):
        with pytest.raises(SweepError, match="outside the site folder"):
            writer.write(rel, b"x")
    site.mkdir()
    os.symlink(outside, site / "img")  # a link planted in the site folder
    with pytest.raises(SweepError, match="outside the site folder"):
        writer.write("img/x.png", b"x")
    writer.write("models/ok.html", b"ok")
    assert list(outside.iterdir()) == [] and (site / "models" / "ok.html").read_bytes() == b"ok"


def test_slug_is_a_safe_unique_file_name():
    names = ["..", ".", "", "/", "a/b", "a__b", "a_b", "mlp", "\\", "a\x00b", "C:x", "x" * 300, "<script>"]
    slugs = [slug(n) for n in names]
    assert len(set(slugs)) == len(names)
    for s in slugs:
        assert s and s not in (".", "..") and all(c.isalnum() or c in "_-" for c in s) and len(s) <= 64
    assert slug("mlp") == "mlp"


def test_bad_site_and_page_size_refused(hostile, tmp_path):
    _, results, _, _, _, _, _ = hostile
    for site, page_size, message in [("", 256, "non-empty"), ("  ", 256, "non-empty"), (str(tmp_path), 0, "page size"),
                                     (str(tmp_path), -1, "page size"), (str(results), 256, "results root"),
                                     (str(results / "features" / "atlas"), 256, "results root"),
                                     (str(results / "images"), 256, "results root")]:
        with pytest.raises(SweepError, match=message):
            build_atlas(str(results), site, page_size=page_size)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SweepError, match="is a file"):
        build_atlas(str(results), str(tmp_path / "file"), page_size=2)
    (tmp_path / "file").unlink()
    inner = tmp_path / "box"
    (inner / "img").mkdir(parents=True)
    with pytest.raises(SweepError, match="overlaps"):  # a root inside the site's own folders
        build_atlas(str(inner / "img"), str(inner), page_size=2)
    assert not (results / "features" / "atlas").exists() and list(tmp_path.iterdir()) == [inner]
