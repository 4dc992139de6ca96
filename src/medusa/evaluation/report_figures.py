"""The report's figures: confusion matrices and the per-model comparison."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from medusa.core.atomic import atomic_write
from medusa.corpus.partitions import DEV

# --------------------------------------------------------------------------------------------
# Figures


def _confusion_figure(dev_scores: Mapping, classes: Sequence[str]) -> Figure:
    counts = np.asarray(dev_scores["confusion"], dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    fig = Figure(figsize=(5.5, 4.8), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(normalised, vmin=0, vmax=1, cmap="Blues")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{normalised[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if normalised[i, j] > 0.5 else "black",
            )
    ticks = range(len(classes))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=classes, yticklabels=classes)
    ax.set(xlabel="predicted", ylabel="consensus (true)")
    ax.set_title(f"MEDUSA soup on dev (macro-F1 {dev_scores['macro_f1']:.3f}), rows sum to 1")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def _models_figure(table1: pd.DataFrame, main: Mapping, classes: Sequence[str]) -> Figure:
    """Each model's dev macro-F1 with its interval, against the soft vote, soup and chance."""
    models = table1[table1["id"] != ""]
    soup = table1[table1["model"] == "MEDUSA (soup)"].iloc[0]
    values = models["dev_macro_f1"].to_numpy()
    fig = Figure(figsize=(max(6.5, 0.45 * len(models) + 4.0), 4.2), layout="constrained")
    ax = fig.subplots()
    ax.bar(range(len(models)), values, color="#8fa8c8", label="DeepSER model")
    # Drawn from its bounds, not as +- errors: a percentile interval of a resampled F1 need
    # not contain the full-data figure.
    ax.vlines(range(len(models)), models["dev_macro_f1_low"], models["dev_macro_f1_high"],
              color="black", linewidth=1.2, label="95% interval")  # fmt: skip
    ax.axhspan(soup["dev_macro_f1_low"], soup["dev_macro_f1_high"], color="#c0392b", alpha=0.12)
    soft = main["vote_scores"]["Soft voting"][DEV]["macro_f1"]
    for value, style, color, label in (
        (soup["dev_macro_f1"], "-", "#c0392b", "MEDUSA soup (band: interval)"),
        (soft, "--", "#2c3e50", "soft voting"),
        (1.0 / len(classes), ":", "grey", f"chance (1/{len(classes)})"),
    ):
        ax.axhline(value, linestyle=style, color=color, label=label)
    ax.set_xticks(range(len(models)), models["id"].tolist())
    ax.set_xlabel("model (Table 1 id)")
    ax.set_ylabel(f"macro-F1 on dev ({len(classes)} classes)")
    ax.set_ylim(0, min(1.0, max([*models["dev_macro_f1_high"], soup["dev_macro_f1_high"]]) + 0.05))
    ax.set_title("Each DeepSER model vs the ensemble (dev)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _save_figure(fig: Figure, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
