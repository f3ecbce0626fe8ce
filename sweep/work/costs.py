"""What a planned sweep costs on a given GPU type: GPU-hours from measured throughput, dollars from list prices.

The throughput of each GPU type comes from a benchmark file (package data `gpu_throughput.json`
names it); a type nobody measured is reported as unmeasured rather than given an invented rate, so
a dry run for L4 nodes cannot quietly use an H200's number. Pure Python: no Ray, no torch at import.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from sweep.core.errors import SweepError, choices

#: The GPU type a dry run assumes on a machine without a GPU: the only one measured so far.
DEFAULT_GPU_TYPE = "h200"


@dataclass(frozen=True)
class Throughput:
    """A GPU type's sustained TFLOP/s (None: not measured) and the file it was measured in; per
    family where `benchmarks/bench_engine.py --families` measured one (others use `tflops`)."""

    gpu_type: str
    device_name: str
    tflops: float | None
    measured: str | None
    source: str | None
    families: dict | None = None          # family -> sustained TFLOP/s
    families_source: str | None = None


@dataclass(frozen=True)
class Price:
    """An instance type's hourly list price and its GPU count (so a price per GPU-hour)."""

    instance_type: str
    gpus: int
    usd_per_hour: float

    @property
    def per_gpu_hour(self) -> float:
        return self.usd_per_hour / self.gpus


@dataclass(frozen=True)
class Estimate:
    """A plan's cost on one GPU type; hours and dollars are None where no rate or price is known."""

    tflop: float
    gpu_type: str
    tflops: float | None
    tflops_source: str
    gpu_hours: float | None
    usd_per_gpu_hour: float | None
    price_source: str
    usd: float | None


@cache
def _table() -> dict:
    return json.loads(resources.files("sweep.work").joinpath("gpu_throughput.json").read_text())


def throughput_table() -> dict[str, Throughput]:
    return {k: Throughput(k, **v) for k, v in _table()["types"].items()}


def price_table() -> tuple[dict[str, Price], str]:
    """GPU type -> the instance type that carries it and its price; and the table's date."""
    prices = _table()["prices"]
    return {k: Price(**v) for k, v in prices["instances"].items()}, prices["as_of"]


def gpu_type_of(device_name: str) -> str | None:
    """The table's type for a device name ("NVIDIA H100 80GB HBM3" -> "h100"), None when unknown."""
    words = set(re.findall(r"[a-z0-9]+", device_name.lower()))
    return next((t for t in throughput_table() if t in words), None)


def detect_gpu_type() -> tuple[str, str]:
    """The GPU type of this machine's first CUDA device, else DEFAULT_GPU_TYPE; and how it was chosen."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        found = gpu_type_of(name)
        if found:
            return found, f"detected ({name})"
        return name, f"detected ({name}), not in the throughput table"
    return DEFAULT_GPU_TYPE, f"no GPU here: assumed {DEFAULT_GPU_TYPE}, the only measured type; choose with --gpu-type"


def check_gpu_type(gpu_type: str) -> str:
    """A user-given type, lower-cased; one line listing the known types when it is not one."""
    key = gpu_type.lower()
    if key not in throughput_table():
        raise SweepError(f"--gpu-type {gpu_type!r} is not a known GPU type; allowed: {choices(throughput_table())} "
                         "(another GPU: give --assume-tflops and --price-per-hour)")
    return key


def estimate(tflop: float | dict[str, float], gpu_type: str, assume_tflops: float | None = None,
             price_per_gpu_hour: float | None = None) -> Estimate:
    """GPU-hours = TFLOP / sustained TFLOP/s / 3600; dollars = GPU-hours x price per GPU-hour.

    tflop is a total, or TFLOP per model family: each family's work is then divided by that
    family's measured rate where the table has one (a Swin layer and a ViT layer of equal FLOPs
    do not run equally fast), by the type's rate otherwise; the rate shown is the resulting mean.
    assume_tflops and price_per_gpu_hour override the tables (for unmeasured or unlisted GPUs).
    """
    row = throughput_table().get(gpu_type)
    by_family = tflop if isinstance(tflop, dict) else {}
    tflop = sum(by_family.values()) if by_family else tflop
    if assume_tflops is not None:
        rate, rate_source = assume_tflops, "--assume-tflops"
    elif row is not None and row.tflops is not None:
        rate, rate_source = row.tflops, row.source
        measured = {f: t for f, t in (row.families or {}).items() if t and by_family.get(f)}
        if measured:
            seconds = sum(t / measured.get(f, row.tflops) for f, t in by_family.items())
            rate = tflop / seconds if seconds else row.tflops
            rate_source = (f"per family: {', '.join(sorted(measured))} from {row.families_source}; "
                           f"other families {row.tflops:g} from {row.source}")
    else:
        rate, rate_source = None, "unmeasured"
    prices, as_of = price_table()
    if price_per_gpu_hour is not None:
        price, price_source = price_per_gpu_hour, "--price-per-hour"
    elif gpu_type in prices:
        p = prices[gpu_type]
        price = p.per_gpu_hour
        price_source = (f"AWS on-demand list price of {p.instance_type} (${p.usd_per_hour:g}/h, {p.gpus} GPU), "
                        f"recorded {as_of}")
    else:
        price, price_source = None, "no price recorded"
    hours = tflop / rate / 3600 if rate else None
    usd = hours * price if hours is not None and price is not None else None
    return Estimate(tflop, gpu_type, rate, rate_source, hours, price, price_source, usd)


def _amount(x: float) -> str:
    """Two decimals, or two significant digits for the tiny amounts of a smoke plan."""
    return f"{x:,.2f}" if x >= 0.01 or x == 0 else f"{x:.2g}"


def describe(est: Estimate, how: str) -> list[str]:
    """The dry run's cost lines: which rate and price were used, GPU-hours and dollars (or why not)."""
    lines = [f"GPU type: {est.gpu_type} ({how})"]
    if est.tflops is None:
        lines.append(f"throughput: {est.gpu_type} is unmeasured (no benchmark in benchmarks/results/): no GPU-hours "
                     "estimate; give --assume-tflops, or measure it with benchmarks/run_gpu.sh")
        return lines
    lines.append(f"throughput: {est.tflops:g} TFLOP/s sustained ({est.tflops_source})")
    lines.append(f"estimated {_amount(est.gpu_hours)} GPU-hours (an estimate, not a measurement)")
    if est.usd is None:
        lines.append(f"price: {est.price_source} for {est.gpu_type}: give --price-per-hour for dollars")
    else:
        lines.append(f"estimated ${_amount(est.usd)} at ${est.usd_per_gpu_hour:.4g} per GPU-hour ({est.price_source})")
    return lines
