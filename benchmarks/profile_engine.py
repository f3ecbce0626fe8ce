"""Where one engine step spends its device time: kernels grouped into matrix products, attention,
compiled (Triton) fusions and the rest, from torch.profiler over a few steady iterations.

    python benchmarks/profile_engine.py --model vit_base_patch16_224 --features 128
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_engine import VARIANTS, sync  # noqa: E402
from sweep.core.devices import resolve_device  # noqa: E402
from sweep.method.recipe import Recipe  # noqa: E402
from sweep.method.render import render, seeds_for  # noqa: E402
from sweep.models.anatomy import anatomy_of  # noqa: E402
from sweep.models.build import build  # noqa: E402

GROUPS = (("attention", ("flash", "fmha", "attention", "sdpa")),
          ("matmul", ("gemm", "cutlass", "nvjet", "sm90", "cublas", "matmul", "addmm", "mm")),
          ("compiled fusion", ("triton",)))


def group_of(name: str) -> str:
    low = name.lower()
    return next((g for g, keys in GROUPS if any(k in low for k in keys)), "other")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--layer", type=int, default=-1)
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--variant", choices=list(VARIANTS), default="bf16+compile")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="profiled iterations")
    parser.add_argument("--device")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    anatomy = anatomy_of(args.model)
    net = build(anatomy.entry, "random", device)
    feats = list(range(args.features))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    prof = profile(activities=activities)
    seen = []

    def tick(_):
        seen.append(1)
        sync(device)
        if len(seen) == args.warmup:
            prof.start()
        if len(seen) == args.warmup + args.steps:
            prof.stop()

    render(net, anatomy, anatomy.block(args.layer), "mlp", feats, Recipe(steps=args.warmup + args.steps), seeds_for(feats),
           device, progress=tick, engine=VARIANTS[args.variant])
    events = [e for e in prof.key_averages() if e.device_type.name == ("CUDA" if device.type == "cuda" else "CPU")]
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    if device.type == "cpu":
        events = [e for e in events if not e.key.startswith(("aten::", "autograd", "torch::", "Optimizer"))] or \
            [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(getattr(e, attr) for e in events) or 1.0
    groups: dict[str, float] = defaultdict(float)
    for e in events:
        groups[group_of(e.key)] += getattr(e, attr)
    print(f"{args.model} L{args.layer} {args.variant} F={args.features}: {total / args.steps / 1e3:.1f} ms "
          f"kernel time per step on {device}")
    for g, t in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {g:16s} {100 * t / total:5.1f} %  {t / args.steps / 1e3:8.1f} ms/step")
    for e in sorted(events, key=lambda e: -getattr(e, attr))[:args.top]:
        print(f"  {100 * getattr(e, attr) / total:5.1f} %  {e.count // args.steps:4d}x  {e.key[:110]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
