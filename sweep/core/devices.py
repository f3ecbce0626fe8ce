"""Which device a process computes on, and whether it can use the GPU it was given (if not: one line
an operator can act on).

A worker that silently falls back to CPU turns a GPU sweep into a days-long CPU sweep; the usual
cause is a driver older than the CUDA build of torch (an old machine image). So a worker that was
given a GPU but cannot use CUDA reports the driver version, torch's CUDA version and what to change.
No Ray here: the caller says whether a GPU was assigned.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import torch

from sweep.core.errors import SweepError, one_line

log = logging.getLogger(__name__)

#: The oldest Linux driver each CUDA major release runs on (NVIDIA's "CUDA Compatibility" guide,
#: minor-version compatibility table).
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
PROC_VERSION = Path("/proc/driver/nvidia/version")
NO_DRIVER = "no NVIDIA driver found"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def driver_version(proc_version: Path = PROC_VERSION) -> str | None:
    """The NVIDIA driver version from nvidia-smi, else from the kernel module's version file."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            lines = out.stdout.split()
            if out.returncode == 0 and lines:
                return lines[0]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        text = proc_version.read_text()
    except OSError:
        return None
    # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug ..." (or "Open Kernel Module for x86_64")
    found = re.search(r"Kernel Module.*?\s(\d+\.\d+(?:\.\d+)?)\s", text)
    return found.group(1) if found else None


def cuda_problem() -> str | None:
    """Why CUDA is unusable in this process, or None when a CUDA call works."""
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False"
    try:  # a driver/runtime mismatch can pass is_available() and fail at the first real call
        torch.ones(1, device="cuda").add_(1).cpu()
    except Exception as exc:
        return f"a CUDA call failed: {one_line(exc, 160)}"
    return None


def _remedy(driver: str | None, torch_cuda: str | None) -> str:
    if torch_cuda is None:
        return f"torch {torch.__version__} is a CPU-only build: install a CUDA build of torch"
    major = int(torch_cuda.split(".")[0])
    needed = MIN_DRIVER.get(major)
    if needed is None:
        return f"use a driver and torch build that NVIDIA lists as compatible with CUDA {torch_cuda}"
    if driver is None:
        return f"install an NVIDIA driver >= {needed} (CUDA {torch_cuda}) on the GPU nodes, or use a GPU image that has one"
    if _version_key(driver) < _version_key(needed):
        usable = [m for m, v in MIN_DRIVER.items() if _version_key(driver) >= _version_key(v)]
        older = f", or a torch build for CUDA {max(usable)}.x, which this driver supports" if usable else ""
        return f"upgrade the NVIDIA driver to >= {needed} for CUDA {torch_cuda}{older}"
    return (f"the driver is new enough for CUDA {torch_cuda}: check that the GPU is visible to this process "
            "(container runtime --gpus / nvidia-container-toolkit, CUDA_VISIBLE_DEVICES)")


def unusable_gpu_message(gpu_ids: list[str], problem: str, driver: str | None, torch_cuda: str | None) -> str:
    """One line: what failed, the driver and torch CUDA versions, and what to change."""
    return (f"this worker was given GPU {','.join(gpu_ids) or '?'} but cannot use CUDA ({problem}); "
            f"NVIDIA driver: {driver or NO_DRIVER}; torch {torch.__version__} CUDA: {torch_cuda or 'none'}; "
            f"fix: {_remedy(driver, torch_cuda)}; or set resources.allow_cpu_fallback "
            "(--allow-cpu-fallback) to run on CPU")


def check_assigned_gpu(gpu_ids: list[str]) -> str | None:
    """None when CUDA works; else the one-line explanation (see `unusable_gpu_message`)."""
    problem = cuda_problem()
    if problem is None:
        return None
    return unusable_gpu_message(gpu_ids, problem, driver_version(), torch.version.cuda)


def assigned_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs a scheduler gave this process, read from CUDA_VISIBLE_DEVICES, which Ray sets for every
    actor it gives GPUs (Ray Data's actor pools included), so code that does not import Ray can still
    refuse a GPU it was given but cannot use."""
    value = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES", "")
    return [g.strip() for g in value.split(",") if g.strip() and g.strip() != "-1"]


def resolve_device(device: str | None, *, gpu_ids: list[str] | None = None,
                   allow_cpu_fallback: bool = False) -> torch.device:
    """The requested device, or the machine's accelerator when there is one, else the CPU.

    gpu_ids: the GPUs the scheduler gave this process. A process given a GPU that CUDA cannot use
    raises a SweepError naming the driver and torch's CUDA version (a silent CPU fallback would turn
    a GPU sweep into a days-long CPU one); allow_cpu_fallback runs it on CPU with one warning instead.
    """
    if not device and gpu_ids:
        problem = check_assigned_gpu(gpu_ids)
        if problem is not None:
            if not allow_cpu_fallback:
                raise SweepError(problem)
            log.warning("%s; running on CPU (allow_cpu_fallback is set)", problem.split("; fix:")[0])
            return torch.device("cpu")
    if device:
        try:
            dev = torch.device(device)
            torch.empty(0, device=dev)
        except Exception as exc:
            raise SweepError(f"device {device!r} is not usable here: {one_line(exc, 120)}; "
                             "allowed: cpu or an available accelerator such as cuda:0") from None
        return dev
    acc = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    return acc if acc is not None else torch.device("cpu")
