"""The labels job's driver-side reduction at size, alone (`benchmarks/rehearse.py --label-sums`).

The whole job at the issue's size (10,000 probe images, the `common` vocabulary's 7,609 concepts,
ViT-S's 12 x 1,536 units) spends most of its time in the workers (the model and CLIP on the probe
images, CLIP's text tower on 7,609 x 7 prompts); what grows with units x concepts on the driver is
`ProfileStats`, measured here in a process of its own.
"""

from __future__ import annotations

import time


def stage_label_sums(spec: dict) -> dict:
    """The labels job's reduction on the driver at size, alone: `ProfileStats` over `images` probe images of
    `units` activations and `concepts` CLIP similarities (seeded random batches), then the top-k. The
    scanning (the model and the judge on the probe images) is the workers'; this is what the driver holds."""
    import torch

    from sweep.experiments.labels import ProfileStats

    from rehearsal.stages import peak_mb

    units, concepts, images, batch = spec["units"], spec["concepts"], spec["images"], spec["batch"]
    g = torch.Generator().manual_seed(0)
    base = peak_mb()[0]
    started = time.perf_counter()
    stats = ProfileStats(units, concepts)
    for i in range(0, images, batch):
        n = min(batch, images - i)
        stats.update(torch.randn(n, units, generator=g), torch.randn(n, concepts, generator=g))
    update_s = time.perf_counter() - started
    after_sums = peak_mb()[0]
    started = time.perf_counter()
    values, index = stats.top(5)
    top_s = time.perf_counter() - started
    return {"units": units, "concepts": concepts, "images": images, "batch": batch, "update_s": round(update_s, 2),
            "top_s": round(top_s, 2), "base_peak_mb": round(base, 1), "peak_after_updates_mb": round(after_sums, 1),
            "sums_mb": round(units * concepts * 8 / 2**20, 1), "top_shape": list(values.shape)}
