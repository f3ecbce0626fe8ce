"""Atlas build at scale: a full build, a rebuild with nothing new, a rebuild with 1 % new features.

Makes a synthetic results root on local disk (small PNGs and feature rows in the sweep's own layout,
one Parquet part per batch of 16 features, as the sweep writes them), then times in one run:
  full:      the first build of the site;
  no change: the same build again (the listing matches the site's state: nothing read or written);
  1 % new:   after adding 1 % more features (new parts in new layers and extra features in old ones).
Prints the three times and the ratios the issue targets (no change < 60 s, 1 % < 5 % of full).

    .venv/bin/python benchmarks/bench_atlas.py --features 200000 --out benchmarks/results/2026-11-27-atlas-cpu.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import shutil
import tempfile
import time
import uuid

import numpy as np
import pandas as pd
from PIL import Image

from sweep.store.layout import FEATURE_SCHEMA, FEATURES, image_relpath
from sweep.store.outputs import frame_parquet_bytes
from sweep.views.atlas import build_atlas

BATCH = 16


def _png(rng: np.random.Generator, size: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _rows(model: str, layer: int, features: list[int], rng, size: int) -> pd.DataFrame:
    n = len(features)
    steps = list(range(0, 401, 40))
    data = {name: [None] * n for name in FEATURE_SCHEMA.names}
    data.update(weights=["random"] * n, layer=[layer] * n, layer_name=[f"blocks.{layer}"] * n, site=["mlp"] * n,
                feature=features, status=["ok"] * n, error=[""] * n, seed=features, base_seed=[0] * n,
                steps=[400] * n, lr=[0.1] * n, tv=[1.0] * n, act_init=rng.random(n).tolist(),
                act_final=(rng.random(n) * 10).tolist(), loss_final=(-rng.random(n)).tolist(),
                curve_steps=[steps] * n, loss_curve=[list(-np.linspace(0, 1, len(steps)))] * n,
                act_curve=[list(np.linspace(0, 5, len(steps)))] * n, device=["cpu"] * n, precision=["fp32"] * n,
                config_hash=["synthetic"] * n, image_size=[size] * n,
                image_path=[image_relpath(model, layer, "mlp", f) for f in features],
                created_at=[pd.Timestamp.now(tz="UTC").floor("ms")] * n)
    return pd.DataFrame(data)


def write_features(root: str, model: str, layer: int, features: list[int], rng, size: int = 32) -> None:
    """PNGs and one Parquet part per batch of 16 features, in the sweep's layout."""
    for i in range(0, len(features), BATCH):
        batch = features[i:i + BATCH]
        for f in batch:
            path = os.path.join(root, image_relpath(model, layer, "mlp", f))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(_png(rng, size))
        part = os.path.join(root, FEATURES.part(f"part-{uuid.uuid4().hex}.parquet", model=model))
        os.makedirs(os.path.dirname(part), exist_ok=True)
        with open(part, "wb") as fh:
            fh.write(frame_parquet_bytes(_rows(model, layer, batch, rng, size), FEATURE_SCHEMA))


def synthetic_root(root: str, features: int, models: int = 8, layers: int = 12, seed: int = 0) -> dict:
    """`features` features spread over models x layers (the first layers of each model)."""
    rng = np.random.default_rng(seed)
    per_layer = max(1, features // (models * layers))
    for m in range(models):
        for layer in range(layers):
            write_features(root, f"synthetic/model-{m}", layer, list(range(per_layer)), rng)
    return {"models": models, "layers": layers, "per_layer": per_layer}


def grow(root: str, shape: dict, fraction: float, seed: int = 1) -> int:
    """Add `fraction` more features: half as one new layer of the first model, half as extra features
    appended to the last layer of every model."""
    rng = np.random.default_rng(seed)
    total = shape["models"] * shape["layers"] * shape["per_layer"]
    extra = max(2, int(total * fraction))
    write_features(root, "synthetic/model-0", shape["layers"], list(range(extra // 2)), rng)
    per_model = max(1, (extra - extra // 2) // shape["models"])
    for m in range(shape["models"]):
        start = shape["per_layer"]
        write_features(root, f"synthetic/model-{m}", shape["layers"] - 1, list(range(start, start + per_model)), rng)
    return extra // 2 + per_model * shape["models"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", type=int, default=200_000)
    p.add_argument("--models", type=int, default=8)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--page-size", type=int, default=256)
    p.add_argument("--workers", type=int, help="atlas pool size (default: the atlas's own choice)")
    p.add_argument("--workdir", help="where the synthetic root and site go (default: a temporary folder)")
    p.add_argument("--out", help="append the measured row to this CSV")
    args = p.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="bench-atlas-")
    root, site = os.path.join(work, "results"), os.path.join(work, "site")
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(site, ignore_errors=True)
    t = time.perf_counter()
    shape = synthetic_root(root, args.features, args.models, args.layers)
    made = time.perf_counter() - t
    n = shape["models"] * shape["layers"] * shape["per_layer"]
    print(f"synthetic root: {n} features ({shape}) made in {made:.0f} s")
    times, stats = {}, {}
    for name in ("full", "no change", "1% new"):
        if name == "1% new":
            added = grow(root, shape, 0.01)
            print(f"added {added} features ({100 * added / n:.2f} %)")
        t = time.perf_counter()
        stats[name] = build_atlas(root, site, page_size=args.page_size, workers=args.workers, progress=True)
        times[name] = time.perf_counter() - t
        print(f"{name:>9}: {times[name]:8.1f} s, {len(stats[name]['written'])} file(s) written, "
              f"{len(stats[name]['models_read'])} model(s) read")
    ratio = times["1% new"] / times["full"]
    print(f"no-change rebuild {times['no change']:.1f} s (target < 60 s); 1 % rebuild / full = {100 * ratio:.2f} % "
          f"(target < 5 %); cpus {os.cpu_count()}")
    if args.out:
        new = not os.path.exists(args.out)
        with open(args.out, "a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(["features", "models", "layers", "page_size", "cpus", "machine", "full_s", "no_change_s",
                            "one_percent_s", "one_percent_over_full", "files_full", "files_one_percent"])
            w.writerow([n, shape["models"], shape["layers"], args.page_size, os.cpu_count(), platform.machine(),
                        f"{times['full']:.1f}", f"{times['no change']:.2f}", f"{times['1% new']:.1f}", f"{ratio:.4f}",
                        len(stats["full"]["written"]), len(stats["1% new"]["written"])])
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
