"""Failure accounting on a real local Ray: restarting workers are waited for and counted once per
death, lost workers are dropped, failed rows are retried on a re-run, and exit codes say so."""

import os
import signal
import threading
import time

import pytest
import ray
import torch
from sweep_checks import assert_exactly_once, own_ray_processes, stored

from sweep.cli import main
from sweep.core.errors import SweepError
from sweep.models.build import build
from sweep.models.zoo import get_entry
from sweep.pipelines.feature_sweep import run_sweep
from sweep.work.plan import SweepConfig


@pytest.fixture(scope="module", autouse=True)
def local_ray(own_ray):
    """A Ray of this module's own: its tests kill, pause and restart workers."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def micro(out, workers=1, **over):
    """One model, one layer, 2 batches of 2 features; steps enough for a batch to be caught running."""
    base = {"models": ["dev/vit-micro"], "layers": [0], "weights": "random", "out": str(out),
            "features": {"mode": "first", "count": 4}, "features_per_batch": 2, "recipe": {"steps": 40},
            "resources": {"num_gpus": 0, "num_cpus": 0.5, "workers": workers}}
    return SweepConfig.from_dict({**base, **over})


def sweep_workers(running: bool = False) -> set[int]:
    title = "ray::SweepWorker.run" if running else "ray::SweepWorker"
    return {pid for pid, args in own_ray_processes().items() if args.startswith(title)}


def wait_for(probe, timeout: float = 300.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {probe}")


def in_thread(func) -> tuple[threading.Thread, list]:
    """Run func beside the sweep; what it raises is kept for the test to re-raise."""
    errors: list = []

    def target():
        try:
            func()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, errors


def kill_running_worker(done: threading.Event | None = None) -> tuple[int, int | None]:
    """SIGKILL a worker while it runs a batch; returns its pid and its replacement's once started, or
    None when `done` is set first (the sweep ended before Ray started a replacement)."""
    victim = min(wait_for(lambda: sweep_workers(running=True)))
    others = sweep_workers() - {victim}
    os.kill(victim, signal.SIGKILL)
    found = wait_for(lambda: (sweep_workers() - others - {victim}) or (done is not None and done.is_set()))
    return victim, (min(found) if isinstance(found, set) else None)


def continue_stopped_workers() -> None:
    """SIGCONT every worker process of this test's Ray: a paused one must not outlive its test (it
    holds its CPU share, and the next test's worker would wait for it)."""
    for pid in sweep_workers():
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def huge_weights(path, fine: bool = False):
    """vit-micro weights whose block 1 is finite but overflows to a non-finite activation (or, with
    fine, the same model's healthy random weights at the same path)."""
    net = build(get_entry("dev/vit-micro"), "random")
    state = {k: (torch.full_like(v, 3e38) if k.startswith("blocks.1.") and v.is_floating_point() and not fine
                 else v) for k, v in net.state_dict().items()}
    torch.save(state, path)
    return str(path)


def test_killed_twice_with_a_paused_replacement_counts_two_deaths_and_loses_nothing(tmp_path):
    cfg = micro(tmp_path)
    paused = []

    def chaos():
        first, replacement = kill_running_worker()
        os.kill(replacement, signal.SIGSTOP)  # the restart takes a while: not a death
        paused.append(replacement)
        time.sleep(4)
        os.kill(replacement, signal.SIGCONT)
        wait_for(lambda: replacement in sweep_workers(running=True))
        os.kill(replacement, signal.SIGKILL)

    thread, errors = in_thread(chaos)
    try:
        report = run_sweep(cfg, progress=False)
    finally:
        thread.join(timeout=60)
        continue_stopped_workers()
    assert not errors, errors
    assert paused, "the replacement was never paused"
    assert report.worker_failures == 2
    assert (report.done, report.failed) == (4, 0)
    df = assert_exactly_once(cfg)
    assert (df["status"] == "ok").all()


@pytest.mark.parametrize("workers", [2, 1])
def test_a_worker_that_does_not_come_back_is_dropped(tmp_path, caplog, workers):
    cfg = micro(tmp_path, workers=workers)
    stopped = []
    done = threading.Event()

    def chaos():
        _, replacement = kill_running_worker(done)
        if replacement is not None and not done.is_set():
            os.kill(replacement, signal.SIGSTOP)  # never comes back within restart_timeout
            stopped.append(replacement)

    thread, errors = in_thread(chaos)
    try:
        if workers == 1:
            with pytest.raises(SweepError, match=r"^no worker left: .*did not come back within 2 s") as err:
                run_sweep(cfg, progress=False, restart_timeout=2)
            assert "\n" not in str(err.value)
        else:
            report = run_sweep(cfg, progress=False, restart_timeout=2)
            assert (report.done, report.failed, report.worker_failures) == (4, 0, 1)
            assert_exactly_once(cfg)
    finally:
        done.set()  # the chaos thread stops waiting for a replacement, then nothing is left paused
        thread.join(timeout=60)
        continue_stopped_workers()
    assert not errors, errors
    drops = [r for r in caplog.records if r.getMessage().startswith("dropping worker")]
    assert len(drops) == 1 and "its batch goes to another worker" in drops[0].getMessage()


