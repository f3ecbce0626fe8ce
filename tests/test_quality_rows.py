"""`Results.quality`: every visualization's measures and flags, and its rank among the unit's top
natural images (the top-images job's rows), compared only where both measure the same number."""

import pandas as pd
import pytest

from sweep.core.errors import SweepError
from sweep.store.layout import TOP_IMAGES, TOP_SCHEMA
from sweep.store.outputs import atomic_write, open_root, parquet_bytes
from sweep.store.results import Results, quality_frame


def plant_tops(root, split, model, rows):
    fs, base = open_root(str(root))
    atomic_write(fs, f"{base}/{TOP_IMAGES.part('part-00000.parquet', split=split, model=model)}",
                 parquet_bytes(rows, TOP_SCHEMA))


def tops_for(layer, site, feature, activations):
    return [{"layer": layer, "layer_name": f"blocks.{layer}", "site": site, "feature": feature, "rank": r,
             "image_id": f"img{r}", "activation": a} for r, a in enumerate(sorted(activations, reverse=True))]


def test_natural_rank_from_the_top_images(tmp_path):
    from sweep.cli import main

    base = ["visualize", "--model", "dev/vit-micro", "--weights", "random", "--layer", "1", "--steps", "2", "--quiet"]
    assert main([*base, "--feature", "3", "5", "--out", str(tmp_path)]) == 0
    rows = Results(str(tmp_path)).features().set_index("feature")
    a3, a5 = float(rows.loc[3, "act_final"]), float(rows.loc[5, "act_final"])
    plant_tops(tmp_path, "val", "dev/vit-micro", tops_for(1, "mlp", 3, [a3 + 1, a3 + 0.5, a3 - 1])
               + tops_for(1, "mlp", 5, [a5 - 0.1, a5 - 0.2]))
    q = Results(str(tmp_path)).quality(model="dev/vit-micro").set_index("feature")
    assert q.loc[3, "natural_rank"] == 2 and q.loc[3, "top_k"] == 3
    assert q.loc[5, "natural_rank"] == 0 and q.loc[5, "top_k"] == 2  # beats every image of the split
    assert {"shift_robustness", "scale_robustness", "switched_off"} <= set(q.columns)
    plant_tops(tmp_path, "train", "dev/vit-micro", tops_for(1, "mlp", 3, [0.0]))
    with pytest.raises(SweepError, match="several splits.*allowed: train, val"):
        Results(str(tmp_path)).quality()
    assert Results(str(tmp_path)).quality(split="train").set_index("feature").loc[3, "top_k"] == 1
    with pytest.raises(SweepError, match="no top images of split 'test'"):
        Results(str(tmp_path)).quality(split="test")


def test_only_comparable_numbers_are_ranked():
    feats = pd.DataFrame([
        {"model": "m", "layer": 0, "site": "mlp_pre", "feature": 1, "status": "ok", "act_final": -2.0,
         "post_final": 0.5, "objective": "unit", "negative": False},   # judged by its post-GELU value
        {"model": "m", "layer": 0, "site": "mlp", "feature": 2, "status": "ok", "act_final": 9.0,
         "post_final": -0.01, "objective": "unit", "negative": True},  # minimized: not comparable
        {"model": "m", "layer": 0, "site": "mlp", "feature": 3, "status": "ok", "act_final": 9.0,
         "post_final": 9.0, "objective": "direction", "negative": False},  # a direction: not a unit
        {"model": "m", "layer": 0, "site": "mlp", "feature": 4, "status": "failed", "act_final": None,
         "post_final": None, "objective": None, "negative": None},
    ])
    tops = pd.DataFrame([{"model": "m", "layer": 0, "site": "mlp", "feature": f, "activation": 1.0}
                         for f in (1, 2, 3)])
    q = quality_frame(feats, tops).set_index("feature")
    assert list(q.index) == [1, 2, 3]  # failed rows have nothing to measure
    assert q.loc[1, "natural_rank"] == 1 and pd.isna(q.loc[2, "natural_rank"]) and pd.isna(q.loc[3, "natural_rank"])
    assert list(q["switched_off"]) == [False, True, False]
