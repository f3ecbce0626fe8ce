"""The atlas of a small real sweep, opened in headless Chromium: no broken image or link, no console
error; building twice writes nothing the second time."""

import contextlib
import functools
import http.server
import os
import shutil
import threading
import urllib.request
from pathlib import Path
from urllib.parse import urljoin, urlparse

import numpy as np
import pytest

from sweep.experiments.activation_maps import save_map
from sweep.views.atlas import build_atlas

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def site(tmp_path_factory, smoke_root):
    results = tmp_path_factory.mktemp("results")
    shutil.copytree(smoke_root, results, dirs_exist_ok=True)  # this module adds to it
    rng = np.random.default_rng(0)
    save_map(str(results), "dev/vit-micro", 0, "mlp", 0, "example", rng.random((32, 32, 3)), rng.random((4, 4)))
    import pandas as pd

    from sweep.store.layout import TOP_SCHEMA
    from sweep.store.outputs import frame_parquet_bytes

    top = pd.DataFrame({"layer": [0, 0], "layer_name": ["blocks.0"] * 2, "site": ["mlp"] * 2, "feature": [0, 0],
                        "rank": [0, 1], "image_id": ["example", "other"], "activation": [2.5, 1.5]})
    part = results / "top_images" / "split=val" / "model=dev%2Fvit-micro"
    part.mkdir(parents=True)
    (part / "part-00000.parquet").write_bytes(frame_parquet_bytes(top, TOP_SCHEMA))
    from PIL import Image

    from sweep.store.layout import TOP_THUMBS, thumb_name

    thumb = results / TOP_THUMBS.part(thumb_name("example"), split="val")  # as the top images job makes them
    thumb.parent.mkdir(parents=True)
    Image.new("RGB", (128, 128), (40, 160, 90)).save(thumb)
    from sweep.store.layout import LABEL_SCHEMA, LABELS

    labels = pd.DataFrame({"layer_name": "blocks.0", "site": "mlp", "feature": [0, 0, 1, 2, 3], "rank": [0, 1, 0, 0, 0],
                           "concept": ["music", "dog", "morbidity", "music", "dog"],
                           "score": [0.9, 0.4, 0.7, 0.8, 0.6], "method": "profile-correlation",
                           "judge": "ViT-B-32/openai", "vocabulary": "mine.txt", "vocabulary_hash": "abc",
                           "split": "val", "images": 24, "weights": "random", "created_at": "2026-11-27T00:00:00"})
    label_part = results / LABELS.part("part-abc.parquet", model="dev/vit-micro", layer=0)
    label_part.parent.mkdir(parents=True)
    label_part.write_bytes(frame_parquet_bytes(labels, LABEL_SCHEMA))
    from sweep.store.layout import MATCH_SCHEMA, MATCHES, pair_name

    # One unit matched across three models (the third has no visualizations: listed without a link), as
    # jobs/matching.py writes them, mutual both ways: a Rosetta set of 3.
    trio = [("dev/vit-micro", 0, 0), ("dev/deit-micro-distilled", 0, 1), ("other/model", 2, 5)]
    for i, (ma, la, ua) in enumerate(trio):
        for mb, lb, ub in trio[i + 1:]:
            rows = pd.DataFrame([{"model_a": x[0], "layer_a": x[1], "site_a": "mlp", "unit_a": x[2], "model_b": y[0],
                                  "layer_b": y[1], "site_b": "mlp", "unit_b": y[2], "score": 0.9, "rank": 0,
                                  "mutual": True, "method": "profile-pearson", "probe": "probe", "probe_hash": "h",
                                  "images": 150, "weights_a": "random", "weights_b": "random", "created_at": ""}
                                 for x, y in (((ma, la, ua), (mb, lb, ub)), ((mb, lb, ub), (ma, la, ua)))])
            path = results / MATCHES.part("part-k.parquet", pair=pair_name(ma, mb))
            path.parent.mkdir(parents=True)
            path.write_bytes(frame_parquet_bytes(rows, MATCH_SCHEMA))
    from sweep.store.layout import TRANSFER, TRANSFER_SCHEMA

    # dev/vit-micro's layer-0 images shown to deit-micro (jobs/transfer.py): z 0.5, 3, -1, 2 for features 0-3
    transfer = pd.DataFrame({"layer": 0, "site": "mlp", "feature": [0, 1, 2, 3], "image_path": "x", "layer_b": 0,
                             "site_b": "mlp", "unit_b": [1, 2, 3, 4], "match_score": 0.5, "act_b": 1.0,
                             "z": [0.5, 3.0, -1.0, 2.0], "probe_mean": 0.0, "probe_std": 1.0, "probe_max": 2.5,
                             "beats_probe": [False, True, False, False], "error": "", "method": "counterpart-z",
                             "probe_hash": "h", "weights_b": "random", "created_at": ""})
    path = results / TRANSFER.part("part-k.parquet", model="dev/vit-micro", other="dev/deit-micro-distilled")
    path.parent.mkdir(parents=True)
    path.write_bytes(frame_parquet_bytes(transfer, TRANSFER_SCHEMA))
    out = tmp_path_factory.mktemp("site")
    first = build_atlas(str(results), str(out), page_size=2)
    return results, out, first