def test_failed_rows_are_retried_unless_kept_and_the_exit_code_says_so(tmp_path, capsys):
    weights = huge_weights(tmp_path / "w.pt")
    out = tmp_path / "out"
    args = ["run", "--model", "dev/vit-micro", "--layers", "0", "1", "--features", "2", "--steps", "4",
            "--weights", weights, "--workers", "1", "--cpu", "--out", str(out), "--quiet"]
    cfg = SweepConfig.from_dict({"models": ["dev/vit-micro"], "layers": [0, 1], "weights": weights, "out": str(out),
                                 "features": {"mode": "first", "count": 2}, "recipe": {"steps": 4}})

    assert main(args) == 1
    assert ": 2 done, 2 failed, 0 already present" in capsys.readouterr().out
    df = assert_exactly_once(cfg)
    assert set(df.loc[df["status"] == "failed", "layer"]) == {1}
    assert df.loc[df["status"] == "failed", "error"].str.contains("non-finite").all()
    parts = {p: p.stat().st_mtime_ns for p in (out / "features").rglob("*.parquet")}

    assert main([*args, "--no-retry-failed"]) == 1  # kept, but the plan is still not done
    assert ": 0 done, 0 failed (+2 failed in earlier runs, kept), 4 already present" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (out / "features").rglob("*.parquet")} == parts

    assert main(args) == 1  # a plain re-run retries the failed rows (the same file: they fail again)
    assert ": 0 done, 2 failed, 2 already present" in capsys.readouterr().out

    huge_weights(tmp_path / "w.pt", fine=True)  # the file is fixed: all its results are recomputed, since
    assert main(args) == 0                       # those present came from other bytes (weights are pinned)
    assert ": 4 done, 0 failed, 0 already present" in capsys.readouterr().out
    cfg = SweepConfig.from_dict({**cfg.to_dict(), "weights": weights})  # pinned to the new bytes
    df = assert_exactly_once(cfg)
    assert (df["status"] == "ok").all()
    assert len(stored(out)) == 4


def test_visualize_exits_1_naming_the_failed_features(tmp_path, capsys):
    weights = huge_weights(tmp_path / "w.pt")
    common = ["visualize", "--model", "dev/vit-micro", "--feature", "0", "1", "--steps", "4", "--weights", weights,
              "--device", "cpu", "--out", str(tmp_path / "out"), "--quiet"]
    assert main([*common, "--layer", "1"]) == 1
    assert "sweep visualize: 2 feature(s) failed: 0, 1" in capsys.readouterr().err
    assert main([*common, "--layer", "0"]) == 0
    assert "failed" not in capsys.readouterr().err


def test_a_worker_that_dies_idle_and_hangs_restarting_is_dropped(tmp_path):
    """Killed between batches, Ray restarts it with the next batch queued behind its __init__, which
    hangs: no call fails, only the GCS says it is restarting; it is still dropped after restart_timeout
    (before the fix, the driver waited on that batch forever)."""
    from tqdm import tqdm

    from sweep.pipelines.feature_sweep import _Workers, worker_plan
    from sweep.work.resume import SweepReport, preflight

    cfg = micro(tmp_path)
    tasks, _, fs, root, _, _ = preflight(cfg, False, True)
    workers = _Workers(cfg, tasks, fs, root, SweepReport("t"), 2.0, tqdm(disable=True), worker_plan(cfg, len(tasks)))
    stopped = []
    try:
        workers.start(1)
        ref = next(iter(workers.calls))
        ray.wait([ref], timeout=120)
        workers._settle(ref)  # its info() answered: healthy, and idle (no batch given yet)
        assert workers.slots[0].healthy
        victim = workers.slots[0].incarnation[1]
        os.kill(victim, signal.SIGKILL)
        replacement = min(wait_for(lambda: sweep_workers() - {victim}))
        os.kill(replacement, signal.SIGSTOP)  # its __init__ never finishes
        stopped.append(replacement)
        started = time.monotonic()
        with pytest.raises(SweepError, match=r"^no worker left: .*did not come back within 2 s"):
            workers.loop()  # hands the idle worker a batch, queued behind the hung restart
        assert time.monotonic() - started < 30
    finally:
        workers.stop()
        continue_stopped_workers()
