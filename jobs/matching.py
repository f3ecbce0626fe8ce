"""The same unit across models: match every unit of every listed model to its counterparts in the others.

    python jobs/matching.py --model B_16_imagenet1k ViT-B/32 ResNet-50 --val /data/imagenet/val \
        --val-solution /data/LOC_val_solution.csv --limit 50000 --probe val --out results/atlas
    python jobs/matching.py --model dev/vit-micro dev/vit-micro-b --weights random --out r   # shipped photos

Every model reads the same probe images (a folder, ImageNet-layout data, or by default the photos the
project ships and their crops); each unit's profile (its patch-mean activation per image at the
model's site) is correlated with every unit of every other model, streamed in shards
(sweep/experiments/matching.py). Writes <out>/matches/pair=<a>~<b>/part-<key>.parquet: per unit its
--k best units in each other model, with the Pearson score, mutual best matches marked; prints the
Rosetta sets (units that are mutual best matches across at least --min-models models). A re-run skips
what is there; a new probe set or new weights recompute.
"""

import argparse
import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from sweep.cli import (  # noqa: E402
    ADDRESS_HELP,
    MODEL_HELP,
    add_image_source,
    add_model_arg,
    address_arg,
    check_options,
    connect_ray,
    gather,
    guarded,
    image_listing,
    setup_logging,
)
from sweep.core.validation import Count, Positive, parse  # noqa: E402
from sweep.experiments.matching import MatchConfig  # noqa: E402

#: Where each option lands in MatchConfig (field path -> argparse dest).
FIELDS = {"models": "model", "pair_memory_gb": "pair_memory_gb", "out": "out", "weights": "weights", "probe": "probe", "k": "k", "layers": "layers",
          "site": "site", "chunk": "chunk", "batch_size": "batch_size", "actors": "actors"}


def run(args) -> int:
    from sweep.core.errors import SweepError
    from sweep.experiments.matching import photo_probe, probe_hash, rosetta_sets
    from sweep.pipelines.matching import check_matching, keyed, run_matching
    from sweep.store.outputs import open_root
    from sweep.store.results import Results

    if args.preset:
        from sweep.work.plan import PRESETS

        if args.model:
            raise SweepError("--preset and --model: give one (the preset names its models)")
        args.model = list(PRESETS[args.preset]()["models"])
    if not args.model:
        raise SweepError("--model: give two or more models (or --preset)")
    if args.model_arg:
        from sweep.models.names import with_args

        args.model = [with_args(m, tuple(args.model_arg)) for m in args.model]
    data, flags = gather(args, FIELDS)
    if not (args.images or args.val or args.train):
        data.setdefault("probe", "photos")  # the shipped photos and their crops
    config = parse(MatchConfig, data, flags=flags)
    check_options(args, {"limit": Count | None, "min_models": Count, "probe_images": Count | None,
                         "assume_tflops": Positive | None})
    if args.dry_run:
        return dry_run(config, args)
    for flag in ("probe_images", "gpu_type", "assume_tflops"):
        if getattr(args, flag) is not None:
            raise SweepError(f"--{flag.replace('_', '-')}: only --dry-run's estimate uses it; add --dry-run")
    if args.min_models < 2:
        raise SweepError(f"--min-models: at least 2; got {args.min_models}")
    if args.images or args.val or args.train:
        records = image_listing(args).records
    else:
        if args.limit is not None:
            raise SweepError("--limit: only with --images, --val or --train (the shipped photos are 150 images)")
        records = None
    models = check_matching(config)  # models, layers, weights, root: one line, before anything is written
    if records is None:  # the shipped photos and their crops, written into the root once
        fs, root = open_root(config.out, config.storage_options)
        records = photo_probe(fs, root)
    phash = probe_hash(records)
    models = keyed(config, models, records, phash)
    connect_ray(args.address)
    summary = run_matching(config, records, phash, models)
    print(f"{len(models)} models, {summary['pairs']} pair(s): matched {summary['matched']}, skipped "
          f"{summary['skipped']} (already there); {summary['rows']} row(s), {summary['mutual']} mutual; "
          f"probe {config.probe} ({len(records)} images, {phash}); in {args.out}/matches")
    sets = rosetta_sets(Results(config.out, config.storage_options).matches(mutual=True), args.min_models)
    count = sets["set"].nunique() if len(sets) else 0
    print(f"{count} Rosetta set(s) across at least {args.min_models} models")
    for set_id, members in list(sets.groupby("set", sort=True))[:args.show]:
        units = ", ".join(f"{r.model} L{r.layer}/{r.unit}" for r in members.itertuples(index=False))
        print(f"  set {set_id}: {members['models'].iloc[0]} models, weakest {members['score_min'].iloc[0]:.3f}: {units}")
    return 0


