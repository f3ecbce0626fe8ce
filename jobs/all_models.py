"""The paper's full sweep: every model of the `paper` preset, all layers, on a Ray cluster.

    ray submit cluster.yaml jobs/all_models.py                        # results root: SWEEP_OUT (cluster.yaml)
    ray submit cluster.yaml jobs/all_models.py --out s3://BUCKET/vit-atlas
    python jobs/all_models.py --preset demo --out results/demo        # a small one on a laptop

With --preset demo, the trained model's units also get their natural images: the top ones among the
photos the project ships and their crops, with thumbnails and activation maps (sweep/pipelines/naturals.py;
--no-naturals skips them), so the atlas shows each visualization beside what drives the unit in photos.

The results root is --out, else the SWEEP_OUT environment variable (which cluster.yaml and
infra/rayjob.yaml set), else results/<preset> on a laptop's own local Ray; on a cluster a root on
one node's disk is refused before any work (unless --shared-filesystem says it is a shared mount).
Attaches to a running cluster when asked (--address, RAY_ADDRESS, or the head of a `ray up`
cluster) and starts local Ray otherwise. Every option of `sweep run` applies; see --help.
"""

import argparse
import os
from collections.abc import Mapping

from sweep.cli import add_run_arguments, cmd_run, guarded, setup_logging

#: The environment variable that carries the results root on a cluster (one place: the cluster config).
OUT_ENV = "SWEEP_OUT"


def results_root(out: str | None, config: str | None, preset: str | None,
                 environ: Mapping[str, str] = os.environ) -> str | None:
    """--out wins, then SWEEP_OUT, then results/<preset>; with a --config, its own 'out' (a file says
    exactly where it writes; an environment default must not override it)."""
    if out is not None or config is not None:
        return out
    return environ.get(OUT_ENV) or "results/" + (preset or "sweep")


def demo_naturals(args) -> int:
    """The demo's trained units' natural images (top photos and crops, activation maps), after its sweep."""
    from sweep.cli import connect_ray, sweep_config_from_args
    from sweep.pipelines.naturals import photo_naturals
    from sweep.work.plan import DEMO_MODEL, expand

    config = sweep_config_from_args(args)
    units: dict[int, list[int]] = {}
    for task in expand(config):
        if task.batch.model == DEMO_MODEL and task.batch.site == "mlp":
            units.setdefault(task.batch.layer, []).extend(task.batch.features)
    if not units:
        return 0
    connect_ray(args.address)
    made = photo_naturals(config.out, DEMO_MODEL, units, weights=config.plan_for(DEMO_MODEL).weights,
                          storage_options=config.storage_options)
    top = "already there" if made["top_rows"] is None else f"{made['top_rows']} rows"
    print(f"{DEMO_MODEL}: top natural images among the shipped photos and crops ({top}), {made['maps']} new "
          f"activation map(s); in {config.out}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="all_models.py", description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, preset="paper")
    parser.add_argument("--no-naturals", dest="naturals", action="store_false",
                        help="--preset demo: skip the trained units' top natural images and activation maps")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    args.out = results_root(args.out, args.config, args.preset)
    code = guarded("all_models.py", cmd_run, args)
    if code == 0 and args.preset == "demo" and args.naturals and not args.dry_run:
        code = guarded("all_models.py", demo_naturals, args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
