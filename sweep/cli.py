"""The `sweep` command line: a thin argparse layer over the library; the only place argv is read."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys

from sweep.errors import SweepError

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
        "default_site": anatomy.default_site,
        "blocks": [{"index": b.index, "name": b.name, "prefix_tokens": b.prefix_tokens,
                    "layout": b.layout, "tokens": b.tokens, "widths": b.widths} for b in anatomy.blocks],
    }


def cmd_models(args) -> int:
    from sweep.models.anatomy import describe
    from sweep.models.zoo import REGISTRY

    records = [anatomy_record(describe(e)) for e in REGISTRY.entries(args.family)]
    if args.format == "json":
        print(json.dumps(records, indent=2))
        return 0
    header = ("model", "family", "input", "blocks", "prefix", "features per block", "sites", "paper name")
    rows = []
    for r in records:
        site = r["default_site"]
        prefixes = sorted({b["prefix_tokens"] for b in r["blocks"]})
        rows.append((r["key"], r["family"], str(r["input_size"]), str(len(r["blocks"])),
                     "/".join(map(str, prefixes)),
                     _widths_summary([b["widths"][site] for b in r["blocks"]]),
                     ",".join(r["blocks"][0]["widths"]), r["paper_name"]))
    widths = [max(len(x[i]) for x in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    print(f"{len(rows)} models")
    return 0


def cmd_visualize(args) -> int:
    from sweep.recipe import Recipe
    from sweep.visualize import VisualizeJob, run_visualize

    overrides = {"steps": args.steps, "tv": args.tv, "lr": args.lr, "copies": args.copies,
                 "jitter": args.jitter, "image_size": args.image_size}
    recipe = Recipe(**{k: v for k, v in overrides.items() if v is not None})
    job = VisualizeJob(model=args.model, layer=args.layer, features=tuple(args.feature), site=args.site,
                       weights=args.weights, base_seed=args.seed, device=args.device, recipe=recipe,
                       batch_size=args.batch_size, features_per_pass=args.features_per_pass)
    rows = run_visualize(job, args.out, progress=not args.quiet)
    for r in rows:
        print(f"{r['model']}  layer {r['layer']} ({r['layer_name']})  {r['site']} {r['feature']:>5}  "
              f"act {r['act_init']:+.4f} -> {r['act_final']:+.4f}  {args.out.rstrip('/')}/{r['image_path']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from sweep.recipe import Recipe

    defaults = Recipe()
    parser = argparse.ArgumentParser(prog="sweep", description="See what vision transformers learn: "
                                     "feature visualization of the paper's model zoo.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the model zoo with layers and features per layer")
    p.add_argument("--family", help="only this family (deit, coat, convit, pit, swin, twins, vit, clip, "
                   "clip_resnet, cnn)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("visualize", help="optimize images that make features fire (the paper's recipe)")
    p.add_argument("--model", required=True, help="registry key or alias (see `sweep models`)")
    p.add_argument("--layer", required=True, help="block index (negative counts from the end) or name")
    p.add_argument("--feature", required=True, type=int, nargs="+", help="feature indices")
    p.add_argument("--site", help="mlp | q | k | v | attn_out | channel: where to read: MLP hidden units (default "
                   "for transformers), attention q/k/v/output, or channel (CNN blocks, the default there)")
    p.add_argument("--steps", type=int, help=f"cosine schedule length; runs steps+1 iterations "
                   f"(default {defaults.steps})")
    p.add_argument("--tv", type=float, help=f"TV multiplier v; coefficient {defaults.tv_base}*v "
                   f"(default {defaults.tv})")
    p.add_argument("--lr", type=float, help="Adam learning rate (default: 0.1 for ViTs, 1.0 for CLIP)")
    p.add_argument("--copies", type=int, help=f"augmented copies per feature (default {defaults.copies})")
    p.add_argument("--jitter", type=int, help=f"max circular shift in pixels (default {defaults.jitter})")
    p.add_argument("--image-size", type=int, help="optimized image side (default: model input size)")
    p.add_argument("--seed", type=int, default=0,
                   help="base seed; feature f uses seed+f (default 0: the paper's seed = feature)")
    p.add_argument("--weights", default="pretrained",
                   help="pretrained | random | PATH to a safetensors file or torch state dict")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the accelerator if any, else cpu)")
    p.add_argument("--batch-size", type=int, default=16, help="features optimized together (default 16)")
    p.add_argument("--features-per-pass", type=int,
                   help="features per forward/backward within a batch; same results, different speed "
                   "(default: 2 on CPU, the whole batch on an accelerator)")
    p.add_argument("--out", required=True, help="results root: a directory or fsspec URL")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_visualize)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except SweepError as exc:
        print(f"sweep: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