def dry_run(config, args) -> int:
    """The job's cost by its own arithmetic (sweep.experiments.matching.matching_cost): nothing built,
    read or written besides the models' descriptions."""
    from sweep.experiments.matching import matching_cost
    from sweep.pipelines.matching import check_matching
    from sweep.work.costs import check_gpu_type, describe, detect_gpu_type, estimate

    models = check_matching(config, check=False)
    images = args.probe_images or (len(image_listing(args).records) if args.images or args.val or args.train
                                   else 50_000)
    cost = matching_cost(models, images, config.k, config.chunk, config.pair_memory_gb * 1e9)
    gb = 1e9
    print(f"{cost['models']} models, {cost['units']:,} units, {cost['pairs']:,} model pairs, {images:,} probe images")
    print(f"scan: {cost['scan_tflop']:,.1f} TFLOP (one forward per image and model, to its last layer); "
          f"profiles {cost['profile_bytes'] / gb:,.1f} GB (float32)")
    print(f"pairs: {cost['pair_tflop']:,.1f} TFLOP (2 x images x units_a x units_b); {cost['pair_read_bytes'] / gb:,.1f} "
          f"GB read; largest task {cost['pair_peak_bytes'] / gb:,.2f} GB of arrays ({config.pair_memory_gb:g} GB budget)")
    print(f"matches: {cost['rows']:,} rows (k={config.k} per unit and other model, both ways)")
    gpu_type, how = (check_gpu_type(args.gpu_type), "--gpu-type") if args.gpu_type is not None else detect_gpu_type()
    total = cost["scan_tflop"] + cost["pair_tflop"]
    print(f"estimated cost: {total:,.1f} TFLOP; GPU-hours at the rate below, a lower bound unless --assume-tflops "
          "gives float32's: the rate was measured for the sweep's bf16 engine, the matching runs in float32")
    print("\n".join(describe(estimate(total, gpu_type, args.assume_tflops), how)))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="matching.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="+", help=f"two or more models: {MODEL_HELP}")
    p.add_argument("--preset", choices=("paper", "smoke", "demo"), help="the models of a sweep preset (paper: its 47)")
    add_model_arg(p, taps=False)
    p.add_argument("--out", required=True, help="results root (local path or s3://...)")
    add_image_source(p, required=False, what="; default: the shipped photos and their crops (150 images)")
    p.add_argument("--probe", help="a name for the probe images in the rows (default: probe; photos for the shipped ones)")
    p.add_argument("--weights", nargs="+", help="pretrained | random | PATH: one for every model, or one per model "
                   "(default pretrained)")
    p.add_argument("--k", type=int, help="matches kept per unit and other model (default 5)")
    p.add_argument("--layers", nargs="+", help="block indices or names read in every model (default: all)")
    p.add_argument("--site", help="mlp | q | k | v | attn_out | channel | output (default: each model's)")
    p.add_argument("--chunk", type=int, help="images per profile shard (default 1024)")
    p.add_argument("--pair-memory-gb", type=float, help="a pair task's correlation arrays at most (default 2)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--actors", type=int, help="scanner actors per model (default 1)")
    p.add_argument("--limit", type=int, help="at most this many probe images")
    p.add_argument("--min-models", type=int, default=3, help="Rosetta sets span at least this many models (default 3)")
    p.add_argument("--show", type=int, default=10, help="Rosetta sets printed (default 10)")
    p.add_argument("--address", type=address_arg, help=ADDRESS_HELP)
    p.add_argument("--dry-run", action="store_true", help="print what the job would compute, read and write, and its "
                   "estimated GPU-hours; nothing is run")
    p.add_argument("--probe-images", type=int, help="--dry-run: probe images assumed (default: the listing's, else 50,000)")
    p.add_argument("--gpu-type", help="--dry-run: GPU type for the GPU-hours (default: this machine's, else h200)")
    p.add_argument("--assume-tflops", type=float, help="--dry-run: sustained TFLOP/s instead of the measured rate")
    args = p.parse_args(argv)
    setup_logging("INFO")
    return guarded("matching.py", run, args)


if __name__ == "__main__":
    raise SystemExit(main())
