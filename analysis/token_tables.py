"""The paper's token-experiment tables and the accuracy-vs-L plot, from ablation results.

    .venv/bin/python analysis/token_tables.py --results results/tokens --out analysis/out

Reads `<results>/ablations/experiment=tokens`; writes tokens.md and tokens.csv (top-1/top-5/CE per model
and variant, with the paper's values where it reports them; positional ones are its approximate
docstring numbers) and tokens_vs_L.png (top-1 vs L for CLS isolated after L and CLS kept apart until L).
"""

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from sweep.cli import guarded  # noqa: E402
from sweep.views.reports import read_ablation_rows, token_table  # noqa: E402


def plot(table: pd.DataFrame, path: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, kind, title in ((axes[0], "cls_isolated_after", "only CLS continues after block L"),
                            (axes[1], "cls_apart_until", "CLS kept apart for blocks [0, L)")):
        part = table[table["condition"].str.startswith(kind + ":")].copy()
        part["L"] = part["condition"].str.split(":").str[1].astype(int)
        for model, g in part.groupby("model", observed=True):
            g = g.sort_values("L")
            line, = ax.plot(g["L"], g["top1"], marker="o", label=f"{model} (ours)")
            if g["top1_paper"].notna().any():
                ax.plot(g["L"], g["top1_paper"], "x--", color=line.get_color(), label=f"{g['paper_name'].iloc[0]} (paper)")
        ax.set_title(title)
        ax.set_xlabel("block L")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 (%)")
    axes[0].legend(fontsize=7)
    fig.suptitle("ImageNet top-1 when the CLS token is isolated from the patch tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=300)
    fig.savefig(os.path.splitext(path)[0] + ".pdf")  # vector, for print
    plt.close(fig)


def run(args) -> int:
    table = token_table(read_ablation_rows(args.results, "tokens"))
    os.makedirs(args.out, exist_ok=True)
    table.to_csv(os.path.join(args.out, "tokens.csv"), index=False)
    with open(os.path.join(args.out, "tokens.md"), "w") as fh:
        cols = list(table.columns)
        fh.write("| " + " | ".join(cols) + " |\n" + "|---" * len(cols) + "|\n")
        for _, r in table.iterrows():
            fh.write("| " + " | ".join("" if pd.isna(v) else str(v) for v in r) + " |\n")
    plot(table, os.path.join(args.out, "tokens_vs_L.png"))
    print(table.to_string(index=False))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", required=True)
    parser.add_argument("--out", default="analysis/out")
    return guarded("token_tables.py", run, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
