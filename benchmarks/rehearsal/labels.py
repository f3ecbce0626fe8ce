"""The labels job rehearsed at size: the whole job, and its driver-side reduction alone.

    python benchmarks/rehearse.py --labels 10000 --csv ...            (the whole job, `stage_labels`)
    python benchmarks/rehearse.py --label-sums 18432 7609 10000 --csv ... (the reduction, `stage_label_sums`)

The whole job at the issue's size: 10,000 synthetic probe JPEGs, the `common` vocabulary (7,609
concepts x 7 prompts), ViT-S (`vit_small_patch16_224.augreg_in21k_ft_in1k`, 12 x 1,536 units, random
weights) and the ViT-B-32 judge (random weights: what is measured is the job's cost, not the labels'
meaning), on a Ray head the rehearsal started; the driver is this process. Most of the time is the
workers' (CLIP's text tower once, the model and CLIP's image tower on every image); what grows with
units x concepts on the driver is `ProfileStats`, which `--label-sums` measures alone.
"""

from __future__ import annotations

import time

MODEL = "vit_small_patch16_224.augreg_in21k_ft_in1k"
JUDGE = "ViT-B-32/openai"
DIM = 512  # ViT-B-32's embedding width


def stage_labels(spec: dict) -> dict:
    """label_units on the head at spec["ray"] over the JPEGs of spec["images_dir"]; checks that every
    unit got k concepts once, over every image, and times the concepts' text embedding apart."""
    import ray

    import sweep.pipelines.labels as pipeline
    from sweep.data.imagenet import image_folder
    from sweep.data.vocabulary import load_vocabulary
    from sweep.experiments.labels import LabelsConfig
    from sweep.store.results import Results

    config = LabelsConfig(MODEL, spec["out"], split="rehearsal", weights="random", judge=JUDGE,
                          judge_weights="random", vocabulary=spec.get("vocabulary", "common"), k=spec.get("k", 5),
                          batch_size=spec.get("batch_size", 32), actors=1, actor_cpus=spec.get("actor_cpus", 2))
    listing = image_folder(spec["images_dir"])
    timings = {}
    embed = pipeline.concept_text

    def timed_text(*args, **kwargs):  # the job's one text embedding, timed apart from the scan
        started = time.perf_counter()
        try:
            return embed(*args, **kwargs)
        finally:
            timings["text_s"] = round(time.perf_counter() - started, 2)

    pipeline.concept_text = timed_text
    ray.init(address=spec["ray"], log_to_driver=False)
    try:
        started = time.perf_counter()
        summary = pipeline.label_units(config, listing)
        job_s = time.perf_counter() - started
    finally:
        ray.shutdown()
    rows = Results(config.out).labels(model=MODEL, columns=["layer", "feature", "rank", "images"])
    k = min(config.k, len(load_vocabulary(config.vocabulary)[1]))
    units = rows.groupby(["layer", "feature"])["rank"].apply(lambda r: sorted(r) == list(range(k)))
    return {"images": len(listing.records), "job_wall_s": round(job_s, 2), **timings,
            "scan_and_reduce_s": round(job_s - timings.get("text_s", 0.0), 2), "layers": len(summary["labelled"]),
            "units": len(units), "rows": len(rows),
            "every_unit_k_once": bool(units.all()) and len(rows) == len(units) * k,
            "every_image": bool((rows["images"] == len(listing.records)).all())}


def stage_label_sums(spec: dict) -> dict:
    """The labels job's reduction on the driver at size, alone: `ProfileStats` over `images` probe images of
    `units` activations and the judge's `dim`-wide image embeddings (seeded random batches), then the top-k
    against `concepts` text embeddings. The scanning (the model and the judge on the probe images) is the
    workers'; this is what the driver holds."""
    import torch

    from sweep.experiments.labels import ProfileStats

    from rehearsal.stages import peak_mb

    units, concepts, images, batch = spec["units"], spec["concepts"], spec["images"], spec["batch"]
    dim = spec.get("dim", DIM)
    g = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(concepts, dim, generator=g), dim=1)
    base = peak_mb()[0]
    started = time.perf_counter()
    stats = ProfileStats(units, dim)
    for i in range(0, images, batch):
        n = min(batch, images - i)
        embeds = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
        stats.update(torch.randn(n, units, generator=g), embeds)
    update_s = time.perf_counter() - started
    after_sums = peak_mb()[0]
    started = time.perf_counter()
    values, index = stats.top(text, 5)
    top_s = time.perf_counter() - started
    return {"units": units, "concepts": concepts, "images": images, "batch": batch, "dim": dim,
            "update_s": round(update_s, 2), "top_s": round(top_s, 2), "base_peak_mb": round(base, 1),
            "peak_after_updates_mb": round(after_sums, 1), "sums_mb": round(units * dim * 8 / 2**20, 1),
            "top_shape": list(values.shape)}
