"""A worker given a GPU that CUDA cannot use stops the sweep at start with one line naming the driver and
torch's CUDA version; --allow-cpu-fallback runs it on CPU instead.

This machine has no GPU: a local Ray started with num_gpus=1 hands a "GPU" to a num_gpus=1 actor
(ray.get_gpu_ids() == [0]) that torch cannot use, which is exactly an old-driver node as the worker sees it.
"""

import logging

import pandas as pd
import pytest
import torch

from sweep.cli import main
from sweep.core import devices as gpu_check
from sweep.core.devices import resolve_device
from sweep.core.errors import SweepError

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where CUDA is unusable")

TINY = ["--model", "dev/vit-micro", "--layers", "0", "--features", "2", "--steps", "2", "--weights", "random",
        "--features-per-batch", "2", "--quiet"]


def test_driver_version_from_the_kernel_module_file(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check.shutil, "which", lambda name: None)  # no nvidia-smi: read the file
    proprietary = tmp_path / "version"
    proprietary.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
                           "GCC version:  gcc version 12.3.0\n")
    assert gpu_check.driver_version(proprietary) == "535.104.05"
    open_module = tmp_path / "open"
    open_module.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build\n")
    assert gpu_check.driver_version(open_module) == "580.65.06"
    assert gpu_check.driver_version(tmp_path / "missing") is None


@pytest.mark.parametrize("driver, cuda, remedy", [
    ("535.104.05", "13.0", "upgrade the NVIDIA driver to >= 580.65.06 for CUDA 13.0, or a torch build for CUDA 12.x"),
    ("470.57.02", "12.8", "upgrade the NVIDIA driver to >= 525.60.13 for CUDA 12.8, or a torch build for CUDA 11.x"),
    (None, "13.0", "install an NVIDIA driver >= 580.65.06 (CUDA 13.0)"),
    ("580.95.05", "13.0", "the driver is new enough for CUDA 13.0"),
    ("580.95.05", None, "CPU-only build"),
])
def test_message_names_versions_and_the_fix(driver, cuda, remedy):
    line = gpu_check.unusable_gpu_message(["0"], "torch.cuda.is_available() is False", driver, cuda)
    assert "\n" not in line
    assert f"NVIDIA driver: {driver or gpu_check.NO_DRIVER}" in line
    assert f"CUDA: {cuda or 'none'}" in line
    assert remedy in line and "--allow-cpu-fallback" in line


def test_resolve_device_refuses_an_unusable_gpu_or_falls_back_with_one_warning(caplog):
    with pytest.raises(SweepError) as err:
        resolve_device(None, gpu_ids=["0"])
    assert f"CUDA: {torch.version.cuda or 'none'}" in str(err.value) and "NVIDIA driver:" in str(err.value)
    with caplog.at_level(logging.WARNING):
        assert resolve_device(None, gpu_ids=["0"], allow_cpu_fallback=True) == torch.device("cpu")
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert resolve_device(None) == torch.device("cpu")  # no GPU given: the CPU, no check


def test_fake_gpu_worker_stops_the_sweep_at_start_unless_cpu_fallback(tmp_path, capsys, own_ray):
    import ray

    from sweep.pipelines.feature_sweep import run_sweep
    from sweep.work.plan import SweepConfig

    def config(out, fallback):
        return SweepConfig.from_dict({
            "models": ["dev/vit-micro"], "layers": [0], "features": {"mode": "first", "count": 2},
            "weights": "random", "recipe": {"steps": 2}, "features_per_batch": 2, "out": str(out),
            "resources": {"num_gpus": 1, "num_cpus": 1, "allow_cpu_fallback": fallback}})

    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(SweepError) as err:
            run_sweep(config(tmp_path / "strict", False), progress=False)
        line = str(err.value)
        assert "\n" not in line and "cannot use CUDA" in line
        assert f"NVIDIA driver: {gpu_check.driver_version() or gpu_check.NO_DRIVER}" in line
        assert f"CUDA: {torch.version.cuda or 'none'}" in line
        assert not (tmp_path / "strict" / "features").exists()  # stopped before any work

        # The CLI attaches to this Ray (already initialised) and prints the same line, exit 2.
        assert main(["run", *TINY, "--out", str(tmp_path / "cli")]) == 2
        ours = [x for x in capsys.readouterr().err.splitlines() if x.startswith("sweep:")]  # not Ray's log lines
        assert ours == [f"sweep: error: {line}"]

        report = run_sweep(config(tmp_path / "fallback", True), progress=False)
        assert report.done == 2 and report.failed == 0
        df = pd.read_parquet(tmp_path / "fallback" / "features")
        assert set(df["device"]) == {"cpu"} and set(df["status"]) == {"ok"}
        assert [w["gpu_ids"] for w in report.workers] == [["0"]]
    finally:
        ray.shutdown()


def test_allow_cpu_fallback_flag_reaches_the_config(tmp_path):
    from sweep.cli import build_parser, sweep_config_from_args

    run = ["run", "--model", "dev/vit-micro", "--out", str(tmp_path)]
    assert sweep_config_from_args(build_parser().parse_args([*run, "--allow-cpu-fallback"])).resources.allow_cpu_fallback
    assert not sweep_config_from_args(build_parser().parse_args(run)).resources.allow_cpu_fallback


def test_gpus_given_through_the_environment_are_checked_too():
    """Ray Data actors (top images, maps, ablations, tuning) do not import Ray: Ray's
    CUDA_VISIBLE_DEVICES tells them they were given a GPU, and an unusable one is refused the same way."""
    from sweep.core.devices import assigned_gpus

    assert assigned_gpus({}) == [] and assigned_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert assigned_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert assigned_gpus({"CUDA_VISIBLE_DEVICES": "0, 3"}) == ["0", "3"]
    if not torch.cuda.is_available():
        with pytest.raises(SweepError, match="was given GPU 0 but cannot use CUDA"):
            resolve_device(None, gpu_ids=assigned_gpus({"CUDA_VISIBLE_DEVICES": "0"}))
