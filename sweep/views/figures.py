"""The paper's figures from feature rows: titled, labelled image grids ready for print.

Each figure is one matplotlib Figure holding one mosaic of images (so a sheet of 256 features costs
one image draw, not 256 axes), captions under each image, full model names as row labels, a title
that says what is shown; `save` writes PNG at 300 dpi and a vector format (PDF or SVG). Contact
sheets are paged: every feature of a layer is on some page, and each page says which of how many.
The functions take rows and an image loader, not a results root, so they are tested at scale
without files; `sweep.store.results.Results` supplies both in `analysis/figures.py`.
"""

from __future__ import annotations

import io
import math
import os
import posixpath
import textwrap
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from sweep.core.errors import SweepError, one_line
from sweep.store.results import Results

#: Loads a feature's image (its row's image_path) as an (H, W, 3) array in [0, 1]; None if unreadable.
Loader = Callable[[str], "np.ndarray | None"]
FORMATS = ("png", "pdf", "svg")


@dataclass(frozen=True)
class Style:
    """Print sizes: inches per image cell, font sizes in points, resolution of raster output."""

    cell: float = 1.15
    font: float = 7.0
    title: float = 10.0
    dpi: int = 300
    gap: int = 4  # pixels between images in the mosaic


def _cell_image(image: np.ndarray | None, side: int) -> np.ndarray:
    """An image as a (side, side, 3) float array: nearest-neighbour scaled (features are pixel art),
    light grey where there is none."""
    if image is None:
        return np.full((side, side, 3), 0.92)
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    h, w = image.shape[:2]
    rows = (np.arange(side) * h // side).clip(0, h - 1)
    cols = (np.arange(side) * w // side).clip(0, w - 1)
    return image[rows][:, cols, :3].clip(0, 1)


def mosaic(images: Sequence[np.ndarray | None], captions: Sequence[str], cols: int, title: str,
           row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
           style: Style = Style()) -> Figure:
    """Images in a grid of `cols` columns with a caption under each, optional row and column labels,
    and a title; None leaves a grey cell (a grid point without a result). One image draw, in pixel
    coordinates: each row of images is followed by a white band for its captions."""
    n = len(images)
    rows = max(1, math.ceil(n / cols))
    side = max([32, *(max(np.asarray(im).shape[:2]) for im in images if im is not None)])
    caption_in = style.font * 2.8 / 72  # two lines of caption under each row, in inches
    band = int(round(side * caption_in / style.cell))
    g = style.gap
    pitch_x, pitch_y = side + g, side + band
    sheet = np.ones((rows * pitch_y, cols * pitch_x - g, 3))
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        sheet[r * pitch_y:r * pitch_y + side, c * pitch_x:c * pitch_x + side] = _cell_image(im, side)
    label_in = 1.7 if row_labels else 0.0
    head_in = (style.title * 2.4 + (style.font * 2.2 if col_labels else 0)) / 72
    body_w, body_h = cols * style.cell, rows * (style.cell + caption_in)
    width, height = label_in + body_w + 0.15, head_in + body_h + 0.1
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((label_in / width, 0.1 / height, body_w / width, body_h / height))
    ax.imshow(sheet, interpolation="nearest", aspect="auto")
    ax.axis("off")
    for i, text in enumerate(captions):
        r, c = divmod(i, cols)
        ax.text(c * pitch_x + side / 2, r * pitch_y + side + band * 0.08, text, ha="center", va="top",
                fontsize=style.font, linespacing=1.1)
    for r, text in enumerate(row_labels or []):
        ax.text(-side * 0.08, r * pitch_y + side / 2, "\n".join(textwrap.wrap(text, 24)) or text, ha="right",
                va="center", fontsize=style.font)
    for c, text in enumerate(col_labels or []):
        ax.text(c * pitch_x + side / 2, -side * 0.04, text, ha="center", va="bottom", fontsize=style.font,
                fontweight="bold")
    fig.suptitle(title, fontsize=style.title, y=1 - 0.5 * style.title / 72 / height)
    return fig


def strongest_per_layer(features: pd.DataFrame, layers=None) -> pd.DataFrame:
    """For each layer, the ok feature with the highest final activation."""
    ok = features[features["status"] == "ok"]
    if layers is not None:
        ok = ok[ok["layer"].isin(list(layers))]
    if ok.empty:
        raise SweepError("no visualized features to draw")
    return ok.sort_values("act_final", ascending=False, kind="stable").groupby("layer").head(1).sort_values("layer")


def _caption(r) -> str:
    return f"L{int(r.layer)} {r.site} {int(r.feature)}\nact {float(r.act_final):.3g}"


def progression(features: pd.DataFrame, model: str, load: Loader, layers=None, style: Style = Style()) -> Figure:
    """A row of features from early to late layers (the strongest of each layer)."""
    picks = strongest_per_layer(features, layers)
    return mosaic([load(p) for p in picks["image_path"]], [_caption(r) for r in picks.itertuples()],
                  cols=len(picks), title=f"{model}: the strongest feature of each layer, early to late", style=style)


def relative_layers(available: Sequence[int], count: int) -> list[int]:
    """`count` layers evenly spread from the first to the last available one (early, middle, late)."""
    available = sorted(set(int(x) for x in available))
    if not available:
        return []
    idx = np.linspace(0, len(available) - 1, min(count, len(available))).round().astype(int)
    return [available[i] for i in dict.fromkeys(idx.tolist())]


def comparison(features: dict[str, pd.DataFrame], load: Loader, layers=None, columns: int = 4,
               style: Style = Style()) -> Figure:
    """One row per model (e.g. a ViT and a CLIP): the strongest feature of given layers, or of up to
    `columns` layers at the same relative depth of each model (its first to its last visualized)."""
    picked = {}
    for model, rows in features.items():
        ok = rows[rows["status"] == "ok"]
        wanted = list(layers) if layers is not None else relative_layers(ok["layer"], columns)
        shown = ok[ok["layer"].isin(wanted)]
        picks = strongest_per_layer(shown) if len(shown) else shown
        if len(picks) != len(wanted) or not wanted:
            missing = sorted(set(wanted) - set(picks["layer"])) if wanted else "any layer"
            raise SweepError(f"{model} has no visualized features in layer(s) {missing}")
        picked[model] = picks
    cols = max(len(p) for p in picked.values())
    images, captions = [], []
    for picks in picked.values():  # a shallower model's row is padded with empty cells
        images += [load(p) for p in picks["image_path"]] + [None] * (cols - len(picks))
        captions += [_caption(r) for r in picks.itertuples()] + [""] * (cols - len(picks))
    heads = [f"layer {x}" for x in layers] if layers is not None else [f"depth {i + 1}/{cols}" for i in range(cols)]
    return mosaic(images, captions, cols, title="The strongest feature per layer, by model",
                  row_labels=list(picked), col_labels=heads, style=style)


def contact_sheets(features: pd.DataFrame, model: str, layer: int, load: Loader, per_page: int = 64,
                   cols: int = 8, style: Style = Style()) -> list[Figure]:
    """Every visualized feature of one layer, by site and feature index, `per_page` to a page."""
    rows = features[(features["layer"] == layer) & (features["status"] == "ok")].sort_values(["site", "feature"])
    if rows.empty:
        raise SweepError(f"no visualized features of {model} layer {layer}")
    pages = math.ceil(len(rows) / per_page)
    figs = []
    for p in range(pages):
        part = rows.iloc[p * per_page:(p + 1) * per_page]
        figs.append(mosaic([load(x) for x in part["image_path"]],
                           [f"{r.site} {int(r.feature)}\nact {float(r.act_final):.3g}" for r in part.itertuples()],
                           cols=cols, title=f"{model}, layer {layer}: features {int(part['feature'].iloc[0])}-"
                           f"{int(part['feature'].iloc[-1])} (page {p + 1} of {pages}, {len(rows)} features)",
                           style=style))
    return figs


def save(fig: Figure, stem: str, formats: Sequence[str] = ("png", "pdf"), dpi: int = 300) -> list[str]:
    """Write `stem.<format>` for each format (raster at `dpi`); returns the paths."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise SweepError(f"figure format {bad[0]!r}; allowed: {', '.join(FORMATS)}")
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    paths = []
    for fmt in formats:
        path = f"{stem}.{fmt}"
        temp = f"{path}.{os.getpid()}.tmp"  # atomic: a reader never sees half a figure
        try:
            fig.savefig(temp, dpi=dpi, bbox_inches="tight", facecolor="white", format=fmt)
            os.replace(temp, path)
        except (ValueError, MemoryError) as exc:  # matplotlib's "Image size ... is too large", or no memory
            raise SweepError(f"figure {path}: too large to draw at {dpi} dpi ({one_line(exc, 120)}); lower --dpi "
                             "or show fewer features per figure") from None
        finally:
            if os.path.exists(temp):
                os.remove(temp)
        paths.append(path)
    return paths


# --- the tuning sheet: a working view of an lr x TV grid (PIL, pixel-exact cells) -----------------

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
