"""The paper's figures at the paper's scale (12 models, 3,072 features per layer), from rows and an
in-memory image loader: titles, full model names, captions, every feature on some sheet page."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sweep.core.errors import SweepError
from sweep.views.figures import Style, comparison, contact_sheets, progression, relative_layers, save

WIDTH, LAYERS = 3072, 3
MODELS = [f"vit_base_patch16_384.orig_in21k_ft_in1k-variant-{i}" for i in range(6)] + [
    f"open_clip:ViT-B-32/laion2b_s34b_b79k-run-{i}" for i in range(6)]


def _rows(model: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = WIDTH * LAYERS
    return pd.DataFrame({"layer": np.repeat(np.arange(LAYERS), WIDTH), "site": "mlp",
                         "feature": np.tile(np.arange(WIDTH), LAYERS), "status": "ok",
                         "act_final": rng.random(n), "image_path": [f"{model}/{i}.png" for i in range(n)]})


@pytest.fixture(scope="module")
def frames():
    return {m: _rows(m, i) for i, m in enumerate(MODELS)}


def load(path):
    if path.endswith("/5.png"):
        return None  # an unreadable image: a grey cell, not a failure
    rng = np.random.default_rng(abs(hash(path)) % 2**32)
    return rng.random((16, 16, 3))


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_progression_and_comparison_have_titles_captions_and_full_names(frames, tmp_path):
    model = MODELS[0]
    fig = progression(frames[model], model, load)
    assert fig.get_suptitle() == f"{model}: the strongest feature of each layer, early to late"
    rows = frames[model]
    best = rows.loc[rows.groupby("layer")["act_final"].idxmax()]
    assert _texts(fig) == [f"L{r.layer} mlp {r.feature}\nact {r.act_final:.3g}" for r in best.itertuples()]
    paths = save(fig, str(tmp_path / "progression"), ("png", "pdf"), dpi=300)
    with Image.open(paths[0]) as im:
        assert im.size[0] >= 3 * 1.15 * 300 * 0.9, "print resolution: about 1.15 inch per image at 300 dpi"
    assert open(paths[1], "rb").read(5) == b"%PDF-"

    fig = comparison(frames, load)  # no --layers: 4 layers at the same relative depth of each model
    texts = _texts(fig)
    assert all(any(t.replace("\n", "") == m for t in texts) for m in MODELS), "every full model name"
    assert [t for t in texts if t.startswith("depth ")] == [f"depth {i}/3" for i in range(1, 4)]  # 3 of 4 exist
    assert len([t for t in texts if t.startswith("L")]) == 12 * 3
    save(fig, str(tmp_path / "compare"), ("svg",), dpi=72)
    assert (tmp_path / "compare.svg").read_text().lstrip().startswith("<?xml")
    assert relative_layers(range(12), 3) == [0, 6, 11] and relative_layers([], 3) == []


def test_contact_sheets_page_every_feature(frames, tmp_path):
    model = MODELS[-1]
    figs = contact_sheets(frames[model], model, 1, load, per_page=64, style=Style(dpi=50))
    assert len(figs) == WIDTH // 64 == 48
    assert figs[0].get_suptitle() == f"{model}, layer 1: features 0-63 (page 1 of 48, 3072 features)"
    assert figs[-1].get_suptitle().endswith("features 3008-3071 (page 48 of 48, 3072 features)")
    shown = [int(t.split("\n")[0].split()[1]) for f in figs for t in _texts(f)]
    assert shown == list(range(WIDTH)), "every feature once, in order"
    save(figs[-1], str(tmp_path / "last"), ("png",), dpi=50)
    with pytest.raises(SweepError, match="no visualized features of .* layer 9"):
        contact_sheets(frames[model], model, 9, load)
    with pytest.raises(SweepError, match="has no visualized features in layer"):
        comparison({MODELS[0]: frames[MODELS[0]]}, load, layers=[0, 7])
    with pytest.raises(SweepError, match="figure format 'gif'"):
        save(figs[0], str(tmp_path / "x"), ("gif",))
