"""The paper's comparison tables and plots, rebuilt from per-image ablation rows.

Published numbers are from ../shared/reference/paper-method.md section 5.1 (the paper's Table, which
its repository's FBAcc.txt reproduces); "normalized" = 100 x top5(masked) / top5(original).
"""

from __future__ import annotations

import pandas as pd

from sweep.models.zoo import get_entry

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
    metrics = ("original_top5", "foreground_norm", "background_norm")
    table = table[["paper_name", *(f"{m}{s}" for m in metrics for s in ("", "_paper", "_diff"))]]
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
    cols = [c for c in table.columns if c != "paper_name"]
    head = "Model & " + " & ".join(c.replace("_", r"\_") for c in cols) + r" \\"
    body = [" & ".join([(row["paper_name"] or str(model)).replace("_", r"\_"),
                        *(f"{row[c]:.2f}" for c in cols)]) + r" \\" for model, row in table.iterrows()]
    return "\n".join([r"\begin{tabular}{l" + "r" * len(cols) + "}", r"\toprule", head, r"\midrule", *body,
                      r"\bottomrule", r"\end{tabular}"])
