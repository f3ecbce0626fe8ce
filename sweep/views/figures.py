"""The paper's figure layouts from a results root: labelled image grids (PNG)."""

from __future__ import annotations

import io
import posixpath

import pandas as pd
from PIL import Image, ImageDraw

from sweep.core.errors import SweepError
from sweep.store.results import Results


def load_image(results: Results, image_path: str) -> Image.Image:
    with Image.open(io.BytesIO(results.fs.cat_file(posixpath.join(results.root, image_path)))) as im:
        return im.convert("RGB")


def grid(images: list[Image.Image | None], labels: list[str], cols: int, cell: int = 160, label_h: int = 16,
         row_labels: list[str] | None = None, col_labels: list[str] | None = None) -> Image.Image:
    """Images in a grid of `cols` columns, each resized to `cell` px, with a caption under each;
    None leaves its cell blank (a grid point without a result)."""
    rows = max(1, -(-len(images) // cols))
    left = 110 if row_labels else 0
    top = label_h if col_labels else 0
    sheet = Image.new("RGB", (left + cols * cell, top + rows * (cell + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (im, text) in enumerate(zip(images, labels)):
        r, c = divmod(i, cols)
        x, y = left + c * cell, top + r * (cell + label_h)
        if im is not None:
            sheet.paste(im.resize((cell, cell)), (x, y))
        draw.text((x + 2, y + cell + 2), text, fill="black")
    for r, text in enumerate(row_labels or []):
        draw.text((4, top + r * (cell + label_h) + cell // 2), text, fill="black")
    for c, text in enumerate(col_labels or []):
        draw.text((left + c * cell + 2, 2), text, fill="black")
    return sheet


def strongest_per_layer(features: pd.DataFrame, layers=None) -> pd.DataFrame:
    """For each layer, the ok feature with the highest final activation."""
    ok = features[features["status"] == "ok"]
    if layers is not None:
        ok = ok[ok["layer"].isin(layers)]
    if ok.empty:
        raise SweepError("no visualized features to draw")
    return ok.sort_values("act_final", ascending=False).groupby("layer").head(1).sort_values("layer")


def progression(results: Results, model: str, layers=None) -> Image.Image:
    """A row of features from early to late layers (the strongest of each layer)."""
    picks = strongest_per_layer(results.features(model=model), layers)
    return grid([load_image(results, p) for p in picks["image_path"]],
                [f"L{l} f{f}" for l, f in zip(picks["layer"], picks["feature"])], cols=len(picks))


def comparison(results: Results, models: list[str], layers) -> Image.Image:
    """One row per model (e.g. a ViT and a CLIP), the strongest feature of each given layer."""
    images, labels, names = [], [], []
    for model in models:
        picks = strongest_per_layer(results.features(model=model), layers)
        if len(picks) != len(layers):
            raise SweepError(f"{model} has no visualized features in some of the layers {list(layers)}")
        images += [load_image(results, p) for p in picks["image_path"]]
        labels += [f"L{l} f{f}" for l, f in zip(picks["layer"], picks["feature"])]
        names.append(model[:16])
    return grid(images, labels, cols=len(layers), row_labels=names)


def contact_sheet(results: Results, model: str, layer: int, limit: int = 64) -> Image.Image:
    """All (up to `limit`) features of one layer, by feature index."""
    rows = results.features(model=model, layer=layer)
    rows = rows[rows["status"] == "ok"].sort_values(["site", "feature"]).head(limit)
    if rows.empty:
        raise SweepError(f"no visualized features of {model} layer {layer}")
    return grid([load_image(results, p) for p in rows["image_path"]],
                [f"{s} {f}" for s, f in zip(rows["site"], rows["feature"])], cols=8, cell=96)


def tuning_sheet(results: Results, model: str, unit: tuple[int, int] | None = None,
                 cell: int = 128) -> tuple[Image.Image, pd.DataFrame]:
    """The lr x TV grid of a tuning as the paper's authors looked at it: rows lr, columns TV, one
    unit's image per trial captioned with its scores; and the combined score as an lr x TV table.

    unit (layer, feature): default the first unit of the trials.
    """
    trials = results.tuning(model=model)
    trials = trials[trials["status"] == "ok"]
    if trials.empty:
        raise SweepError(f"no tuning trials of {model} under {results.root!r}; run `sweep tune` first")
    units = list(zip(trials.iloc[0]["unit_layer"], trials.iloc[0]["unit_feature"]))
    unit = tuple(unit) if unit is not None else units[0]
    if unit not in units:
        raise SweepError(f"unit L{unit[0]}:{unit[1]} is not in the trials; allowed: "
                         f"{', '.join(f'{l}:{f}' for l, f in units)}")
    k = units.index(unit)
    lrs, tvs = sorted(trials["lr"].unique()), sorted(trials["tv"].unique())
    by_point = {(r.lr, r.tv): r for r in trials.itertuples()}
    images, labels = [], []
    for lr in lrs:
        for tv in tvs:
            r = by_point.get((lr, tv))
            if r is None:
                images.append(None)
                labels.append("(not run)")
                continue
            images.append(load_image(results, r.image_paths[k]))
            labels.append(f"a{r.unit_relative_activation[k]:.2f} r{r.unit_robustness[k]:.2f} "
                          f"c{r.unit_combined[k]:.2f}")
    sheet = grid(images, labels, cols=len(tvs), cell=cell, row_labels=[f"lr {v:g}" for v in lrs],
                 col_labels=[f"tv {v:g}" for v in tvs])
    table = trials.pivot_table(index="lr", columns="tv", values="combined")
    return sheet, table
