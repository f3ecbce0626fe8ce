"""The paper's full sweep: every model of the `paper` preset, all layers, on a Ray cluster.

    ray submit cluster.yaml jobs/all_models.py                        # results root: SWEEP_OUT (cluster.yaml)
    ray submit cluster.yaml jobs/all_models.py --out s3://BUCKET/vit-atlas
    python jobs/all_models.py --preset demo --out results/demo        # a small one on a laptop

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="all_models.py", description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, preset="paper")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    args.out = results_root(args.out, args.config, args.preset)
    return guarded("all_models.py", cmd_run, args)


if __name__ == "__main__":
    raise SystemExit(main())
