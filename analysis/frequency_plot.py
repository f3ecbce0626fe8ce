"""Accuracy vs cutoff under low- and high-pass filtering, ViTs vs CNNs, from ablation results.

    .venv/bin/python analysis/frequency_plot.py --results results/ablations-run --out analysis/out

Reads `<results>/ablations/experiment=frequency` and writes frequency.png (top-1 vs Gaussian sigma and
vs ideal-filter radius, low-pass and high-pass; ViTs solid, CNNs dashed) and frequency.csv.
"""

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from sweep.cli import guarded  # noqa: E402
from sweep.models.zoo import REGISTRY, get_entry  # noqa: E402
from sweep.views.reports import accuracy, read_ablation_rows  # noqa: E402


def curves(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, band, kind, cutoff) with top-1/top-5; 'original' is cutoff 0 of no filter."""
    acc = accuracy(rows)
    parts = acc["condition"].str.split("_", expand=True).reindex(columns=range(3))
    acc["band"], acc["kind"], acc["cutoff"] = parts[0], parts[1], pd.to_numeric(parts[2], errors="coerce")
    return acc


def plot(acc: pd.DataFrame, path: str) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey=True)
    for (i, band), (j, kind) in [((i, b), (j, k)) for i, b in enumerate(("lowpass", "highpass"))
                                 for j, k in enumerate(("gauss", "fft"))]:
        ax = axes[i][j]
        for model, g in acc[(acc["band"] == band) & (acc["kind"] == kind)].groupby("model", observed=True):
            g = g.sort_values("cutoff")
            family = get_entry(str(model)).family if str(model) in REGISTRY else "custom"
            style = "--" if family in ("cnn", "clip_resnet") else "-"
            ax.plot(g["cutoff"], g["top1"], style, marker="o", label=str(model))
        ax.set_title(f"{band}, {'Gaussian' if kind == 'gauss' else 'ideal (FFT)'} filter")
        ax.set_xlabel("Gaussian sigma (px)" if kind == "gauss" else "cut-off radius (x Nyquist)")
        ax.set_xscale("log", base=2)
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.suptitle("ImageNet accuracy under frequency filtering (ViTs solid, CNNs dashed)")
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    fig.savefig(path, dpi=300)
    fig.savefig(os.path.splitext(path)[0] + ".pdf")  # vector, for print
    plt.close(fig)


def run(args) -> int:
    acc = curves(read_ablation_rows(args.results, "frequency"))
    os.makedirs(args.out, exist_ok=True)
    acc.to_csv(os.path.join(args.out, "frequency.csv"), index=False)
    plot(acc, os.path.join(args.out, "frequency.png"))
    print(f"wrote {os.path.join(args.out, 'frequency.png')} and frequency.csv ({acc['model'].nunique()} models)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", required=True)
    parser.add_argument("--out", default="analysis/out")
    return guarded("frequency_plot.py", run, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
