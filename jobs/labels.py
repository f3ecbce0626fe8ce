"""Concept labels for every unit of a model: one Ray Data pass over probe images, CLIP as the judge.

    python jobs/labels.py --model B_16_imagenet1k --val /data/imagenet/val \
        --val-solution /data/LOC_val_solution.csv --split val --out results/atlas
    python jobs/labels.py --model dev/vit-micro --weights random --judge-weights random \
        --images some/folder --split folder --vocabulary my-concepts.txt --out r

Each unit gets its --k best concepts of the vocabulary, scored by the correlation of its activations
with CLIP's image-concept similarity across the probe images (sweep/experiments/labels.py says why).
Writes <out>/labels/model=<m>/layer=<l>/part-<key>.parquet; a layer labelled before with the same
vocabulary, prompts and judge is skipped, so a re-run resumes.
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
from sweep.core.validation import Count, parse  # noqa: E402
from sweep.data.vocabulary import SHIPPED, load_vocabulary  # noqa: E402
from sweep.experiments.judge import TEMPLATE_SETS  # noqa: E402
from sweep.experiments.labels import LabelsConfig  # noqa: E402

#: Where each option lands in LabelsConfig (field path -> argparse dest).
FIELDS = {"model": "model", "model_args": "model_arg", "taps": "tap", "out": "out", "split": "split", "k": "k",
          "layers": "layers", "site": "site", "weights": "weights", "judge": "judge", "judge_weights": "judge_weights",
          "vocabulary": "vocabulary", "templates": "templates", "batch_size": "batch_size", "actors": "actors"}


def run(args) -> int:
    from sweep.core.errors import SweepError
    from sweep.pipelines.labels import check_labels, label_units, label_visualizations

    data, flags = gather(args, FIELDS)
    config = parse(LabelsConfig, data, flags=flags)
    check_options(args, {"limit": Count | None})
    checked = check_labels(config)  # model, layers, weights, vocabulary, judge, --k, root: one line, before Ray
    profile = args.method in ("profile", "both")
    if profile and not (args.images or args.val or args.train):
        raise SweepError(f"--method {args.method}: give the probe images (--images, --val or --train); "
                         "--method visualization needs none")
    listing = image_listing(args) if profile else None
    if args.method == "visualization":
        check_visualized(config)
    connect_ray(args.address)
    memo: dict = {}  # the concepts' text embeddings, made once for both methods
    runs = ([("units", label_units, (config, listing, memo, checked))] if profile else []) + (
        [("visualizations", label_visualizations, (config, memo, checked))]
        if args.method in ("visualization", "both") else [])
    for what, fn, fn_args in runs:
        summary = fn(*fn_args)
        print(f"{config.model} {what}: labelled layer(s) {summary['labelled'] or 'none'}, skipped "
              f"{summary['skipped'] or 'none'} (already labelled), {summary['rows']} row(s), vocabulary hash "
              f"{summary['vocabulary_hash']}; in {args.out}/labels")
    if args.class_agreement and runs:
        report_agreement(config, summary["vocabulary_hash"])
    return 0


def check_visualized(config: LabelsConfig) -> None:
    """--method visualization labels the sweep's images in --out: none there is a mistake, said
    before Ray starts (with `both`, the probe images still give labels)."""
    from sweep.core.errors import SweepError
    from sweep.models.anatomy import anatomy_of
    from sweep.store.results import Results

    key = anatomy_of(config.model).entry.key
    try:
        rows = Results(config.out, config.storage_options).features(model=key, columns=["layer", "status"])
    except SweepError:
        rows = None
    if rows is None or not (rows["status"] == "ok").any():
        raise SweepError(f"--method visualization: no visualizations of {key} in {config.out!r} to label; run "
                         "`sweep run` for it into that root first, or use --method profile with probe images")


def report_agreement(config: LabelsConfig, vocabulary_hash: str) -> None:
    """Per labelled layer whose units are classes: how often a unit's label is its own class name."""
    from sweep.experiments.labels import class_agreement
    from sweep.store.results import Results

    _, concepts = load_vocabulary(config.vocabulary, config.storage_options)
    rows = Results(config.out, config.storage_options).labels(model=config.model, vocabulary_hash=vocabulary_hash)
    for (layer, method), mine in rows.groupby(["layer", "method"]):
        got = class_agreement(mine, concepts, k=5)
        print(f"class agreement, layer {layer} ({method}): {got['units']} class unit(s), top-1 {got['top1']:.3f}, "
              f"top-5 {got['top5']:.3f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="labels.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help=MODEL_HELP)
    add_model_arg(p)
    p.add_argument("--out", required=True, help="the results root the labels are written to")
    p.add_argument("--method", choices=["profile", "visualization", "both"], default="profile",
                   help="profile: correlate each unit's activations over the probe images with CLIP's similarity "
                   "to each concept (default); visualization: CLIP's zero-shot scores of each unit's visualization "
                   "in --out (no probe images needed); both")
    add_image_source(p, required=False, what=": the probe set")
    p.add_argument("--split", default="val", help="name of the probe set in the output (val, train, ...)")
    p.add_argument("--vocabulary", default="imagenet",
                   help=f"concepts: {', '.join(SHIPPED)} (shipped) or a text file, one concept per line")
    p.add_argument("--templates", default="simple", choices=TEMPLATE_SETS,
                   help="prompt templates: open_clip's 7 simple ImageNet ones or OpenAI's 80 (default simple)")
    p.add_argument("--judge", default="ViT-B-32/openai", help="the open_clip model that judges, ARCH/TAG")
    p.add_argument("--judge-weights", default="pretrained", choices=["pretrained", "random"],
                   help="pretrained (default) or random (test runs: the labels then mean nothing)")
    p.add_argument("--k", type=int, default=5, help="concepts kept per unit (default 5)")
    p.add_argument("--class-agreement", action="store_true",
                   help="units are classes (a classifier's logits, e.g. --tap head with --vocabulary imagenet): "
                   "print how often a unit's label is its own class name (top-1, top-5)")
    p.add_argument("--layers", nargs="+", help="block indices or names (default: all)")
    p.add_argument("--site", help="mlp | q | k | v | attn_out | channel | output (default: the model's)")
    p.add_argument("--weights", default="pretrained", help="the labelled model's weights")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--actors", type=int, help="scanner actors (default 1)")
    p.add_argument("--limit", type=int, help="use at most this many probe images")
    p.add_argument("--address", type=address_arg, help=ADDRESS_HELP)
    args = p.parse_args(argv)
    setup_logging("INFO")
    return guarded("labels.py", run, args)


if __name__ == "__main__":
    raise SystemExit(main())
