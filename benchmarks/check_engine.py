"""Fidelity of the fast engine paths, measured on the same seeds: what each speed-up changes.

  device-vs-cpu   fp32 on the accelerator vs fp32 on the CPU (same model weights, same draws)
  bf16-vs-fp32    bf16 autocast vs fp32 on the accelerator, eager and each compiled variant
                  (--variants: regional compile, whole-step compile, with fused Adam, with CUDA
                  graphs), and each compiled variant vs bf16 eager (compile-vs-eager)
  host-syncs      host synchronisations inside the step loop (CUDA's sync debug mode), expected 0

For each feature: the activation reached on the final image (measured in fp32 without
augmentation, as the result rows record it), its relative difference, and the image difference.
Each comparison's rows go to --csv as soon as it is measured (one header for all of them), so a run
cut short (benchmarks/run_gpu.sh's time box) keeps the checks it finished.

    python benchmarks/check_engine.py --csv benchmarks/results/<date>-engine-fidelity-h200.csv
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_engine import VARIANTS, append_csv, device_name, sync  # noqa: E402
from sweep.core.devices import resolve_device  # noqa: E402
from sweep.method.engine import Engine  # noqa: E402
from sweep.method.recipe import Recipe  # noqa: E402
from sweep.method.render import Rendered, render, seeds_for  # noqa: E402
from sweep.models.anatomy import anatomy_of  # noqa: E402
from sweep.models.build import build  # noqa: E402

#: The CSV's columns after append_csv's lead (date, device...): every row has all of them, so rows
#: appended check by check share the header the first ones wrote.
FIELDS = ("check", "model", "layer", "feature", "a", "b", "act_init", "act_final_a", "act_final_b",
          "rel_diff_act_final", "image_max_abs_diff", "image_mean_abs_diff", "syncs_in_loop")


def run(net, anatomy, layer, features, recipe, device, engine, progress=None) -> Rendered:
    feats = list(range(features))
    return render(net, anatomy, anatomy.block(layer), "mlp", feats, recipe, seeds_for(feats), device,
                  progress=progress, engine=engine)


def compare(check: str, model: str, layer: int, a_name: str, a: Rendered, b_name: str, b: Rendered) -> list[dict]:
    rows = []
    for i, f in enumerate(a.features):
        fa, fb = float(a.act_final[i]), float(b.act_final[i])
        diff = (a.images[i] - b.images[i]).abs()
        rows.append({"check": check, "model": model, "layer": layer, "feature": f, "a": a_name, "b": b_name,
                     "act_init": float(a.act_init[i]), "act_final_a": fa, "act_final_b": fb,
                     "rel_diff_act_final": (fb - fa) / max(abs(fa), 1e-12),
                     "image_max_abs_diff": float(diff.max()), "image_mean_abs_diff": float(diff.mean())})
    return rows


def summary(rows: list[dict]) -> str:
    rel = [abs(r["rel_diff_act_final"]) for r in rows]
    ratio = statistics.mean(r["act_final_b"] for r in rows) / statistics.mean(r["act_final_a"] for r in rows)
    return (f"{rows[0]['check']} {rows[0]['model']} L{rows[0]['layer']} {rows[0]['b']} vs {rows[0]['a']}: "
            f"{len(rows)} features, |rel diff act_final| median {statistics.median(rel):.4f} max {max(rel):.4f}, "
            f"mean act_final ratio {ratio:.4f}, image mean |diff| {statistics.mean(r['image_mean_abs_diff'] for r in rows):.4f}"
            f" max {max(r['image_max_abs_diff'] for r in rows):.4f}")


def host_syncs(net, anatomy, layer, device, engine: Engine, steps: int = 6) -> int:
    """Synchronising calls CUDA's sync debug mode reports between the loop's 2nd and last iteration."""
    seen: list[int] = []

    def tick(_):
        seen.append(1)
        if len(seen) == 2:
            torch.cuda.set_sync_debug_mode("warn")
        if len(seen) == steps:
            torch.cuda.set_sync_debug_mode("default")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(net, anatomy, layer, 4, Recipe(steps=steps), device, engine, progress=tick)
    torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "called a synchronizing" in str(w.message).lower()]
    for w in syncs[:5]:
        print("  sync:", str(w.message).splitlines()[0])
    return len(syncs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--cpu-model", default="vit_tiny_patch16_224", help="model of the device-vs-cpu check")
    parser.add_argument("--cpu-layer", type=int, default=5)
    parser.add_argument("--cpu-steps", type=int, default=100, help="recipe steps of the device-vs-cpu check")
    parser.add_argument("--model", default="vit_base_patch16_224", help="model of the bf16-vs-fp32 check")
    parser.add_argument("--layer", type=int, default=-1)
    parser.add_argument("--steps", type=int, default=400, help="recipe steps of the bf16-vs-fp32 check (paper: 400)")
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--checks", nargs="+", default=["device-vs-cpu", "bf16-vs-fp32", "host-syncs"])
    parser.add_argument("--variants", nargs="+", choices=[v for v in VARIANTS if v not in ("fp32", "bf16")],
                        default=["bf16+compile", "bf16+step", "bf16+step+fused", "bf16+step+graphs"],
                        help="compiled variants compared with fp32 and with bf16 eager")
    parser.add_argument("--device", help="default: the accelerator")
    parser.add_argument("--csv", help="append per-feature rows here")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    name = device_name(device)
    print(f"device: {device} ({name}); torch {torch.__version__}", flush=True)

    def keep(new: list[dict]) -> list[dict]:
        """Append one comparison's rows to the CSV as soon as it is measured."""
        if args.csv and new:
            append_csv(args.csv, [{k: r.get(k) for k in FIELDS} for r in new], device, name)
        return new

    if "device-vs-cpu" in args.checks:
        anatomy = anatomy_of(args.cpu_model)
        cpu_net = build(anatomy.entry, "random", "cpu")
        dev_net = build(anatomy.entry, "random", device)
        recipe, fp32 = Recipe(steps=args.cpu_steps), VARIANTS["fp32"]
        t = time.perf_counter()
        on_cpu = run(cpu_net, anatomy, args.cpu_layer, args.features, recipe, torch.device("cpu"), fp32)
        on_dev = run(dev_net, anatomy, args.cpu_layer, args.features, recipe, device, fp32)
        new = keep(compare("device-vs-cpu", anatomy.entry.key, anatomy.block(args.cpu_layer).index,
                           "cpu:fp32", on_cpu, f"{device.type}:fp32", on_dev))
        print(summary(new), f"({time.perf_counter() - t:.0f} s)", flush=True)
    if "bf16-vs-fp32" in args.checks:
        anatomy = anatomy_of(args.model)
        net = build(anatomy.entry, "random", device)
        recipe = Recipe(steps=args.steps)
        layer = anatomy.block(args.layer).index
        results = {}
        for v in ("fp32", "bf16", *args.variants):  # each variant compared as soon as it has run
            t = time.perf_counter()
            results[v] = run(net, anatomy, args.layer, args.features, recipe, device, VARIANTS[v])
            sync(device)
            print(f"  {v}: {time.perf_counter() - t:.1f} s", flush=True)
            for ref in {"fp32": [], "bf16": ["fp32"]}.get(v, ["fp32", "bf16"]):
                check = "bf16-vs-fp32" if ref == "fp32" else "compile-vs-eager"
                new = keep(compare(check, anatomy.entry.key, layer, ref, results[ref], v, results[v]))
                print(summary(new), flush=True)
    if "host-syncs" in args.checks and device.type == "cuda":
        anatomy = anatomy_of(args.model)
        net = build(anatomy.entry, "random", device)
        for v in ("bf16", *args.variants):
            n = host_syncs(net, anatomy, args.layer, device, VARIANTS[v])
            print(f"host-syncs {anatomy.entry.key} {v}: {n} synchronising call(s) inside the step loop", flush=True)
            keep([{"check": "host-syncs", "model": anatomy.entry.key, "layer": args.layer, "b": v, "syncs_in_loop": n}])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
