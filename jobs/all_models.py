"""The paper's full sweep: every model of the `paper` preset, all layers, on a Ray cluster.

    ray submit cluster.yaml jobs/all_models.py --out s3://BUCKET/vit-atlas
    python jobs/all_models.py --preset smoke --out results/smoke      # a small one on a laptop

Attaches to a running cluster when there is one (RAY_ADDRESS, or a head on this machine) and
starts local Ray otherwise. Every option of `sweep run` applies; see --help.
"""

import argparse

from sweep.cli import add_run_arguments, cmd_run, guarded, setup_logging


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="all_models.py", description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, preset="paper")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    if args.out is None and args.config is None:
        args.out = "results/" + (args.preset or "sweep")
    return guarded("all_models.py", cmd_run, args)


if __name__ == "__main__":
    raise SystemExit(main())
