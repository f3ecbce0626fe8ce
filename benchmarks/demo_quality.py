"""Real-weight quality of the recipe on the demo model (the trained ViT-S/14 a package ships).

For a seeded sample of units per block (the sweep's own `sample` feature selection), renders each
unit's image with the given recipe and judges it without a human (sweep/work/quality.py): its clean
activation against its initial image and against each of scikit-image's 15 natural photos, its
percentile among the unit's activations on those photos and their crops (150 images), the fraction
of it that survives random shifts and zooms, and its plausibility (the model's own final features
against the photos'). Every number is measured in fp32 whatever --precision rendered the image.
Prints one line per unit and the fraction of units whose image beats every photo, per block and in
all; appends the rows to --csv (benchmarks/method_table.py makes the per-method, per-block table).

    .venv/bin/python benchmarks/demo_quality.py --layers 1 4 8 11 --count 2 --steps 40 \\
        --csv benchmarks/results/2026-12-06-demo-quality-cpu.csv --label paper --recipe paper
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.csv_rows import append_rows  # noqa: E402


def verdict(q) -> str:
    return "beats every photo" if q.beats_photos else "switched off" if not q.switched_on else "below a photo"


def parse_method(text: str) -> tuple[str | None, str, float | None]:
    """`PARAM:SITE[:LR]` -> (param, site, lr or None); param None when the text is not one."""
    parts = text.split(":")
    if not 2 <= len(parts) <= 3:
        return None, "", None
    param, site, lr = (parts + [""])[:3]
    try:
        rate = float(lr) if lr else None
    except ValueError:
        return None, "", None
    if param not in ("pixel", "fourier", "maco") or not site or (rate is not None and not rate > 0):
        return None, "", None
    return param, site, rate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo/dinov2-vits14")
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 4, 8, 11])
    parser.add_argument("--count", type=int, default=2, help="units sampled per block (default 2)")
    parser.add_argument("--unit-seed", type=int, default=0, help="seed of the unit sample")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, help="default: the family's (see --recipe)")
    parser.add_argument("--tv", type=float, help="default: the family's (see --recipe)")
    parser.add_argument("--jitter", type=int, help="max circular shift in pixels (default: the paper's 32)")
    parser.add_argument("--units", nargs="+", metavar="LAYER:FEATURE",
                        help="these units instead of a sample of --count per block of --layers")
    parser.add_argument("--recipe", choices=("tuned", "paper"), default="tuned",
                        help="where lr and tv not given come from (default tuned: the family's stored values)")
    parser.add_argument("--param", choices=("pixel", "fourier", "maco"), default="pixel",
                        help="the parametrization (sweep/method/param.py; default pixel, the paper's)")
    parser.add_argument("--site", help="the site optimized (default: the model's, mlp); mlp_pre optimizes the same "
                        "unit before its GELU; units are judged at mlp either way (sweep/work/quality.py)")
    parser.add_argument("--label", default="", help="a name for this configuration in the CSV")
    parser.add_argument("--csv", help="append the per-unit rows here (after each block)")
    parser.add_argument("--images", help="save each unit's image as IMAGES/LABEL/L<layer>-f<feature>.png "
                        "(benchmarks/contact_sheet.py tiles them)")
    parser.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    parser.add_argument("--methods", nargs="+", metavar="PARAM:SITE[:LR]",
                        help="run each of these methods in turn (e.g. pixel:mlp pixel:mlp_pre maco:mlp_pre:0.2), "
                        "each labelled PARAM-SITE-STEPS[-lrLR], instead of one --param/--site[/--lr]")
    parser.add_argument("--device", help="cpu, cuda, ... (default: the machine's accelerator where there is one)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="the render's arithmetic (sweep/method/engine.py; auto: bf16 where the device has it "
                        "natively, as the sweep does); every image is judged in fp32 whatever this is")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.methods:
        rest = list(argv if argv is not None else sys.argv[1:])
        cut = rest.index("--methods")
        end = cut + 1
        while end < len(rest) and not rest[end].startswith("--"):
            end += 1
        rest = rest[:cut] + rest[end:]
        methods = [(m, *parse_method(m)) for m in args.methods]
        for method, param, _, _ in methods:  # every one checked before any work
            if param is None:
                parser.error(f"--methods: {method!r} is not PARAM:SITE[:LR] with PARAM pixel, fourier or maco "
                             "and LR a positive number")
        for _, param, site, lr in methods:
            extra = [] if lr is None else ["--lr", str(lr)]
            label = f"{param}-{site}-{args.steps}" + ("" if lr is None else f"-lr{lr:g}")
            code = main([*rest, "--param", param, "--site", site, *extra, "--label", label])
            if code:
                return code
        return 0

    from sweep.data.photos import photo_crops, photos
    from sweep.method.recipe import Recipe
    from sweep.models.anatomy import anatomy_of
    from sweep.models.build import build
    from sweep.work.plan import FeatureSelection
    from sweep.work.quality import judge_units

    anatomy = anatomy_of(args.model)
    from sweep.core.devices import resolve_device

    device = resolve_device(args.device)
    net = build(anatomy.entry, "pretrained", device)
    site = args.site or anatomy.default_site
    pick = FeatureSelection(mode="sample", count=args.count, seed=args.unit_seed)
    units = [(layer, f) for layer in args.layers
             for f in pick.pick(anatomy.block(layer).width(site), anatomy.entry.key, layer)]
    if args.units:
        units = [tuple(int(v) for v in u.split(":")) for u in args.units]
        args.layers = sorted({layer for layer, _ in units})
    from sweep.method.engine import Engine

    engine = Engine(precision=args.precision, compile="off").resolved(device)
    extra = {} if args.jitter is None else {"jitter": args.jitter}
    recipe = Recipe(steps=args.steps, lr=args.lr, tv=args.tv, defaults=args.recipe, param=args.param, **extra)
    references = photo_crops()
    start = time.perf_counter()
    judged = []
    for layer in args.layers:  # one block at a time: its rows and images are kept as soon as it is done
        began = time.perf_counter()
        mine, images = judge_units(net, anatomy, [u for u in units if u[0] == layer], recipe, photos(), site,
                                   device=device, engine=engine, references=references, plausible=True)
        seconds = (time.perf_counter() - began) / max(1, len(mine))
        rows = []
        for q, image in zip(mine, images):
            row = {"date": dt.date.today().isoformat(), "label": args.label, "model": anatomy.entry.key,
                   "site": site, **q.row(), "param": args.param, "jitter": recipe.jitter, "unit_seed": args.unit_seed,
                   "seconds_per_unit": round(seconds, 2), "host": platform.node(), "device": str(device) if device.type == "cpu" else
                   torch.cuda.get_device_name(device),
                   "threads": args.threads, "precision": engine.precision}
            rows.append(row)
            print(f"block {q.layer:2d} unit {q.feature:4d}: init {q.act_init:7.3f} final {q.act_final:7.3f} "
                  f"best photo {q.best_photo_act:7.3f} ({q.best_photo}) shift {q.shift_ratio:5.2f} "
                  f"scale {q.scale_ratio:5.2f} pct {q.percentile:5.1f} plausible {q.plausibility:.2f} "
                  f"{verdict(q)}",
                  flush=True)
            if args.images:
                folder = os.path.join(args.images, args.label or "unlabelled")
                os.makedirs(folder, exist_ok=True)
                Image.fromarray((image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(
                    os.path.join(folder, f"L{q.layer}-f{q.feature}.png"))
        print(f"block {layer}: {sum(q.beats_photos for q in mine)}/{len(mine)} beat every photo "
              f"({seconds:.0f} s per unit)", flush=True)
        if args.csv:
            append_rows(args.csv, rows)
        judged += mine
    wall = time.perf_counter() - start
    total = sum(q.beats_photos for q in judged)
    print(f"{args.label or 'all'}: lr {judged[0].lr:g} tv {judged[0].tv:g} steps {args.steps}: {total}/{len(judged)} "
          f"units beat every photo ({total / len(judged):.0%}); {wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
