"""The rehearsal's stand-in for the GPU math: seeded small images and rows for a whole batch at once.

Everything around it is the real sweep (plan, driver, dispatcher, Ray actors, writes, resume); only
`render_batch` is replaced, and no network is ever built. Every row it writes says so: `device` is
"rehearsal" and `versions` carries `"runner": "rehearsal"` with the worker's pid, the batches it has run
and its resident memory then, so the rehearsal can tell whether a worker's memory grows with its work.
The manifest of every run records the runner's KIND. Nothing in `sweep` refers to this module: it is
reachable from the rehearsal alone, never from the CLI or a config.
"""

from __future__ import annotations

import json
import os
import time

import torch

from sweep.method.render import Rendered, seeds_for
from sweep.method.optimize import Trace
from sweep.work.batch import BatchRunner


def resident_mb(pid: str = "self") -> float:
    """Resident memory (VmRSS) of a process, in MiB, from /proc."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RehearsalRunner(BatchRunner):
    """A BatchRunner whose images come from seeded generators instead of the recipe."""

    KIND = "rehearsal stand-in (benchmarks/rehearsal/standin.py): seeded images and rows, no network, no optimization"
    IMAGE_SIZE = 16  # pixels: small PNGs, so storage, not encoding, is what the rehearsal measures
    SECONDS = 0.0    # per batch, to stand in for GPU time when asked (a sleep: no CPU taken)
    batches = 0

    def network(self, model: str, weights: str):
        return None  # never built: the stand-in needs no network

    def render_batch(self, batch, anatomy, block, site, recipe, progress=None) -> Rendered:
        start = time.perf_counter()
        seeds = seeds_for(batch.features, batch.base_seed)
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        size = self.IMAGE_SIZE
        images = torch.stack([torch.rand(3, size, size, generator=g) for g in gens])
        act_init = torch.stack([torch.rand((), generator=g) for g in gens])
        act_final = act_init + torch.stack([torch.rand((), generator=g) for g in gens]) * 10
        steps = [0, max(1, recipe.iterations - 1)]
        activation = torch.stack([act_init, act_final])
        if self.SECONDS:
            time.sleep(self.SECONDS)
        type(self).batches += 1
        return Rendered(list(batch.features), seeds, images, act_init, act_final,
                        Trace(steps, -activation, activation), time.perf_counter() - start, self.engine)

    def _rows(self, batch, anatomy, recipe, source, weights, result) -> list[dict]:
        versions = json.dumps({**json.loads(self.versions), "runner": "rehearsal", "pid": os.getpid(),
                               "batches_run": type(self).batches, "rss_mb": round(resident_mb(), 1)},
                              sort_keys=True)
        return [{**row, "device": "rehearsal", "versions": versions}
                for row in super()._rows(batch, anatomy, recipe, source, weights, result)]


def runner(seconds: float = 0.0, image_size: int = 16) -> type[RehearsalRunner]:
    """A RehearsalRunner class with these settings (a class, as `run_sweep(runner=...)` takes)."""
    return type("RehearsalRunner", (RehearsalRunner,), {"SECONDS": float(seconds), "IMAGE_SIZE": int(image_size),
                                                         "batches": 0})