def test_second_build_writes_nothing(site):
    results, out, first = site
    assert len(first["written"]) > 50
    again = build_atlas(str(results), str(out), page_size=2)
    assert again["written"] == [] and again["unchanged"] == len(first["written"])


def _browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are required in CI (.ci/run installs them)")
        pytest.skip("chromium/chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1200,900"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


def _check_page(driver, base):
    """Every image on the page decodes and every local link answers 200."""
    driver.execute_script("document.querySelectorAll('img').forEach(function(i){i.loading='eager';});")
    driver.execute_script("window.scrollTo(0, document.body.scrollHeight);")
    images = driver.execute_script(
        "return Array.from(document.images).map(function(i){return [i.src, i.complete, i.naturalWidth];});")
    for src, complete, width in images:
        with urllib.request.urlopen(src) as resp:  # loopback only
            assert resp.status == 200, src
    assert all(w > 0 for _, c, w in images if c), images
    links = driver.execute_script("return Array.from(document.links).map(function(a){return a.href;});")
    for href in links:
        if urlparse(href).netloc == urlparse(base).netloc:
            with urllib.request.urlopen(href) as resp:
                assert resp.status == 200, href
    return images, links


@contextlib.contextmanager
def browsing(folder):
    """A static site served on loopback and a headless browser: (base URL, driver); both stopped after."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        driver = _browser()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/", driver
        finally:
            driver.quit()
    finally:
        server.shutdown()


@pytest.mark.browser
def test_browse_index_model_layer_feature_and_back(site):
    """index -> model -> layer (page 2) -> feature -> next feature -> back to the right layer page."""
    _, out, _ = site
    ARTIFACTS.mkdir(exist_ok=True)
    with browsing(out) as (base, driver):
        from selenium.webdriver.common.by import By

        def shot(kind):
            _check_page(driver, base)
            driver.save_screenshot(str(ARTIFACTS / f"atlas-{kind}.png"))

        driver.get(urljoin(base, "index.html"))
        assert "2 models" in driver.title
        shot("index")
        driver.find_element(By.LINK_TEXT, "dev/vit-micro").click()
        assert driver.title == "dev/vit-micro"
        assert driver.find_elements(By.CSS_SELECTOR, ".strip img"), "the strongest features of each layer"
        shot("model")
        driver.find_element(By.LINK_TEXT, "page 2").click()  # layer 0, features 2 and 3 (2 per page)
        assert driver.current_url.endswith("layer-0-1.html")
        images, _ = _check_page(driver, base)
        assert len(images) == 2 and driver.find_elements(By.CSS_SELECTOR, ".cell .act")
        shot("layer")
        driver.find_elements(By.CSS_SELECTOR, ".cell a")[0].click()
        assert "L0 mlp 2" in driver.title
        driver.find_element(By.ID, "next").click()
        assert "L0 mlp 3" in driver.title
        assert len(driver.find_elements(By.TAG_NAME, "svg")) == 2  # loss and activation curves, with axes
        shot("feature")
        driver.find_element(By.ID, "layer").click()
        assert driver.current_url.endswith("layer-0-1.html"), "back to the page that holds feature 3"
        driver.get(urljoin(base, "features/dev_vit_micro-" + _slug_suffix(out) + "/0/mlp-0.html"))
        images, _ = _check_page(driver, base)
        assert len(images) == 4  # the visualization, its match in deit-micro, the top image "example" (thumbnail), the map
        assert "Top natural images" in driver.page_source and "other" in driver.page_source  # "other": no picture
        assert driver.find_elements(By.CSS_SELECTOR, 'img[alt="top image 1: example"]')
        from selenium.webdriver.common.keys import Keys

        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)  # keyboard: next feature
        assert "L0 mlp 1" in driver.title
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors


def _goto(driver, base, model, layer, site, feature):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(urljoin(base, "index.html"))
    Select(driver.find_element(By.ID, "goto-model")).select_by_visible_text(model)
    Select(driver.find_element(By.ID, "goto-layer")).select_by_visible_text(layer)
    Select(driver.find_element(By.ID, "goto-site")).select_by_visible_text(site)
    driver.find_element(By.ID, "goto-feature").clear()
    driver.find_element(By.ID, "goto-feature").send_keys(feature)
    driver.find_element(By.ID, "goto").submit()


def _wait(driver, condition, timeout=10):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


@pytest.mark.browser
def test_go_to_box_finds_features_and_layers_and_says_what_is_missing(site):
    """The index's go-to box: a feature opens its page, an empty feature the layer, a feature the layer
    does not hold stays on the index with a message (no 404); layers and sites come from the data."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _, out, _ = site
    with browsing(out) as (base, driver):
        _goto(driver, base, "dev/vit-micro", "0", "mlp", "3")
        _wait(driver, lambda d: "dev/vit-micro L0 mlp 3" in d.title)
        _goto(driver, base, "dev/vit-micro", "0", "mlp", "")
        _wait(driver, lambda d: d.current_url.endswith("layer-0-0.html"))
        _goto(driver, base, "dev/vit-micro", "0", "mlp", "999")
        status = _wait(driver, lambda d: d.find_element(By.ID, "status").text)
        assert 'No feature "mlp 999" in layer 0 of dev/vit-micro' in status and driver.title.startswith("Atlas")
        layers = [o.text for o in Select(driver.find_element(By.ID, "goto-layer")).options]
        assert layers == ["0", "1", "2"]  # the smoke preset: 3 layers of vit-micro
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors


def _labels(driver):
    from selenium.webdriver.common.by import By

    return [c.get_attribute("data-key") for c in driver.find_elements(By.CSS_SELECTOR, "#cells .cell")]


@pytest.mark.browser
def test_layer_sorted_across_pages_with_deep_links(site):
    """Sorting a layer page sorts the whole layer (not just the page's cells); the sort travels in the
    address (#sort=act) and along the pager; the model page sorts its layers."""
    import pandas as pd
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    results, out, _ = site
    rows = pd.read_parquet(results / "features")
    rows = rows[(rows["model"] == "dev/vit-micro") & (rows["layer"] == 0)].sort_values("feature")
    by_act = [f"mlp {f}" for f in rows.sort_values("act_final", ascending=False, kind="stable")["feature"]]
    assert len(by_act) == 4
    m = "dev_vit_micro-" + _slug_suffix(out)
    with browsing(out) as (base, driver):
        driver.get(urljoin(base, f"models/{m}/layer-0-1.html"))
        assert _labels(driver) == ["mlp 2", "mlp 3"]
        Select(driver.find_element(By.ID, "sort")).select_by_value("act")
        _wait(driver, lambda d: "sorted by activation" in d.find_element(By.ID, "status").text)
        assert _labels(driver) == by_act[2:4] and driver.current_url.endswith("#sort=act")
        _check_page(driver, base)  # the cells the script made: images decode, links answer
        pager = driver.find_element(By.CSS_SELECTOR, ".pager a.page").get_attribute("href")
        assert pager.endswith("layer-0-0.html#sort=act")
        driver.get(urljoin(base, f"models/{m}/layer-0-0.html#sort=act"))  # a deep link to a sorted page
        _wait(driver, lambda d: _labels(d) == by_act[:2])
        Select(driver.find_element(By.ID, "sort")).select_by_value("feature")
        assert _labels(driver) == ["mlp 0", "mlp 1"]
        Select(driver.find_element(By.ID, "sort")).select_by_value("transfer")  # the counterparts' z: 3, 2, 0.5, -1
        _wait(driver, lambda d: "sorted by transferability" in d.find_element(By.ID, "status").text)
        assert _labels(driver) == ["mlp 1", "mlp 3"]
        options = [o.get_attribute("value") for o in driver.find_elements(By.CSS_SELECTOR, "#sort option")]
        assert options == ["feature", "act", "rel", "failed", "shift", "plausible", "transfer"], options
        driver.get(urljoin(base, f"models/{m}/index.html"))
        Select(driver.find_element(By.ID, "sort")).select_by_value("best")
        best = [float(r.get_attribute("data-best") or "-inf") for r in driver.find_elements(By.CSS_SELECTOR,
                                                                                            "#layers tr")]
        assert best == sorted(best, reverse=True) and len(best) == 3
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors


@pytest.mark.browser
def test_concept_labels_shown_and_searchable_across_models(site):
    """Labels under the feature and in the layer grid; the concept search lists the units whose best
    concept matches, strongest first, each linking to its feature page."""
    from selenium.webdriver.common.by import By

    _, out, _ = site
    m = "dev_vit_micro-" + _slug_suffix(out)
    feature = (out / "features" / m / "0" / "mlp-0.html").read_text()
    assert "<h2>Concepts</h2>" in feature and "music" in feature and "morbidity" not in feature
    with browsing(out) as (base, driver):
        driver.get(urljoin(base, "index.html"))
        driver.find_element(By.ID, "concepts-link").click()
        assert driver.title.startswith("Concepts: 3 labels")
        box = driver.find_element(By.ID, "concept-query")
        box.send_keys("mus")
        driver.find_element(By.ID, "concept-search").submit()
        _wait(driver, lambda d: "1 concept(s) match" in d.find_element(By.ID, "status").text)
        units = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#concept-results .cell a")]
        assert units == ["dev/vit-micro L0 mlp 0", "dev/vit-micro L0 mlp 2"]  # score 0.9, then 0.8
        _check_page(driver, base)
        assert driver.current_url.endswith("#q=mus")
        driver.find_elements(By.CSS_SELECTOR, "#concept-results .cell a")[1].click()
        _wait(driver, lambda d: "L0 mlp 2" in d.title)
        driver.get(urljoin(base, "concepts.html#q=zebra"))
        _wait(driver, lambda d: "No concept matches" in d.find_element(By.ID, "status").text)
        driver.get(urljoin(base, f"models/{m}/layer-0-0.html"))
        assert [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#cells .concept")] == ["music", "morbidity"]
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors


def test_units_link_their_counterparts_in_other_models_and_the_rosetta_sets(site):
    """A matched unit's page lists its best unit in each other model (a link and picture where that unit
    was visualized, text where not); the index links the Rosetta page, whose set links back."""
    from selenium.webdriver.common.by import By

    _, out, _ = site
    m = "dev_vit_micro-" + _slug_suffix(out)
    feature = (out / "features" / m / "0" / "mlp-0.html").read_text()
    assert "The same unit in other models" in feature and "other/model" in feature
    with browsing(out) as (base, driver):
        driver.get(urljoin(base, f"features/{m}/0/mlp-0.html"))
        links = driver.find_elements(By.XPATH, "//h2[contains(., 'other models')]/following-sibling::table[1]//a")
        assert [a.text for a in links] == ["mlp 1"]
        links[0].click()
        _wait(driver, lambda d: "dev/deit-micro-distilled L0 mlp 1" in d.title)
        _check_page(driver, base)
        assert "dev/vit-micro" in driver.find_element(By.XPATH, "//h2[contains(., 'other models')]/following-sibling::table[1]").text
        driver.get(urljoin(base, "index.html"))
        driver.find_element(By.ID, "rosetta-link").click()
        _wait(driver, lambda d: d.title.startswith("Rosetta sets: 1 across 3+ models"))
        _check_page(driver, base)
        cells = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#set-0 + ul .cell")]
        assert cells == ["dev/deit-micro-distilled L0 mlp 1", "dev/vit-micro L0 mlp 0", "other/model L2 mlp 5 (not visualized)"]
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors


@pytest.mark.browser
def test_every_page_kind_passes_axe_and_works_from_the_keyboard(site):
    """axe-core (the accessibility engine browsers' audits use) finds no violation on any page kind;
    Tab reaches the skip link first and a feature cell opens with Enter."""
    from axe_core_python.base import AXE_SCRIPT
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _, out, _ = site
    m = "dev_vit_micro-" + _slug_suffix(out)
    pages = ["index.html", f"models/{m}/index.html", f"models/{m}/layer-0-1.html",
             f"models/{m}/layer-0-0.html#sort=act", f"features/{m}/0/mlp-0.html", "concepts.html#q=o", "rosetta.html"]
    with browsing(out) as (base, driver):
        for page in pages:
            driver.get(urljoin(base, page))
            driver.execute_script(AXE_SCRIPT)
            found = driver.execute_async_script(
                "var done=arguments[arguments.length-1];axe.run().then(function(r){done(r.violations.map("
                "function(v){return [v.id, v.impact, v.nodes.map(function(n){return n.html;}).slice(0,3)];}));});")
            assert found == [], (page, found)
        driver.get(urljoin(base, f"models/{m}/layer-0-1.html"))
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.TAB)
        assert driver.switch_to.active_element.text == "Skip to content"
        driver.find_element(By.CSS_SELECTOR, "#cells .cell a").send_keys(Keys.ENTER)
        _wait(driver, lambda d: "L0 mlp 2" in d.title)


def _slug_suffix(out) -> str:
    return next(p.name for p in (out / "features").iterdir() if p.name.startswith("dev_vit_micro-")).split("-", 1)[1]


def test_paper_figures(site, tmp_path, capsys):
    from PIL import Image

    from analysis import figures

    results, _, _ = site

    def run(*args):
        code = figures.main([*args, "--results", str(results)])
        captured = capsys.readouterr()
        assert code == 0, captured.err[-2000:]
        return captured.out

    run("progression", "--model", "dev/vit-micro", "--out", str(tmp_path / "p"))
    with Image.open(tmp_path / "p.png") as im:
        assert im.size[0] > 3 * 300  # three layers, about an inch each at 300 dpi
    assert (tmp_path / "p.pdf").read_bytes()[:5] == b"%PDF-"
    run("compare", "--models", "dev/vit-micro", "dev/deit-micro-distilled", "--out", str(tmp_path / "c"),
        "--format", "svg")  # no --layers: the same relative depths of each model
    assert (tmp_path / "c.svg").exists()
    out = run("sheets", "--model", "dev/vit-micro", "--out", str(tmp_path / "sheets"), "--format", "png")
    assert len(out.split()) == 3 and len(list((tmp_path / "sheets").glob("*-page001.png"))) == 3
    for args, message in [(["compare", "--models", "dev/vit-micro", "dev/deit-micro-distilled", "--layers", "7"],
                           "--layers: no visualized features of dev/vit-micro at layer(s) 7"),
                          (["progression"], "progression needs --model"),
                          (["progression", "--model", "vit_tiny_patch16_224"], "no visualized features of"),
                          (["sheets", "--model", "dev/vit-micro", "--per-page", "0"], "--per-page: must be")]:
        assert figures.main([*args, "--results", str(results), "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
