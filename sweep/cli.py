"""The `sweep` command line: a thin argparse layer over the library; the only place argv is read."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys

from sweep.core.errors import SweepError
from sweep.core.redact import add_redacting_filter, redact_text
from sweep.pipelines.cluster import ADDRESS_HELP, address_arg, connect_ray  # noqa: F401 (jobs/*.py import them)

log = logging.getLogger("sweep")


def _widths_summary(widths: list[int]) -> str:
    """[512, 512, 1024] -> '2x512 1x1024'."""
    return " ".join(f"{len(list(g))}x{w}" for w, g in itertools.groupby(widths))


def anatomy_record(anatomy) -> dict:
    e, p = anatomy.entry, anatomy.preprocess
    return {
        "key": e.key, "family": e.family, "source": e.source, "arch": e.arch, "tag": e.tag,
        "aliases": list(e.aliases), "paper_name": e.paper_name, "paper_38": e.paper_38, "note": e.note,
        "lr": e.lr, "input_size": p.input_size, "mean": list(p.mean), "std": list(p.std),
        "interpolation": p.interpolation, "crop_pct": p.crop_pct, "preprocess_origin": p.origin,
        "taps": list(e.taps),
        "default_site": anatomy.default_site,
        "blocks": [{"index": b.index, "name": b.name, "prefix_tokens": b.prefix_tokens,
                    "layout": b.layout, "tokens": b.tokens, "widths": b.widths} for b in anatomy.blocks],
    }


def cmd_models(args) -> int:
    from sweep.models.anatomy import anatomy_of
    from sweep.models.zoo import REGISTRY

    if args.model:  # any model, zoo or not: what its inferred anatomy offers
        if args.family:
            raise SweepError("--family lists the zoo; give it or --model, not both")
        records = [anatomy_record(anatomy_of(model_name(args, m))) for m in args.model]
    else:
        records = [anatomy_record(anatomy_of(e.key)) for e in REGISTRY.entries(args.family)]
    if args.format == "json":
        print(json.dumps(records, indent=2))
        return 0
    header = ("model", "source", "family", "input", "blocks", "prefix", "features per block", "sites", "paper name")
    rows = []
    for r in records:
        site = r["default_site"]
        prefixes = sorted({b["prefix_tokens"] for b in r["blocks"]})
        rows.append((r["key"], r["source"], r["family"], str(r["input_size"]), str(len(r["blocks"])),
                     "/".join(map(str, prefixes)),
                     _widths_summary([b["widths"][site] for b in r["blocks"]]),
                     ",".join(r["blocks"][0]["widths"]), r["paper_name"]))
    widths = [max(len(x[i]) for x in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    print(f"{len(rows)} models")
    return 0


def cmd_visualize(args) -> int:
    from sweep.core.validation import Text, parse
    from sweep.work.visualize import VisualizeJob, run_visualize

    data, flags = gather(args, {**VISUALIZE_FIELDS, **RECIPE_FIELDS, **ENGINE_FIELDS})
    job = parse(VisualizeJob, data, flags=flags)
    check_options(args, {"out": Text})
    rows = run_visualize(job, args.out, progress=not args.quiet, force=args.force)
    for r in rows:
        print(f"{r['model']}  layer {r['layer']} ({r['layer_name']})  {r['site']} {r['feature']:>5}  "
              f"act {r['act_init']:+.4f} -> {r['act_final']:+.4f}  {args.out.rstrip('/')}/{r['image_path']}")
    failed = sorted(set(job.features) - {r["feature"] for r in rows})
    if failed:  # non-finite results are not written; the log above says why for each
        print(f"sweep visualize: {len(failed)} feature(s) failed: {', '.join(map(str, failed))}", file=sys.stderr)
    return 1 if failed else 0


#: Where each option of `sweep visualize` lands in VisualizeJob (field path -> argparse dest).
VISUALIZE_FIELDS = {"model": "model", "model_args": "model_arg", "taps": "tap", "layer": "layer", "features": "feature",
                    "site": "site", "weights": "weights",
                    "base_seed": "seed", "device": "device", "batch_size": "batch_size"}
#: The method's options (parametrization and objective), the same in visualize, run and tune.
METHOD_FIELDS = {"recipe.param": "param", "recipe.objective": "objective", "recipe.position": "position",
                 "recipe.direction": "direction", "recipe.negative": "negative", "recipe.diversity": "diversity",
                 "recipe.diversity_weight": "diversity_weight", "recipe.accentuate": "accentuate",
                 "recipe.accentuate_weight": "accentuate_weight", "recipe.spectrum": "spectrum"}
RECIPE_FIELDS = {"recipe.steps": "steps", "recipe.tv": "tv", "recipe.lr": "lr", "recipe.copies": "copies",
                 "recipe.jitter": "jitter", "recipe.image_size": "image_size", "recipe.defaults": "recipe",
                 **METHOD_FIELDS}
ENGINE_FIELDS = {"engine.precision": "precision", "engine.compile": "compile",
                 "engine.compile_mode": "compile_mode", "engine.adam": "adam",
                 "engine.features_per_pass": "features_per_pass"}


def check_options(args, kinds: dict) -> None:
    """Options that feed no config dataclass, checked against the same types (sweep.core.validation)."""
    from sweep.core.validation import parse

    for dest, kind in kinds.items():
        parse(kind, getattr(args, dest), flags={"": "--" + dest.replace("_", "-")})


def gather(args, fields: dict[str, str]) -> tuple[dict, dict[str, str]]:
    """The options the user set, as nested data for a config's schema (`recipe.steps` -> {"recipe":
    {"steps": ...}}), and the flag behind each field path, so a bad value is reported as typed."""
    data: dict = {}
    flags: dict[str, str] = {}
    for path, dest in fields.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        flags[path] = "--" + dest.replace("_", "-")
    return data, flags


def add_recipe_switch(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", choices=["tuned", "paper", "best"],
                   help="defaults for lr and tv not given: tuned (the family's tuned values where stored, "
                   "else the paper's; the default), paper (exactly the paper's) or best (the family's best "
                   "measured method at each depth: parametrization, site, lr and tv; sweep/method/by_depth.py)")
    add_method_arguments(p)


def add_method_arguments(p: argparse.ArgumentParser) -> None:
    """The method: what is optimized and what it is optimized for (sweep/method/param.py, objective.py)."""
    p.add_argument("--param", choices=["pixel", "fourier", "maco"],
                   help="what is optimized: pixel (the paper's raw pixels, the default), fourier (a 1/f-scaled "
                   "spectrum with decorrelated colour, after Lucid) or maco (only the phase of natural images' "
                   "mean magnitude spectrum, after MACO; needs scikit-image's photos)")
    p.add_argument("--spectrum", metavar="FOLDER", help="maco: the folder of natural images whose mean magnitude "
                   "spectrum the images keep (any fsspec URL; default: the 15 photos scikit-image ships)")
    p.add_argument("--objective", choices=["unit", "neuron", "direction"],
                   help="what is raised: unit (the paper's: the unit's mean over patch tokens, the default), "
                   "neuron (the unit at one --position) or direction (feature i is row i of --direction)")
    p.add_argument("--position", type=int, help="neuron: the patch token (or grid cell) index, row-major "
                   "without prefix tokens (default: the centre patch)")
    p.add_argument("--direction", help="direction: A-B (unit A minus unit B; feature 0) or a .npy file (path or "
                   "URL) of (width,) or (N, width) floats, one direction per feature; pinned to its bytes")
    p.add_argument("--negative", action="store_const", const=True,
                   help="minimize the objective instead: the images that turn it most negative")
    p.add_argument("--diversity", type=int, metavar="K", help="K images per feature, optimized together with a "
                   "penalty on the similarity of their Gram matrices (Olah et al. 2017; default 1: one image)")
    p.add_argument("--diversity-weight", type=float, help="the penalty's weight, in units of the feature's "
                   "activation (default 0.3)")
    p.add_argument("--accentuate", metavar="IMAGE", help="start every image from this photo (a file or URL, or "
                   "photo:NAME of the photos scikit-image ships) and keep the site's features near the photo's "
                   "(feature accentuation, Hamblin et al. 2024); --param pixel only")
    p.add_argument("--accentuate-weight", type=float, help="the weight of staying near the photo, in units of the "
                   "feature's activation (default 1)")


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="network arithmetic: bf16 autocast or fp32 (default auto: bf16 where the device has it in "
                   "hardware: CUDA GPUs from Ampere on, CPUs with AVX512-BF16 or AMX; else fp32)")
    p.add_argument("--compile", choices=["auto", "on", "off", "step"],
                   help="on: torch.compile the blocks before the hooked one; step: compile the whole step around "
                   "the network cut at the tap (falls back to on where a site cannot be cut); default auto: on "
                   "for CUDA GPUs, off elsewhere")
    p.add_argument("--compile-mode", choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"],
                   help="torch.compile mode (reduce-overhead: CUDA graphs for the loop; default: default)")
    p.add_argument("--adam", choices=["auto", "foreach", "fused"],
                   help="Adam's kernels: foreach or one fused kernel per update (default auto: foreach)")
    p.add_argument("--features-per-pass", type=int,
                   help="features per forward/backward within a batch; same results, different speed "
                   "(default: 2 on CPU, as many as fit in memory on an accelerator)")


#: Where each option of `sweep run` lands in SweepConfig (field path -> argparse dest).
RUN_FIELDS = {"out": "out", "models": "model", "model_args": "model_arg", "taps": "tap", "layers": "layers",
              "site": "site",
              "weights": "weights",
              "features_per_batch": "features_per_batch", "resources.workers": "workers",
              "resources.max_workers": "max_workers", "resources.start_timeout_s": "start_timeout",
              "resources.allow_cpu_fallback": "allow_cpu_fallback",
              "recipe.steps": "steps", "recipe.defaults": "recipe", **METHOD_FIELDS, **ENGINE_FIELDS}
#: The feature-selection options, each with the FeatureSelection it asks for.
FEATURE_OPTIONS = {"all_features": ("all", None), "feature_list": ("list", "indices"),
                   "sample": ("sample", "count"), "features": ("first", "count")}


def sweep_config_from_args(args):
    """The sweep's config from a --config file and/or flags (flags win), through SweepConfig's schema."""
    from sweep.work.plan import SweepConfig

    data, flags = gather(args, RUN_FIELDS)
    for dest, (mode, key) in FEATURE_OPTIONS.items():
        value = getattr(args, dest)
        if value is None or value is False:
            continue
        data["features"] = {"mode": mode, **({key: value} if key else {})}
        if key:
            flags[f"features.{key}"] = "--" + dest.replace("_", "-")
        if mode == "sample":
            data["features"]["seed"] = args.sample_seed
            flags["features.seed"] = "--sample-seed"
    if args.cpu:
        data.setdefault("resources", {})["num_gpus"] = 0
    if args.config:
        return SweepConfig.from_yaml(args.config, flags, **data, preset=args.preset if args.preset else None)
    if not args.preset and not args.model:
        raise SweepError("give --config, --preset or --model")
    if args.out is None:
        raise SweepError("--out: give the results root, or a --config that has 'out'")
    return SweepConfig.from_dict({**data, "preset": args.preset}, flags)


def cmd_run(args) -> int:
    from sweep.core.validation import Count, Positive
    from sweep.models.anatomy import anatomy_of
    from sweep.pipelines.feature_sweep import run_sweep
    from sweep.work.costs import check_gpu_type, describe, detect_gpu_type, estimate
    from sweep.work.plan import check_plan, expand, plan_summary

    config = sweep_config_from_args(args)
    check_options(args, {"assume_tflops": Positive | None, "price_per_hour": Positive | None,
                         "max_batches": Count | None})
    estimate_only = [f for f in ("gpu_type", "assume_tflops", "price_per_hour") if getattr(args, f) is not None]
    if estimate_only and not args.dry_run:
        flag = "--" + estimate_only[0].replace("_", "-")
        raise SweepError(f"{flag}: only --dry-run's estimate uses it; add --dry-run, or drop {flag}")
    if args.dry_run:
        gpu_type, how = (check_gpu_type(args.gpu_type), "--gpu-type") if args.gpu_type is not None else detect_gpu_type()
        tasks = expand(config)
        rows = plan_summary(config, tasks)
        total = sum(r["tflop"] for r in rows)
        print(f"{'model':45s} {'layers':>6} {'batches':>7} {'features':>8} {'est. TFLOP':>11}")
        for r in rows:
            print(f"{r['model']:45s} {r['layers']:>6} {r['batches']:>7} {r['features']:>8} {r['tflop']:>11.1f}")
        print(f"{'total':45s} {'':>6} {len(tasks):>7} {sum(r['features'] for r in rows):>8} {total:>11.1f}")
        print(f"estimated cost: {total:.1f} TFLOP (forward to the hooked block + input gradient = 2x forward, "
              f"{config.recipe.copies} copies x {config.recipe.iterations} iterations per feature)")
        by_family: dict[str, float] = {}
        for r in rows:
            family = anatomy_of(r["model"]).entry.family
            by_family[family] = by_family.get(family, 0.0) + r["tflop"]
        print("\n".join(describe(estimate(by_family, gpu_type, args.assume_tflops, args.price_per_hour), how)))
        return 0
    check_plan(config)  # a bad model, layer, feature or weights file: one line, before Ray starts
    connect_ray(args.address)
    report = run_sweep(config, force=args.force, max_batches=args.max_batches, progress=not args.quiet,
                       retry_failed=args.retry_failed, shared_filesystem=args.shared_filesystem)
    print(report.table())
    kept = f" (+{report.failed_before} failed in earlier runs, kept)" if report.failed_before else ""
    print(f"run {report.run_id}: {report.done} done, {report.failed} failed{kept}, {report.skipped} already present, "
          f"{report.worker_failures} worker failure(s), {report.retries} retried; results in {config.out}")
    return 0 if report.failed + report.failed_before == 0 else 1


def cmd_tune(args) -> int:
    from sweep.core.validation import parse
    from sweep.pipelines.tune import TuneJob, parse_grid, preflight, promote_best, run_tune

    data, flags = gather(args, {**TUNE_FIELDS, **ENGINE_FIELDS})
    grid = parse_grid(args.grid or [])
    data.update({"lrs" if k == "lr" else "tvs": v for k, v in grid.items()})
    flags.update(lrs="--grid lr", tvs="--grid tv")
    job = parse(TuneJob, data, flags=flags)
    if args.promote and job.recipe.method != "pixel unit":
        raise SweepError(f"--promote: the family defaults are for the paper's method (pixel unit); these trials "
                         f"would optimize {job.recipe.method} (drop --promote, or the --param/--objective flags)")
    specs = job.specs()  # validates model, layers, site before Ray starts
    preflight(job)  # weights, reference images, a writable root: before Ray starts too
    print(f"{specs[0].model}: {len(specs)} trial(s) of {len(specs[0].units)} unit(s) "
          f"({', '.join(f'L{l}:{f}' for l, f in specs[0].units)}), {job.grid_label()}")
    connect_ray(args.address)
    report = run_tune(job, verbose=0 if args.quiet else 1)
    cols = ["lr", "tv", "act_final", "relative_activation", "robustness", "saturated_fraction",
            "spectrum_slope", "combined"]
    print(report.trials[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"{report.ran} trial(s) run, {report.skipped} already present, {len(report.errors)} failed; "
          f"rows under {args.out.rstrip('/')}/tuning/")
    for err in report.errors:
        print(f"failed: {err}", file=sys.stderr)
    if args.promote:
        if report.errors:
            raise SweepError("not promoting: some trials failed; run the same command again to finish them")
        best = promote_best(job, report.trials, args.registry_file)
        print(f"promoted {best['family']} defaults: lr {best['lr']:g}, tv {best['tv']:g} "
              f"(combined {best['combined']:.4g}) -> {best['path']}")
    return 0 if not report.errors else 1


#: Where each option of `sweep tune` lands in TuneJob (field path -> argparse dest).
TUNE_FIELDS = {"model": "model", "model_args": "model_arg", "taps": "tap", "out": "out", "search": "search", "search_seed": "search_seed",
               "layers": "layers", "features": "features", "unit_seed": "unit_seed", "site": "site",
               "weights": "weights", "base_seed": "seed", "reference": "reference",
               "reference_count": "reference_count", "robustness_draws": "robustness_draws",
               "num_gpus": "gpus_per_trial", "num_cpus": "cpus_per_trial", "recipe.steps": "steps",
               "recipe.copies": "copies", **METHOD_FIELDS}


def cmd_atlas(args) -> int:
    from sweep.core.validation import Count, Text
    from sweep.views.atlas import build_atlas

    check_options(args, {"results": Text, "out": Text, "page_size": Count, "workers": Count | None})
    stats = build_atlas(args.results, args.out, page_size=args.page_size, workers=args.workers,
                        progress=not args.quiet)
    print(f"atlas in {args.out.rstrip('/')}/index.html: {len(stats['written'])} file(s) written, "
          f"{len(stats['deleted'])} deleted, {stats['unchanged']} unchanged; {len(stats['models_read'])} model(s) "
          "read from the results root")
    return 0


MODEL_HELP = ("a zoo key or alias (`sweep models`), any timm name (arch, arch.tag, hf-hub:org/repo), "
              "open_clip:ARCH/TAG, torchvision:NAME or module:package.module:factory (imports and runs that "
              "code: name only modules you trust); constructor arguments as NAME[key=value,...]")


def add_image_source(p: argparse.ArgumentParser, required: bool = True, what: str = "") -> None:
    """--images, --val (+ --val-solution) or --train (+ --boxes): the natural images a job scans."""
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument("--images", help=f"any folder of images (recursive){what}")
    src.add_argument("--val", help="ILSVRC2012 val folder (with --val-solution)")
    src.add_argument("--train", help="ILSVRC2012 train folder (with --boxes)")
    p.add_argument("--val-solution")
    p.add_argument("--boxes")


def image_listing(args):
    """The Listing of the images `add_image_source` named, at most --limit of them."""
    from sweep.data.imagenet import image_folder
    from sweep.pipelines.ablations import DataSpec

    if args.images:
        return image_folder(args.images, limit=args.limit)
    if args.train:
        return DataSpec("train_boxes", args.train, boxes=args.boxes, limit=args.limit).listing("frequency")
    return DataSpec("val_solution", args.val, solution=args.val_solution, limit=args.limit).listing("frequency")


def add_model_arg(p: argparse.ArgumentParser, taps: bool = True) -> None:
    """--model-arg and --tap: what, besides its name, says which network is built and where it is read."""
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="constructor argument for the model(s), repeatable (e.g. img_size=224); becomes part of "
                   "the model's name: vit_small_patch14_dinov2[img_size=224]")
    if taps:
        p.add_argument("--tap", action="append", metavar="MODULE",
                       help="read the output of this module (a path such as blocks.3.mlp.fc1), repeatable; the "
                       "taps replace the inferred blocks as layers 0, 1, ... and become part of the model's name: "
                       "NAME[tap=blocks.3.mlp.fc1]")


def model_name(args, model: str | None = None) -> str:
    """The model's full name from --model, --model-arg and --tap, each bad value named by its flag."""
    from sweep.core.validation import Text
    from sweep.models.names import ModelArg, TapPath, with_args

    if not hasattr(args, "tap"):
        args.tap = None

    check_options(args, {"model_arg": list[ModelArg] | None, "tap": list[TapPath] | None})
    if model is None:
        check_options(args, {"model": Text})
    return with_args(model or args.model, args.model_arg or [], args.tap or [])


