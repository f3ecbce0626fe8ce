"""The paper's comparison tables and plots, rebuilt from per-image ablation rows.

Published numbers are from ../shared/reference/paper-method.md section 5.1 (the paper's Table, which
its repository's FBAcc.txt reproduces); "normalized" = 100 x top5(masked) / top5(original).
"""

from __future__ import annotations

import pandas as pd

from sweep.core.errors import SweepError, one_line
from sweep.models.names import source_of
from sweep.models.zoo import get_entry

ROW_COLUMNS = ["model", "condition", "status", "correct1", "correct5", "loss"]


def read_ablation_rows(results: str, experiment: str, storage_options: dict | None = None) -> pd.DataFrame:
    """The per-image rows of one experiment under a results root (local path or fsspec URL)."""
    path = f"{results.rstrip('/')}/ablations/experiment={experiment}"
    try:
        rows = pd.read_parquet(path, storage_options=storage_options, columns=ROW_COLUMNS)
    except (FileNotFoundError, OSError) as exc:
        raise SweepError(f"no {experiment} results under {path}: {one_line(exc, 160)}") from None
    rows["model"] = rows["model"].astype(str)
    return rows

#: Paper table rows: name -> (original top-5, foreground normalized, background normalized).
PAPER_FB = {
    "ViT-B32": (98.44, 93.91, 28.10), "ViT-L16": (99.57, 96.18, 33.69), "ViT-L32": (99.32, 93.89, 31.07),
    "ViT-B16": (99.22, 95.64, 31.59), "ResNet-50": (98.00, 89.69, 18.69), "ResNet-152": (98.85, 90.74, 19.68),
    "MobileNetV2": (96.09, 86.84, 15.94), "DenseNet121": (96.55, 89.58, 17.53),
}
#: Raw top-5 accuracies behind the table (FBAcc.txt): name -> (original, foreground, background).
PAPER_FB_RAW_TOP5 = {
    "ViT-B32": (98.44, 92.44, 27.66), "ViT-L16": (99.57, 95.77, 33.55), "ViT-L32": (99.32, 93.25, 30.81),
    "ViT-B16": (99.22, 94.89, 31.34), "ResNet-50": (98.00, 87.89, 18.32), "ResNet-152": (98.85, 89.69, 19.45),
    "MobileNetV2": (96.09, 83.44, 15.32), "DenseNet121": (96.55, 86.50, 16.93),
}
_PAPER_ALIASES = {"ViT-B32": "B_32_imagenet1k", "ViT-L16": "L_16_imagenet1k", "ViT-L32": "L_32_imagenet1k",
                  "ViT-B16": "B_16_imagenet1k", "ResNet-50": "ResNet-50", "ResNet-152": "ResNet-152",
                  "MobileNetV2": "MobileNetV2", "DenseNet121": "DenseNet121"}


def paper_name(model: str) -> str | None:
    """The paper's row name for a registry key, if the model is in its table."""
    for name, alias in _PAPER_ALIASES.items():
        if get_entry(alias).key == model:
            return name
    return None


def accuracy(rows: pd.DataFrame, by=("model", "condition")) -> pd.DataFrame:
    """Top-1/top-5 in % and mean CE over readable images, per group."""
    ok = rows[rows["status"] == "ok"]
    g = ok.groupby(list(by), observed=True, sort=False)
    out = pd.DataFrame({"images": g.size(), "top1": 100 * g["correct1"].mean(),
                        "top5": 100 * g["correct5"].mean(), "loss": g["loss"].mean()})
    return out.reset_index()


def fb_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The paper's foreground/background table with the published numbers alongside."""
    acc = accuracy(rows).pivot(index="model", columns="condition", values="top5")
    table = pd.DataFrame(index=acc.index)
    table["original_top5"] = acc["original"]
    table["foreground_norm"] = 100 * acc["foreground"] / acc["original"]
    table["background_norm"] = 100 * acc["background"] / acc["original"]
    names = [paper_name(str(m)) for m in table.index]
    for col, i in (("original_top5", 0), ("foreground_norm", 1), ("background_norm", 2)):
        table[f"{col}_paper"] = [PAPER_FB[n][i] if n else float("nan") for n in names]
        table[f"{col}_diff"] = table[col].round(2) - table[f"{col}_paper"]
    table.insert(0, "paper_name", [n or "" for n in names])
    table.insert(1, "source", [source_of(str(m)) for m in table.index])
    metrics = ("original_top5", "foreground_norm", "background_norm")
    table = table[["paper_name", "source", *(f"{m}{s}" for m in metrics for s in ("", "_paper", "_diff"))]]
    order = {n: i for i, n in enumerate(PAPER_FB)}
    table = table.assign(_order=[order.get(n, len(order)) for n in names])
    return table.sort_values("_order").drop(columns="_order").round(2)


