"""The evaluation report (docs/method.md, section 7): paper-shaped tables, figures and a short headline.

Everything is recomputed from the posteriors files and the heads' checkpoints, on the same
scored sets as the ensemble stages (``medusa.ensemble.evaluation_data``): ``dev`` (8 consensus
classes, X/O excluded) and the balanced holdout. Files written to ``out_dir``:

- ``table1.tsv``: paper Table 1: each DeepSER model's macro-F1 and accuracy, then the rows
  Average DeepSER, Top DeepSER (best balanced-holdout macro-F1) and MEDUSA (soup).
- ``table3.tsv``: paper Table 3: majority voting, soft voting, meta-classifier (single seed,
  mean and std over seeds) and meta-classifier (soup).
- ``per_class_f1.tsv``: per-class F1 of every system on both scored sets.
- ``confusion.png``: the soup's row-normalised confusion matrix on dev.
- ``models.png``: each model's dev macro-F1 against soft voting, the soup and chance.
- ``headline.md``: Table 3 and the main figures in a few lines (``format_headline``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from medusa.atomic import atomic_write, atomic_write_text
from medusa.emotions import CLASS_LETTERS, NUM_CLASSES
from medusa.ensemble import (
    BALANCED_HOLDOUT,
    EnsembleError,
    evaluation_data,
    load_head,
    majority_vote,
    posterior_model_name,
    predict_probs,
    reorder_models,
    single_threaded,
    soft_vote,
    split_inputs,
)
from medusa.manifest import read_manifest
from medusa.metrics import classification_metrics
from medusa.partitions import DEV, HOLDOUT

log = logging.getLogger(__name__)

SCORED = (DEV, BALANCED_HOLDOUT)
METRICS = ("macro_f1", "micro_f1", "accuracy")
CHANCE_F1 = 1.0 / NUM_CLASSES
TECHNIQUES = (
    "Majority voting",
    "Soft voting",
    "Meta-classifier (single)",
    "Meta-classifier (soup)",
)


@single_threaded
def build_report(
    posterior_paths: Mapping[str, str | os.PathLike],
    meta_seed_dirs: Sequence[str | os.PathLike],
    soup_dir: str | os.PathLike,
    manifest_path: str | os.PathLike,
    balanced_holdout_seed: int,
    out_dir: str | os.PathLike,
    model_features: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, pd.DataFrame]:
    """Write the report files (module docstring) and return {"table1", "table3", "per_class"}.

    `posterior_paths` maps model name -> posteriors file, in Table 1 order; `model_features`
    optionally maps model name -> the feature sets it fuses (shown in Table 1).
    """
    out_dir = Path(out_dir)
    names = list(posterior_paths)
    for name, path in posterior_paths.items():
        if posterior_model_name(path) != name:
            raise EnsembleError(f"{path}: holds model {posterior_model_name(path)!r}, not {name!r}")
    if not meta_seed_dirs:
        raise EnsembleError("build_report: no meta-classifier seed directories given")
    data = evaluation_data(
        list(posterior_paths.values()), read_manifest(manifest_path), balanced_holdout_seed
    )

    # Every system's scores on every scored set: the models, the votes, the heads.
    per_model, votes = _ensemble_predictions(names, data)
    singles = [_head_predictions(d, names, data)[0] for d in meta_seed_dirs]
    soup, soup_info = _head_predictions(soup_dir, names, data)
    model_scores = {name: _score(per_model[name], data) for name in names}
    vote_scores = {k: _score(v, data) for k, v in votes.items()}
    single_scores = [_score(p, data) for p in singles]
    soup_scores = _score(soup, data)

    # Tables and figures.
    table1 = _table1(names, model_scores, soup_scores, soup_info, model_features or {})
    table3 = _table3(vote_scores, single_scores, soup_scores)
    per_class = _per_class(model_scores, vote_scores, single_scores, soup_scores)
    _write_tsv(table1, out_dir / "table1.tsv")
    _write_tsv(table3, out_dir / "table3.tsv")
    _write_tsv(per_class, out_dir / "per_class_f1.tsv")
    _save_figure(_confusion_figure(soup_scores[DEV]), out_dir / "confusion.png")
    _save_figure(
        _models_figure(names, model_scores, vote_scores["Soft voting"], soup_scores),
        out_dir / "models.png",
    )
    atomic_write_text(out_dir / "headline.md", format_headline(out_dir))
    log.info("report: %d models, %d meta seeds -> %s", len(names), len(meta_seed_dirs), out_dir)
    return {"table1": table1, "table3": table3, "per_class": per_class}


# --------------------------------------------------------------------------------------------
# Predictions and scores

Predictions = dict[str, np.ndarray]  # scored set -> predicted class indices


def _ensemble_predictions(
    names: Sequence[str], data: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> tuple[dict[str, Predictions], dict[str, Predictions]]:
    """({model: predictions}, {vote technique: predictions}) on every scored set."""
    per_model: dict[str, Predictions] = {name: {} for name in names}
    votes: dict[str, Predictions] = {"Majority voting": {}, "Soft voting": {}}
    for subset in SCORED:
        probs, _ = split_inputs(data[subset][0])
        for name, p in zip(names, probs, strict=True):
            per_model[name][subset] = p.argmax(axis=1)
        votes["Majority voting"][subset] = majority_vote(list(probs))
        votes["Soft voting"][subset] = soft_vote(list(probs)).argmax(axis=1)
    return per_model, votes


def _head_predictions(
    directory: str | os.PathLike,
    names: Sequence[str],
    data: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> tuple[Predictions, dict]:
    """(a meta-classifier head's predictions on every scored set, its checkpoint info)."""
    model, info = load_head(directory)
    preds = {
        s: predict_probs(model, reorder_models(data[s][0], names, info["models"])).argmax(1)
        for s in SCORED
    }
    return preds, info


def _score(
    preds: Mapping[str, np.ndarray], data: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, dict]:
    return {s: classification_metrics(data[s][1], preds[s]) for s in SCORED}


# --------------------------------------------------------------------------------------------
# Tables


def _table1(names, model_scores, soup_scores, soup_info, features) -> pd.DataFrame:
    """Paper Table 1: per-model macro-F1 and accuracy, then Average, Top and the soup."""

    def row(id_, model, feats, scores, note=""):
        return {
            "id": id_,
            "model": model,
            "features": feats,
            **{f"{s}_{m}": scores[s][m] for s in SCORED for m in ("macro_f1", "accuracy")},
            "note": note,
        }

    rows = [
        row(str(i), name, " + ".join(features.get(name, [])), model_scores[name])
        for i, name in enumerate(names, start=1)
    ]
    mean = {
        s: {m: float(np.mean([model_scores[n][s][m] for n in names])) for m in METRICS}
        for s in SCORED
    }
    rows.append(row("", "Average DeepSER", "", mean, f"mean of {len(names)} models"))
    # The top model is chosen on the balanced holdout (model selection), reported on both.
    top = max(names, key=lambda n: model_scores[n][BALANCED_HOLDOUT]["macro_f1"])
    rows.append(row("", "Top DeepSER", "", model_scores[top], f"{top} (best balanced holdout F1)"))
    note = f"meta-classifier soup of {len(soup_info.get('seeds', []))} seeds"
    if soup_info.get("train_on") == HOLDOUT:
        note += "; trained on holdout, so its balanced holdout figures are in-sample"
    rows.append(row("", "MEDUSA (soup)", "", soup_scores, note))
    return pd.DataFrame(rows)


def _table3(vote_scores, single_scores, soup_scores) -> pd.DataFrame:
    """Paper Table 3: the four ways of combining the ensemble, mean (and std) over runs."""
    runs = {
        "Majority voting": [vote_scores["Majority voting"]],
        "Soft voting": [vote_scores["Soft voting"]],
        "Meta-classifier (single)": single_scores,
        "Meta-classifier (soup)": [soup_scores],
    }
    rows = []
    for technique in TECHNIQUES:
        scores = runs[technique]
        row = {"technique": technique, "runs": len(scores)}
        for s in SCORED:
            for m in METRICS:
                values = [sc[s][m] for sc in scores]
                row[f"{s}_{m}"] = float(np.mean(values))
                # Spread over seeds only means something for the single-seed row.
                row[f"{s}_{m}_std"] = float(np.std(values)) if len(values) > 1 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _per_class(model_scores, vote_scores, single_scores, soup_scores) -> pd.DataFrame:
    systems = {
        **model_scores,
        **vote_scores,
        "Meta-classifier (single, mean)": {
            s: {
                "per_class_f1": {
                    c: float(np.mean([sc[s]["per_class_f1"][c] for sc in single_scores]))
                    for c in CLASS_LETTERS
                },
                "macro_f1": float(np.mean([sc[s]["macro_f1"] for sc in single_scores])),
            }
            for s in SCORED
        },
        "Meta-classifier (soup)": soup_scores,
    }
    return pd.DataFrame(
        [
            {
                "system": name,
                "subset": s,
                **scores[s]["per_class_f1"],
                "macro_f1": scores[s]["macro_f1"],
            }
            for s in SCORED
            for name, scores in systems.items()
        ]
    )


# --------------------------------------------------------------------------------------------
# Figures


def _confusion_figure(dev_scores: Mapping) -> Figure:
    counts = np.asarray(dev_scores["confusion"], dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    fig = Figure(figsize=(5.5, 4.8), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(normalised, vmin=0, vmax=1, cmap="Blues")
    for i in range(NUM_CLASSES):
        for j in range(NUM_CLASSES):
            ax.text(
                j,
                i,
                f"{normalised[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if normalised[i, j] > 0.5 else "black",
            )
    ticks = range(NUM_CLASSES)
    ax.set(xticks=ticks, yticks=ticks, xticklabels=CLASS_LETTERS, yticklabels=CLASS_LETTERS)
    ax.set(xlabel="predicted", ylabel="consensus (true)")
    ax.set_title(f"MEDUSA soup on dev (macro-F1 {dev_scores['macro_f1']:.3f}), rows sum to 1")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def _models_figure(names, model_scores, soft_scores, soup_scores) -> Figure:
    values = [model_scores[n][DEV]["macro_f1"] for n in names]
    fig = Figure(figsize=(max(6.5, 0.45 * len(names) + 4.0), 4.2), layout="constrained")
    ax = fig.subplots()
    ax.bar(range(len(names)), values, color="#8fa8c8", label="DeepSER model")
    lines = (
        (soup_scores[DEV]["macro_f1"], "-", "#c0392b", "MEDUSA soup"),
        (soft_scores[DEV]["macro_f1"], "--", "#2c3e50", "soft voting"),
        (CHANCE_F1, ":", "grey", "chance (1/8)"),
    )
    for value, style, color, label in lines:
        ax.axhline(value, linestyle=style, color=color, label=f"{label} {value:.3f}")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("macro-F1 on dev (8 classes)")
    ax.set_ylim(0, min(1.0, max([*values, soup_scores[DEV]["macro_f1"]]) * 1.25 + 0.02))
    ax.set_title("Each DeepSER model vs the ensemble (dev)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


# --------------------------------------------------------------------------------------------
# Headline


def format_headline(out_dir: str | os.PathLike) -> str:
    """A short markdown summary rendered from the report's table1.tsv and table3.tsv."""
    out_dir = Path(out_dir)
    table1 = _read_tsv(out_dir / "table1.tsv")
    table3 = _read_tsv(out_dir / "table3.tsv")
    models = table1[table1["id"] != ""]
    best = models.loc[models["balanced_holdout_macro_f1"].idxmax(), "model"]
    by_model = table1.set_index("model")
    top, soup = by_model.loc["Top DeepSER"], by_model.loc["MEDUSA (soup)"]
    average = by_model.loc["Average DeepSER"]

    def cell(row, key):
        std = row.get(f"{key}_std")
        return f"{row[key]:.3f}" + (f" ± {std:.3f}" if pd.notna(std) else "")

    lines = [
        "# MEDUSA: results",
        "",
        "Scored on `dev` (8 consensus classes, X/O excluded) and on the balanced holdout.",
        "",
        "| Technique | dev F1 | dev Acc | bal. holdout F1 | bal. holdout Acc |",
        "|---|---|---|---|---|",
    ]
    for _, row in table3.iterrows():
        cells = [cell(row, f"{s}_{m}") for s in SCORED for m in ("macro_f1", "accuracy")]
        lines.append(f"| {row['technique']} | " + " | ".join(cells) + " |")
    gain = (soup["dev_macro_f1"] / top["dev_macro_f1"] - 1) * 100 if top["dev_macro_f1"] else 0
    lines += [
        "",
        f"- Best single DeepSER model ({best}, chosen on the balanced "
        f"holdout): dev macro-F1 {top['dev_macro_f1']:.3f}, accuracy {top['dev_accuracy']:.3f}.",
        f"- Average of the {len(models)} DeepSER models: dev macro-F1 "
        f"{average['dev_macro_f1']:.3f}.",
        f"- MEDUSA soup: dev macro-F1 {soup['dev_macro_f1']:.3f}, accuracy "
        f"{soup['dev_accuracy']:.3f} ({gain:+.1f}% relative to the best single model).",
        f"- Chance level: macro-F1 {CHANCE_F1:.3f} (1/8, uniform guessing on balanced classes).",
        f"- Soup: {soup['note']}.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Files


def _read_tsv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"report table not found: {path} (run build_report first)")
    return pd.read_csv(
        path, sep="\t", dtype={"id": str, "note": str}, keep_default_na=False, na_values=[""]
    ).fillna({"note": "", "id": "", "features": ""})


def _write_tsv(table: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, table.to_csv(sep="\t", index=False, float_format="%.4f", na_rep=""))


def _save_figure(fig: Figure, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
