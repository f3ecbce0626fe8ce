"""The dry run's cost model: measured throughput per GPU type (from benchmarks/results/), unmeasured types
said so, GPU-hours and dollars against hand computation."""

from pathlib import Path

import pandas as pd
import pytest

from sweep.cli import main
from sweep.core.errors import SweepError
from sweep.work import costs

REPO = Path(__file__).resolve().parents[1]


def test_measured_rates_are_the_benchmark_files_numbers():
    table = costs.throughput_table()
    measured = {t: row for t, row in table.items() if row.tflops is not None}
    assert "h200" in measured and {"l4", "a10g", "h100"} <= set(table)
    for gpu_type, row in measured.items():
        csv = pd.read_csv(REPO / row.source)
        hit = csv[(csv["device_name"] == row.device_name) & (csv["variant"] == "engine:bf16+compile")
                  & csv["model"].str.startswith("vit_base_patch16_224")]
        assert hit["achieved_tflops"].tolist() == [pytest.approx(row.tflops)], gpu_type
    assert table["h200"].tflops == pytest.approx(284.30659)


@pytest.mark.parametrize("name, gpu_type", [("NVIDIA H200", "h200"), ("NVIDIA H100 80GB HBM3", "h100"),
                                            ("NVIDIA A10G", "a10g"), ("NVIDIA L4", "l4"),
                                            ("NVIDIA A100-SXM4-40GB", "a100"), ("NVIDIA GeForce RTX 4090", None)])
def test_gpu_type_from_device_name(name, gpu_type):
    assert costs.gpu_type_of(name) == gpu_type


def test_gpu_type_checked_with_allowed_values():
    assert costs.check_gpu_type("L4") == "l4"
    with pytest.raises(SweepError, match=r"--gpu-type 'rtx4090' is not a known GPU type; allowed: h200, .*l4"):
        costs.check_gpu_type("rtx4090")


def test_gpu_hours_and_dollars_by_hand():
    # H200: 1e6 TFLOP / 284.30659 TFLOP/s / 3600 s/h = 0.97704 h; p5en.48xlarge $63.296/h over 8 GPUs = $7.912/GPU-h.
    est = costs.estimate(1e6, "h200")
    assert est.gpu_hours == pytest.approx(0.9770360, rel=1e-6)
    assert est.usd_per_gpu_hour == pytest.approx(7.912)
    assert est.usd == pytest.approx(7.7303090, rel=1e-6)
    assert est.tflops_source == "benchmarks/results/2026-11-26-engine-h200.csv"
    # Overrides: 720,000 TFLOP at 100 TFLOP/s = 2 h; at $2.50/GPU-h = $5.
    est = costs.estimate(720_000, "l4", assume_tflops=100, price_per_gpu_hour=2.5)
    assert (est.gpu_hours, est.usd, est.tflops_source, est.price_source) == (2.0, 5.0, "--assume-tflops", "--price-per-hour")


def test_unmeasured_type_gives_no_hours_and_says_so():
    est = costs.estimate(1e6, "l4")
    assert est.tflops is None and est.gpu_hours is None and est.usd is None
    text = "\n".join(costs.describe(est, "--gpu-type"))
    assert "l4 is unmeasured" in text and "--assume-tflops" in text and "GPU-hours" not in text.split("unmeasured")[0]
    # Measured rate but no recorded price: hours, and a line asking for the price.
    lines = costs.describe(costs.estimate(1e6, "a100", assume_tflops=100), "--gpu-type")
    assert any("2.78 GPU-hours" in x for x in lines) and any("--price-per-hour" in x for x in lines)


def test_dry_run_prints_the_rate_its_source_and_dollars(tmp_path, capsys):
    base = ["run", "--model", "dev/vit-micro", "--layers", "0", "--features", "4", "--out", str(tmp_path), "--dry-run"]
    assert main([*base, "--gpu-type", "h200"]) == 0
    out = capsys.readouterr().out
    assert "GPU type: h200 (--gpu-type)" in out
    assert "284.307 TFLOP/s sustained (benchmarks/results/2026-11-26-engine-h200.csv)" in out
    assert "GPU-hours" in out and "per GPU-hour (AWS on-demand list price of p5en.48xlarge" in out
    assert main([*base, "--gpu-type", "l4"]) == 0
    out = capsys.readouterr().out
    assert "l4 is unmeasured" in out and "TFLOP/s sustained" not in out
    assert main([*base, "--gpu-type", "l4", "--price-per-hour", "0"]) == 2
    assert "--price-per-hour: input should be greater than 0" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_per_family_rates_divide_each_familys_work(monkeypatch):
    """With a measured per-family table, each family's TFLOP goes at its own rate; a family without
    a measured rate goes at the type's."""
    table = {**costs.throughput_table()}
    h200 = table["h200"]
    table["h200"] = costs.Throughput(h200.gpu_type, h200.device_name, 200.0, h200.measured, "engine.csv",
                                     families={"swin": 50.0, "vit": 200.0}, families_source="families.csv")
    monkeypatch.setattr(costs, "throughput_table", lambda: table)
    # vit 720,000 TFLOP at 200 = 3,600 s; swin 180,000 at 50 = 3,600 s; coat 360,000 at 200 (unmeasured) = 1,800 s.
    est = costs.estimate({"vit": 720_000, "swin": 180_000, "coat": 360_000}, "h200")
    assert est.gpu_hours == pytest.approx(2.5) and est.tflops == pytest.approx(1_260_000 / 9_000)
    assert "per family: swin, vit from families.csv" in est.tflops_source and "200 from engine.csv" in est.tflops_source
    assert costs.estimate({"vit": 720_000}, "h200").gpu_hours == pytest.approx(1.0)