def to_markdown(table: pd.DataFrame) -> str:
    cols = ["paper_name", *[c for c in table.columns if c != "paper_name"]]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for model, row in table[cols].iterrows():
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in row]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_latex(table: pd.DataFrame) -> str:
    cols = [c for c in table.columns if c not in ("paper_name", "source")]
    head = "Model & " + " & ".join(c.replace("_", r"\_") for c in cols) + r" \\"
    body = [" & ".join([(row["paper_name"] or str(model)).replace("_", r"\_"),
                        *(f"{row[c]:.2f}" for c in cols)]) + r" \\" for model, row in table.iterrows()]
    return "\n".join([r"\begin{tabular}{l" + "r" * len(cols) + "}", r"\toprule", head, r"\midrule", *body,
                      r"\bottomrule", r"\end{tabular}"])


#: Token experiments of the paper (ImageNet val, 384 px), top-1/top-5 %: reference notes sections 5.2-5.4.
_TEAR_B16 = [(0.10, 0.50), (0.076, 0.53), (0.158, 0.76), (0.09, 0.57), (0.136, 0.61), (0.22, 0.85), (1.66, 4.60),
             (3.95, 10.07), (8.99, 19.84), (19.89, 37.62), (36.85, 61.50), (71.24, 91.46), (84.20, 97.17)]
_TEAR_B32 = [(0.10, 0.50)] * 7 + [(0.10, 0.52), (11.64, 24.30), (28.33, 48.63), (52.09, 76.02), (72.72, 91.31),
                                  (81.73, 96.13)]
PAPER_TOKENS = {
    "ViT-B16": {
        **{f"cls_isolated_after:{L}": v for L, v in enumerate(_TEAR_B16)},
        **{f"cls_apart_until:{L}": v for L, v in {0: (84.20, 97.17), 1: (83.73, 97.03), 2: (82.98, 96.83),
                                                  4: (83.22, 96.87), 5: (83.03, 96.88), 6: (82.98, 96.79),
                                                  9: (81.10, 95.95), 10: (80.32, 95.57), 11: (78.61, 94.19),
                                                  12: (0.10, 0.50)}.items()},
        "pool:cls": (84.20, 97.17), "pool:mean_patches": (83.40, 96.97), "pool:mean_all": (83.40, 96.97),
        "pool:patch:120": (72.62, 87.50), "intact": (84.20, 97.17),
        "pos:zero": (22.0, None), "pos:redraw": (22.0, None), "shuffle:32": (33.0, None),
    },
    "ViT-B32": {
        **{f"cls_isolated_after:{L}": v for L, v in enumerate(_TEAR_B32)},
        "pool:cls": (81.73, 96.13), "pool:mean_patches": (80.87, 95.80), "pool:mean_all": (80.89, 95.83),
        "intact": (81.73, 96.13), "pos:zero": (58.0, None), "pos:redraw": (58.0, None), "shuffle:32": (54.0, None),
    },
}


def token_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Top-1/top-5/CE per (model, variant) with the paper's values (positional ones are approximate)."""
    acc = accuracy(rows)
    names = {m: paper_name(str(m)) for m in acc["model"].unique()}
    paper = [PAPER_TOKENS.get(names[m] or "", {}).get(c, (None, None)) for m, c in zip(acc["model"], acc["condition"])]
    acc["paper_name"] = [names[m] or "" for m in acc["model"]]
    acc["source"] = [source_of(str(m)) for m in acc["model"]]
    acc["top1_paper"] = [p[0] for p in paper]
    acc["top5_paper"] = [p[1] for p in paper]
    acc["top1_diff"] = acc["top1"].round(2) - pd.to_numeric(acc["top1_paper"])
    return acc.round(3)


#: Unit invariance of ViT-B/16 (net 34), per layer 0..11: mean after/before over units with before > 0
#: (reference notes 3.6, decoded from the paper's tensors; shift from features 0..10 of each layer only).
PAPER_INVARIANCE_B16 = {
    "rotation": [0.41, 0.37, 0.43, 0.48, 0.51, 0.53, 0.58, 0.62, 0.61, 0.58, 0.58, 0.57],
    "shift": [0.96, 0.58, 0.83, 0.91, 0.86, 0.92, 0.97, 0.94, 0.95, 0.93, 0.92, 0.95],
}
