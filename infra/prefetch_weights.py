"""Download a preset's pretrained weights into this machine's caches (HF_HOME, TORCH_HOME).

    python infra/prefetch_weights.py paper

Run by infra/Dockerfile with `--build-arg BAKE_WEIGHTS=1`, so every node of a cluster starts with the
checkpoints in its image instead of each downloading them (47 models for the paper preset).
"""

import argparse

from sweep.models.anatomy import anatomy_of
from sweep.models.build import build
from sweep.work.plan import PRESETS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", nargs="?", default="paper", choices=sorted(PRESETS))
    args = parser.parse_args(argv)
    models = PRESETS[args.preset]()["models"]
    for i, name in enumerate(models, 1):
        build(anatomy_of(name).entry, "pretrained", "cpu")  # fills the hub caches; the module is dropped
        print(f"[{i}/{len(models)}] {name}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
