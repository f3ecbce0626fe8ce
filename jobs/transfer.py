"""Transferability: show one model's visualizations to other models and score each against its unit's counterpart.

    python jobs/matching.py --model demo/dinov2-vits14 ViT-B-16/openai --out results/atlas   # counterparts first
    python jobs/transfer.py --model demo/dinov2-vits14 --other ViT-B-16/openai --out results/atlas

For each visualization of --model in --out, the unit's best match in each --other model (from the
matching job's rows in the same root) is read on the image; its activation is scored against that
unit's own probe images: z = (activation - probe mean) / probe std, and whether it beats every probe
image (sweep/experiments/transfer.py). Writes <out>/transfer/model=<m>/other=<o>/part-<key>.parquet;
`Results(out).quality(model=...)` adds transfer_z, transfer_beats and transfer_models. A re-run with
nothing changed skips the pair.
"""

import argparse
import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from sweep.cli import ADDRESS_HELP, MODEL_HELP, address_arg, connect_ray, gather, guarded, setup_logging  # noqa: E402
from sweep.core.validation import parse  # noqa: E402
from sweep.experiments.transfer import TransferConfig  # noqa: E402

#: Where each option lands in TransferConfig (field path -> argparse dest).
FIELDS = {"model": "model", "others": "other", "out": "out", "batch_size": "batch_size", "actors": "actors"}


def run(args) -> int:
    from sweep.pipelines.transfer import check_transfer, run_transfer

    data, flags = gather(args, FIELDS)
    config = parse(TransferConfig, data, flags=flags)
    plans = check_transfer(config)  # visualizations, matches, probe statistics, root: one line, before Ray
    connect_ray(args.address)
    for s in run_transfer(config, plans):
        if s["skipped"]:
            print(f"{config.model} -> {s['other']}: already scored (or nothing to score), skipped")
        else:
            print(f"{config.model} -> {s['other']}: {s['scored']} of {s['rows']} visualization(s) scored; median z "
                  f"{s['median_z']:.2f}; {s['beats']} drive their counterpart above every probe image")
    print(f"in {args.out}/transfer")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="transfer.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help=f"whose visualizations: {MODEL_HELP}")
    p.add_argument("--other", nargs="+", required=True, help="the models that are shown them (matched to --model "
                   "by jobs/matching.py in the same root)")
    p.add_argument("--out", required=True, help="the results root holding the visualizations and the matches")
    p.add_argument("--batch-size", type=int, help="images per batch (default 16)")
    p.add_argument("--actors", type=int, help="scanner actors (default 1)")
    p.add_argument("--address", type=address_arg, help=ADDRESS_HELP)
    args = p.parse_args(argv)
    setup_logging("INFO")
    return guarded("transfer.py", run, args)


if __name__ == "__main__":
    raise SystemExit(main())
