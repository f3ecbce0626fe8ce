"""Engine speed against the one-feature-at-a-time baseline, both measured in one run on one machine.

For each model and layer, on random weights with the paper's recipe:
  baseline       benchmarks/baseline.py: one feature, 8 copies, whole network, fp32, eager
  engine:<v>     sweep.method.render.render with F features per batch in variant v: fp32, bf16,
                 bf16+compile (regional: the blocks before the hooked one; the default on CUDA GPUs),
                 bf16+step (the whole step compiled around a network cut at the tap), bf16+step+fused
                 (and fused Adam), bf16+step+graphs (and CUDA graphs: mode reduce-overhead); the
                 forward stopped at the block
A few loop iterations are timed after warm-up (median; the GPU is synchronized at each tick).
features/hour = 3600 * F / (401 * step_s + draw_s), where draw_s is the measured cost of drawing
the batch's 401 steps of augmentation up front (one-time compilation is reported apart, as
compile_s, since a worker pays it once per model). Achieved TFLOP/s counts the FLOPs of one
iteration with torch's FlopCounterMode (forward to the hooked block + input gradient, attention
included) and is given as a fraction of the device's datasheet bf16 dense peak and of a bf16
(GPU) / fp32 (CPU) matrix product measured here.

    .venv/bin/python benchmarks/bench_engine.py --models vit_tiny_patch16_224 --layers all   # CPU target
    python benchmarks/bench_engine.py --models vit_base_patch16_224 --features 128            # on a GPU
    python benchmarks/bench_engine.py --families --variants bf16+compile bf16+step            # per family

--families measures one model of each family of the paper preset (or the --models given) at its
first, middle and last block (or the --layers given: first, middle, last or indices) and prints per
family the features/hour, % of the bf16 peak and the achieved TFLOP/s as a fraction of the best
family's (the target: none below 25 %). Every row goes to --csv as soon as it is measured and
carries its model and family, so a run cut short (benchmarks/run_gpu.sh's time box) keeps its
per-family numbers even though the --families-csv table is written only at the end; a model that
fails is reported and skipped, so one family's error does not cost the others' measurements.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.baseline import visualize_one  # noqa: E402
from benchmarks.csv_rows import append_rows  # noqa: E402
from sweep.core.devices import resolve_device  # noqa: E402
from sweep.method.augment import draw_schedule  # noqa: E402
from sweep.method.engine import Engine  # noqa: E402
from sweep.method.param import feature_generators  # noqa: E402
from sweep.method.recipe import Recipe  # noqa: E402
from sweep.method.render import render, seeds_for  # noqa: E402
from sweep.models.anatomy import anatomy_of  # noqa: E402
from sweep.models.build import build, meta_module  # noqa: E402
from sweep.models.taps import read_features  # noqa: E402

#: Datasheet dense bf16 tensor-core peaks (TFLOP/s), matched against the device name in order.
BF16_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4),
                    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.1), ("L4", 121.0), ("A10G", 70.0))
VARIANTS = {"fp32": Engine(precision="fp32", compile="off"),
            "bf16": Engine(precision="bf16", compile="off"),
            "bf16+compile": Engine(precision="bf16", compile="on"),
            "bf16+step": Engine(precision="bf16", compile="step"),
            "bf16+step+fused": Engine(precision="bf16", compile="step", adam="fused"),
            "bf16+step+graphs": Engine(precision="bf16", compile="step", compile_mode="reduce-overhead")}
PAPER_ITERATIONS = Recipe().iterations


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def datasheet_peak(name: str) -> float | None:
    return next((tf for key, tf in BF16_PEAK_TFLOPS if key in name), None)


def measured_matmul_tflops(device: torch.device) -> float:
    """Rate of a large square matrix product: bf16 on accelerators, fp32 on CPUs."""
    n, dtype = (8192, torch.bfloat16) if device.type != "cpu" else (2048, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 10 if device.type != "cpu" else 5
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def append_csv(path: str, rows: list[dict], device: torch.device, name: str, **extra) -> None:
    """Append rows, each led by the date, device, device name, torch version and `extra`; the header
    (the union of the rows' keys) is written when the file is new."""
    lead = {"date": dt.date.today().isoformat(), "device": str(device), "device_name": name,
            "torch": torch.__version__, **extra}
    rows = [{**lead, **r} for r in rows]
    append_rows(path, rows, list(dict.fromkeys(k for r in rows for k in r)))


def sync(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def step_flops_per_image(anatomy, block, site: str = "mlp") -> float:
    """FLOPs of one image's forward to the hooked block plus its input gradient (meta device)."""
    net = meta_module(anatomy.entry).requires_grad_(False)
    size = anatomy.preprocess.input_size
    x = torch.empty(2, 3, size, size, device="meta", requires_grad=True)
    counter = FlopCounterMode(display=False)
    with counter:
        read_features(net, block, site, x)[:, 0].sum().backward()
    return counter.get_total_flops() / 2


class Ticks:
    """Progress callback that records a synchronized timestamp per loop iteration."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stamps: list[float] = []

    def __call__(self, _n: int) -> None:
        sync(self.device)
        self.stamps.append(time.perf_counter())

    def steps(self, start: float, warmup: int) -> list[float]:
        stamps = [start, *self.stamps]
        return [b - a for a, b in zip(stamps, stamps[1:])][warmup:]


def time_baseline(net, anatomy, block, device, warmup: int, iters: int) -> dict:
    ticks = Ticks(device)
    start = time.perf_counter()
    visualize_one(net, anatomy, block, 0, Recipe(steps=warmup + iters - 1), 0, device, progress=ticks)
    step_s = statistics.median(ticks.steps(start, warmup))
    return {"features": 1, "features_per_pass": 1, "step_s": step_s, "compiled": "off", "draw_s": 0.0,
            "compile_s": 0.0, "per_feature_s": PAPER_ITERATIONS * step_s}


def time_engine(net, anatomy, block, device, engine: Engine, features: int, warmup: int, iters: int) -> dict:
    feats = list(range(features))
    seeds = seeds_for(feats)
    start = time.perf_counter()
    draw_schedule(feature_generators(seeds), Recipe())
    draw_s = time.perf_counter() - start
    ticks = Ticks(device)
    sync(device)
    start = time.perf_counter()
    out = render(net, anatomy, block, "mlp", feats, Recipe(steps=warmup + iters - 1), seeds, device,
                 progress=ticks, engine=engine)
    steps = ticks.steps(start, 0)
    step_s = statistics.median(steps[warmup:])
    return {"features": features, "features_per_pass": out.engine.features_per_pass, "step_s": step_s,
            "compiled": out.engine.compile,  # "on" where a step compile fell back to the regional one
            "draw_s": draw_s, "compile_s": max(steps[0] - step_s, 0.0) if out.engine.compile != "off" else 0.0,
            "per_feature_s": (PAPER_ITERATIONS * step_s + draw_s) / features}


def bench(model: str, layers: list[int], variants: list[str], features: int, warmup: int, iters: int,
          device: torch.device, peaks: dict, write=lambda row: None) -> list[dict]:
    anatomy = anatomy_of(model)
    net = build(anatomy.entry, "random", device)
    rows = []
    for layer in layers:
        block = anatomy.block(layer)
        per_image = step_flops_per_image(anatomy, block)
        copies = Recipe().copies
        base = time_baseline(net, anatomy, block, device, warmup, iters)
        runs = [("baseline", base)]
        for v in variants:
            runs.append((f"engine:{v}", time_engine(net, anatomy, block, device, VARIANTS[v], features, warmup, iters)))
        for variant, r in runs:
            tflops = per_image * copies * r["features"] / r["step_s"] / 1e12
            rows.append({
                "model": anatomy.entry.key, "family": anatomy.entry.family, "layer": block.index,
                "variant": variant, **r,
                "features_per_hour": 3600 / r["per_feature_s"],
                "speedup_vs_baseline": base["per_feature_s"] / r["per_feature_s"],
                "step_gflop_per_image": per_image / 1e9, "achieved_tflops": tflops,
                "pct_datasheet_bf16_peak": 100 * tflops / peaks["datasheet"] if peaks["datasheet"] else None,
                "pct_measured_matmul": 100 * tflops / peaks["measured"],
            })
            print(format_row(rows[-1]), flush=True)
            write(rows[-1])
    return rows


def format_row(r: dict) -> str:
    pct = f"{r['pct_datasheet_bf16_peak']:.1f}% of bf16 peak, " if r["pct_datasheet_bf16_peak"] is not None else ""
    return (f"{r['model']} L{r['layer']:<2} {r['variant']:<20} F={r['features']:<4} pass={r['features_per_pass']:<4} "
            f"step {r['step_s'] * 1e3:9.1f} ms  {r['features_per_hour']:10.1f} features/h  "
            f"{r['speedup_vs_baseline']:6.2f}x  {r['achieved_tflops']:8.2f} TFLOP/s ({pct}"
            f"{r['pct_measured_matmul']:.1f}% of measured matmul)")


def summarize(rows: list[dict]) -> list[str]:
    """Per model and variant: mean of per-layer speedups and the ratio of summed per-feature times."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        base = {r["layer"]: r["per_feature_s"] for r in mine if r["variant"] == "baseline"}
        for variant in dict.fromkeys(r["variant"] for r in mine if r["variant"] != "baseline"):
            rs = [r for r in mine if r["variant"] == variant]
            mean = statistics.mean(r["speedup_vs_baseline"] for r in rs)
            total = sum(base[r["layer"]] for r in rs) / sum(r["per_feature_s"] for r in rs)
            out.append(f"{model} {variant}: over {len(rs)} layer(s) mean speedup {mean:.2f}x, "
                       f"equal features per layer {total:.2f}x")
    return out


def family_models() -> list[str]:
    """The first model of each family in the paper preset (the 38 variants, the original ViTs, CLIP).

    Read from the zoo's entries, not their anatomies: describing every model of the preset (~47
    meta-device builds) would cost start-up time that a time-boxed GPU run needs for measuring."""
    from sweep.models.zoo import get_entry
    from sweep.work.plan import SweepConfig

    models = SweepConfig.from_dict({"preset": "paper", "out": "unused"}).models
    first: dict[str, str] = {}
    for m in models:
        entry = get_entry(m)
        first.setdefault(entry.family, entry.key)
    return list(first.values())


def pick_layers(spec: list[str], depth: int) -> list[int]:
    """Block indices from 'all', or names first / middle / last and integers (kept as given, so
    -1 still means the last block); a block named twice is measured once."""
    if spec == ["all"]:
        return list(range(depth))
    named = {"first": 0, "middle": depth // 2, "last": depth - 1}
    return list(dict.fromkeys(named[x] if x in named else int(x) for x in spec))


def family_table(rows: list[dict]) -> list[dict]:
    """Per family and engine variant: mean features/hour, % of peak and achieved TFLOP/s over its
    layers, and that TFLOP/s as a percentage of the best family's in the same variant."""
    out = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        fams = {}
        for fam in dict.fromkeys(r["family"] for r in mine):
            rs = [r for r in mine if r["family"] == fam]
            fams[fam] = {"variant": variant, "family": fam, "model": rs[0]["model"],
                         "layers": " ".join(str(r["layer"]) for r in rs),
                         "features_per_hour": statistics.mean(r["features_per_hour"] for r in rs),
                         "achieved_tflops": statistics.mean(r["achieved_tflops"] for r in rs),
                         "pct_datasheet_bf16_peak": (statistics.mean(r["pct_datasheet_bf16_peak"] for r in rs)
                                                     if rs[0]["pct_datasheet_bf16_peak"] is not None else None),
                         "compile_s": max(r["compile_s"] for r in rs),
                         "compiled": " ".join(sorted({str(r.get("compiled", "")) for r in rs}))}
        best = max(f["achieved_tflops"] for f in fams.values())
        for f in fams.values():
            out.append({**f, "pct_of_best_family": 100 * f["achieved_tflops"] / best})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--models", nargs="+",
                        help="default: vit_tiny_patch16_224; with --families one model per family of the paper preset")
    parser.add_argument("--families", action="store_true",
                        help="per-family table over --models (default: one model per family of the paper preset), "
                             "at --layers (default: first middle last)")
    parser.add_argument("--families-csv", help="write the per-family table to this CSV")
    parser.add_argument("--layers", nargs="+",
                        help="block indices, first / middle / last, or 'all' (default: the last; with --families "
                             "first middle last)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                        help="engine variants (default: fp32 on CPU; fp32 bf16 bf16+compile on GPUs)")
    parser.add_argument("--features", type=int, help="features per engine batch (default 16 on CPU, 128 on GPUs)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations per run (default 1)")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per run (default 3)")
    parser.add_argument("--device", help="default: the accelerator if any, else cpu")
    parser.add_argument("--peak-tflops", type=float, help="bf16 dense peak of the device (default: datasheet table)")
    parser.add_argument("--csv", help="append rows to this CSV (e.g. benchmarks/results/<date>-engine-<device>.csv)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    variants = args.variants or (["fp32", "bf16", "bf16+compile"] if gpu else ["fp32"])
    features = args.features or (128 if gpu else 16)
    name = device_name(device)
    peaks = {"datasheet": args.peak_tflops or datasheet_peak(name), "measured": measured_matmul_tflops(device)}
    print(f"device: {device} ({name}); torch {torch.__version__}; threads {torch.get_num_threads()}; "
          f"datasheet bf16 peak {peaks['datasheet']} TFLOP/s; measured matmul {peaks['measured']:.1f} TFLOP/s",
          flush=True)
    def write(row: dict) -> None:
        """Append one row as soon as it is measured, so a run cut short keeps what it measured."""
        if args.csv:
            append_csv(args.csv, [{k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}],
                       device, name, datasheet_bf16_peak_tflops=peaks["datasheet"],
                       measured_matmul_tflops=round(peaks["measured"], 2))

    rows, failed = [], []
    models = args.models or (family_models() if args.families else ["vit_tiny_patch16_224"])
    spec = args.layers or (["first", "middle", "last"] if args.families else ["-1"])
    if spec != ["all"] and not all(x in ("first", "middle", "last") or x.lstrip("-").isdigit() for x in spec):
        parser.error(f"--layers: give block indices, first / middle / last, or all; got {' '.join(spec)}")
    for model in models:
        try:
            layers = pick_layers(spec, len(anatomy_of(model).blocks))
            rows += bench(model, layers, variants, features, args.warmup, args.iters, device, peaks, write)
        except Exception as exc:  # noqa: BLE001 - per family, the others still measured (see the docstring)
            if not args.families:
                raise
            failed.append(model)
            print(f"failed: {model}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}", flush=True)
    for line in summarize(rows):
        print(line)
    if args.families:
        table = [r for r in family_table(rows) if r["variant"] != "baseline"]
        for r in table:
            pct = f"{r['pct_datasheet_bf16_peak']:.1f}% of peak" if r["pct_datasheet_bf16_peak"] is not None else ""
            print(f"{r['variant']:<18} {r['family']:<12} {r['model']:<44} {r['features_per_hour']:10.1f} features/h "
                  f"{r['achieved_tflops']:8.2f} TFLOP/s {pct} {r['pct_of_best_family']:5.1f}% of the best family "
                  f"(compile {r['compile_s']:.0f} s, {r['compiled']})")
        if args.families_csv and table:
            append_csv(args.families_csv, [{k: round(v, 5) if isinstance(v, float) else v for k, v in r.items()}
                                           for r in table], device, name)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