def build_parser() -> argparse.ArgumentParser:
    from sweep.method.recipe import Recipe

    defaults = Recipe()
    parser = argparse.ArgumentParser(prog="sweep", description="See what vision transformers learn: "
                                     "feature visualization of the paper's model zoo.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the model zoo with layers and features per layer")
    p.add_argument("--family", help="only this family (deit, coat, convit, pit, swin, twins, vit, vit_ssl, clip, "
                   "clip_resnet, cnn)")
    p.add_argument("--model", nargs="+", help=f"describe these models instead (zoo or not): {MODEL_HELP}")
    add_model_arg(p)
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("visualize", help="optimize images that make features fire (the paper's recipe)")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    add_model_arg(p)
    p.add_argument("--layer", required=True, help="block index (negative counts from the end) or name")
    p.add_argument("--feature", required=True, type=int, nargs="+", help="feature indices")
    p.add_argument("--site", help="mlp | mlp_pre | q | k | v | attn_out | channel | output: where to read: MLP "
                   "hidden units (default for transformers; mlp_pre: the same units before the GELU), attention "
                   "q/k/v/output, channel (CNN blocks, the default there) "
                   "or output (a --tap module)")
    p.add_argument("--steps", type=int, help=f"cosine schedule length; runs steps+1 iterations "
                   f"(default {defaults.steps})")
    p.add_argument("--tv", type=float, help=f"TV multiplier v; coefficient {defaults.tv_base}*v "
                   "(default: the family's, see --recipe; the paper's is 1)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default: the family's, see --recipe; the paper's "
                   "is 0.1 for ViTs, 1.0 for CLIP)")
    p.add_argument("--copies", type=int, help=f"augmented copies per feature (default {defaults.copies})")
    p.add_argument("--jitter", type=int, help=f"max circular shift in pixels (default {defaults.jitter})")
    p.add_argument("--image-size", type=int, help="optimized image side (default: model input size)")
    add_recipe_switch(p)
    p.add_argument("--seed", type=int, default=0,
                   help="base seed; feature f uses seed+f (default 0: the paper's seed = feature)")
    p.add_argument("--weights", default="pretrained",
                   help="pretrained | random | PATH to a safetensors file or torch state dict")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the accelerator if any, else cpu)")
    p.add_argument("--batch-size", type=int, default=16, help="features optimized together (default 16)")
    add_engine_arguments(p)
    p.add_argument("--out", required=True, help="results root: a directory or fsspec URL")
    p.add_argument("--force", action="store_true", help="replace these features where the root holds them made "
                   "with another recipe, weights or seed (default: refuse)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_visualize)

    p = sub.add_parser("tune", help="score the paper's lr x TV grid (or a random search) for a model on Ray Tune",
                       description="Each trial renders the same seeded sample of (layer, feature) units with one "
                       "(lr, tv) and scores the images without a human (sweep/method/scores.py). Trials already in "
                       "the results root are skipped, so re-running resumes.")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    add_model_arg(p)
    p.add_argument("--out", required=True, help="results root: a directory or fsspec URL; rows under tuning/")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--grid", nargs="+", metavar="NAME=V1,V2",
                   help="lr=... and/or tv=... values (default: the paper's lr 0.01,0.03,0.1,0.3,1 x "
                   "tv 0.01,0.1,1,10,100)")
    g.add_argument("--search", type=int, metavar="N",
                   help="N seeded log-uniform points, lr in [0.01, 1], tv in [0.01, 100], instead of the grid")
    p.add_argument("--search-seed", type=int, default=0)
    p.add_argument("--layers", nargs="+", help="block indices or names (default: 4 evenly spaced, ending at the last)")
    p.add_argument("--features", type=int, default=4, help="units sampled per layer (default 4)")
    p.add_argument("--unit-seed", type=int, default=0, help="seed of the unit sample (default 0)")
    p.add_argument("--site", help="mlp | mlp_pre | q | k | v | attn_out | channel | output (default: the model's)")
    p.add_argument("--weights", default="pretrained", help="pretrained | random | PATH")
    p.add_argument("--seed", type=int, default=0, help="base seed; feature f uses seed+f (default 0)")
    add_method_arguments(p)
    p.add_argument("--steps", type=int, help=f"recipe steps per trial (default {defaults.steps})")
    p.add_argument("--copies", type=int, help=f"augmented copies (default {defaults.copies})")
    p.add_argument("--reference", help="folder of natural images: activations are scored relative to the unit's "
                   "highest activation on them (default: seeded uniform and 1/f noise images)")
    p.add_argument("--reference-count", type=int, default=32, help="reference images used (default 32)")
    p.add_argument("--robustness-draws", type=int, default=4,
                   help="augmentation draws (x copies) for the robustness score (default 4)")
    p.add_argument("--gpus-per-trial", type=float, default=1.0, help="GPUs per trial (default 1; CPU without GPUs)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (default 1)")
    add_engine_arguments(p)
    p.add_argument("--promote", action="store_true",
                   help="store the best trial's lr and tv as the model family's defaults, with provenance")
    p.add_argument("--registry-file", help="where --promote writes (default: sweep/method/tuned_recipes.json)")
    p.add_argument("--address", type=address_arg, help=ADDRESS_HELP)
    p.add_argument("--quiet", action="store_true", help="no Tune progress output")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("atlas", help="build (or update) a static website of a results root",
                       description="Builds the site once, then updates only what changed: a model whose files in "
                       "the results root are unchanged is not read again.")
    p.add_argument("--results", required=True, help="results root (path or fsspec URL)")
    p.add_argument("--out", required=True, help="where the site goes (index.html at its top): a folder or any "
                   "fsspec URL, e.g. s3://BUCKET/site (content types set, so a bucket website serves it; "
                   "credentials and endpoint from the environment)")
    p.add_argument("--page-size", type=int, default=256, help="features per layer page (default 256)")
    p.add_argument("--workers", type=int, help="processes rendering layers (default: one per CPU when there are "
                   "thousands of features to render, else 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_atlas)

    p = sub.add_parser("run", help="run a sweep of (model, layer, feature) visualizations on Ray")
    add_run_arguments(p)
    p.set_defaults(func=cmd_run)
    return parser


def add_run_arguments(p: argparse.ArgumentParser, preset: str | None = None) -> None:
    """Arguments of a sweep; shared by `sweep run` and jobs/all_models.py."""
    p.add_argument("--config", help="a YAML sweep config (its keys: see sweep.work.plan.SweepConfig); one that names "
                   "module: models imports and runs their code, like a script")
    p.add_argument("--preset", default=preset, help="starting point: paper (38 variants + original ViTs + "
                   "CLIP ViTs, first 256 features per layer), smoke (two micro models, a minute on CPU) or demo (smoke plus "
                   "4 units of a trained ViT-S/14 whose weights a package ships, a few minutes on CPU)")
    p.add_argument("--out", help="results root: a directory or fsspec URL (file://, s3://...)")
    p.add_argument("--shared-filesystem", action="store_true",
                   help="the local --out path is the same shared mount on every node; without it a node-local "
                   "root is refused on a multi-node cluster, under Ray Jobs or `ray submit`")
    p.add_argument("--model", nargs="+", help=f"models instead of the preset's: {MODEL_HELP}")
    add_model_arg(p)
    p.add_argument("--layers", nargs="+", help="block indices or names (default: every block)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--features", type=int, help="the first N features of each layer")
    g.add_argument("--all-features", action="store_true", help="every feature of each layer")
    g.add_argument("--feature-list", type=int, nargs="+", help="these feature indices in every layer")
    g.add_argument("--sample", type=int, help="a seeded random sample of N features per layer")
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--site", help="mlp | mlp_pre | q | k | v | attn_out | channel | output (default: the model's)")
    p.add_argument("--weights", help="pretrained | random | PATH")
    p.add_argument("--steps", type=int, help="recipe steps (default 400)")
    add_recipe_switch(p)
    p.add_argument("--features-per-batch", type=int, help="features optimized together (default 16)")
    add_engine_arguments(p)
    p.add_argument("--workers", type=int, help="a fixed number of workers (default: elastic, one per GPU as GPU "
                   "nodes join, the autoscaler asked for what the plan can use; one per CPU slot without GPUs)")
    p.add_argument("--max-workers", type=int, help="cap on elastic workers, and so on the GPUs asked of the "
                   "autoscaler (default: one per batch left, at most 256)")
    p.add_argument("--start-timeout", type=float, help="seconds the sweep waits with no worker running (GPU "
                   "nodes booting, a preempted fleet) before it stops; finished batches are kept (default 900)")
    p.add_argument("--cpu", action="store_true", help="CPU workers even where GPUs exist")
    p.add_argument("--allow-cpu-fallback", action="store_const", const=True,
                   help="a worker given a GPU that CUDA cannot use runs on CPU with a warning (default: the "
                   "sweep stops at start with the driver and CUDA versions)")
    p.add_argument("--address", type=address_arg, help=ADDRESS_HELP)
    p.add_argument("--dry-run", action="store_true", help="print the plan per model and its estimated cost")
    p.add_argument("--gpu-type", help="GPU type for --dry-run's GPU-hours and dollars: h200, h100, a100, l4, a10g "
                   "(default: this machine's GPU, else h200, the only measured type)")
    p.add_argument("--assume-tflops", type=float,
                   help="sustained TFLOP/s for --dry-run's GPU-hours (default: the GPU type's measured rate, "
                   "sweep/work/gpu_throughput.json, from benchmarks/results/)")
    p.add_argument("--price-per-hour", type=float,
                   help="USD per GPU-hour for --dry-run's dollars (default: the GPU type's AWS on-demand list price)")
    p.add_argument("--force", action="store_true", help="recompute results that already exist")
    p.add_argument("--max-batches", type=int, help="stop after N batches (re-run to resume)")
    p.add_argument("--no-retry-failed", dest="retry_failed", action="store_false",
                   help="keep results that failed in earlier runs (status failed) instead of retrying them")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _not_library_chatter(record: logging.LogRecord) -> bool:
    """open_clip logs its model-building steps at INFO on the root logger; keep them out."""
    return record.levelno > logging.INFO or "open_clip" not in record.pathname


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_not_library_chatter)
        add_redacting_filter(handler)  # credentials from the environment or in URLs never reach a log


def guarded(prog: str, func, args) -> int:
    """Run a command: user errors become one line and exit 2, Ctrl-C exits 130 with a resume hint."""
    try:
        return func(args)
    except SweepError as exc:
        print(f"{prog}: error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished batches are saved, run the same command again to resume",
              file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    return guarded("sweep", args.func, args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
