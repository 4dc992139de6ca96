"""Every reported dev figure with its uncertainty, and the report's extra tables.

Small evaluation sets make single numbers misleading: the demo's dev set scores a few dozen
clips, MSP-Podcast's about 30k from a few hundred speakers. Intervals are bootstrap intervals
that resample whole speakers where the speaker is known (clips of one speaker are not
independent) and single clips otherwise (``medusa.evaluation.stats``), seeded from the config's
``evaluation.bootstrap`` block. Here:

- ``DevSet``: the scored dev clips (a consensus in the class set) with truth, speakers, genders and
  attribute ratings, aligned with ``medusa.ensemble.inputs.scored_subsets``'s dev rows;
- ``interval_columns``: dev macro-F1 and accuracy intervals of one system's predictions, or of
  the mean over several systems (the models' average, the meta seeds);
- ``per_class_rows``: per-class F1 (undefined for a class in neither truth nor predictions)
  and macro-F1 of one system, with dev intervals;
- ``unreliable_note``: the ``unreliable_intervals`` cell of every table with intervals: which
  intervals had over 10% undefined resamples (``medusa.evaluation.stats.Interval.unreliable``);
- ``comparisons_table``: paired bootstrap of the soup against the soft vote and the best
  single model (difference, interval, share of resamples the soup wins);
- ``attributes_table``: concordance correlation (the challenge's Task 2 metric) of arousal,
  valence and dominance per model, for the models' mean and for the soup's attribute head;
- ``fairness_table`` / ``fairness_figure``: per-gender macro-F1 and the spread of per-speaker
  accuracy for chosen systems;
- ``calibration_table``: ECE (equal-mass bins, ``calibration_bins``), Brier score and NLL of
  each system's dev posteriors with intervals (``medusa.evaluation.calibration``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from medusa.core.atomic import atomic_write_text
from medusa.core.emotions import ATTRIBUTES, CLASS_LETTERS
from medusa.corpus.partitions import DEV, HOLDOUT
from medusa.ensemble.inputs import BALANCED_HOLDOUT, ensemble_classes, scored_subsets, split_inputs
from medusa.evaluation.calibration import DEFAULT_BINS, calibration_intervals
from medusa.evaluation.stats import (
    Interval,
    accuracy,
    accuracy_interval,
    bootstrap_intervals,
    ccc_interval,
    class_f1_figures,
    macro_f1,
    macro_f1_interval,
    paired_macro_f1,
    per_group_macro_f1,
    per_speaker_accuracy,
    pooled_groups,
    summarise,
)

#: The column of every table with intervals that names the unreliable ones (``unreliable_note``).
UNRELIABLE = "unreliable_intervals"


@dataclass(frozen=True)
class DevSet:
    """The scored dev clips: truth [N], speakers [N], genders [N], attribute ratings [N, 3],
    and the class codes the truth indexes."""

    y: np.ndarray
    speakers: np.ndarray
    genders: np.ndarray
    attributes: np.ndarray
    classes: tuple[str, ...] = CLASS_LETTERS

    @classmethod
    def of(
        cls, y: np.ndarray, rows: pd.DataFrame, classes: Sequence[str] = CLASS_LETTERS
    ) -> DevSet:
        """From the scored dev clips' truth and manifest rows (``scored_subsets``)."""
        return cls(
            y=y,
            speakers=rows["speaker"].astype(str).to_numpy(),
            genders=rows["gender"].fillna("").astype(str).to_numpy(),
            attributes=rows[list(ATTRIBUTES)].to_numpy(dtype=np.float64),
            classes=tuple(classes),
        )


def bootstrap_settings(evaluation: Mapping) -> dict:
    """`evaluation.bootstrap` of the config as keyword arguments of ``medusa.evaluation.stats``."""
    boot = evaluation["bootstrap"]
    return {
        "n_resamples": int(boot["resamples"]),
        "seed": int(boot["seed"]),
        "confidence": float(boot["confidence"]),
    }


def unreliable_note(intervals: Mapping[str, Interval]) -> str:
    """Each named interval with over 10% undefined resamples, e.g. ``"D (312 of 1000 resamples
    undefined)"``, joined by "; "; empty when there is none. A figure undefined on the full data
    has no interval to flag."""
    return "; ".join(
        f"{name} ({i.skipped} of {i.n_resamples} resamples undefined)"
        for name, i in intervals.items()
        if i.unreliable and np.isfinite(i.value)
    )


def interval_columns(
    dev: DevSet, predictions: Sequence[np.ndarray], boot: Mapping
) -> dict[str, float | str]:
    """dev_macro_f1_low/high, dev_accuracy_low/high and the ``unreliable_intervals`` note of
    the mean over `predictions` (one system's dev predictions, or several: the models for
    their average, the seeds for a single meta seed), each resample scoring every system."""

    def mean_figures(y: np.ndarray, *preds: np.ndarray) -> list[float]:
        return [np.mean([macro_f1(y, p) for p in preds]), np.mean([accuracy(y, p) for p in preds])]

    f1, acc = bootstrap_intervals(mean_figures, (dev.y, *predictions), dev.speakers, **boot)
    return {
        "dev_macro_f1_low": f1.low,
        "dev_macro_f1_high": f1.high,
        "dev_accuracy_low": acc.low,
        "dev_accuracy_high": acc.high,
        UNRELIABLE: unreliable_note({"dev_macro_f1": f1, "dev_accuracy": acc}),
    }


def per_class_rows(
    name: str,
    dev: DevSet,
    holdout_y: np.ndarray,
    predictions: Sequence[Mapping[str, np.ndarray]],
    boot: Mapping,
    holdout_in_sample: bool = False,
) -> list[dict]:
    """Per-class F1 and macro-F1 of one system (or the mean over seeds, ``class_f1_figures``):
    a ``dev`` row with intervals, then a ``balanced_holdout`` row (class-balanced, no interval;
    NaN when the system was trained on the holdout).

    `predictions`: one {"dev": ..., "holdout": ...} per system averaged (a model: one).
    """
    columns = [*dev.classes, "macro_f1"]
    dev_preds = [p[DEV] for p in predictions]
    figures = functools.partial(class_f1_figures, n_classes=len(dev.classes))
    intervals = bootstrap_intervals(figures, (dev.y, *dev_preds), dev.speakers, **boot)
    dev_row = {"system": name, "subset": DEV}
    for column, interval in zip(columns, intervals, strict=True):
        dev_row[column] = interval.value
    for column, interval in zip(columns, intervals, strict=True):
        dev_row |= {f"{column}_low": interval.low, f"{column}_high": interval.high}
    dev_row[UNRELIABLE] = unreliable_note(dict(zip(columns, intervals, strict=True)))
    if holdout_in_sample:
        holdout = np.full(len(columns), np.nan)
    else:
        holdout_preds = [p[HOLDOUT] for p in predictions]
        holdout = figures(holdout_y, *holdout_preds, balanced=True)
    holdout_row = {
        "system": name,
        "subset": BALANCED_HOLDOUT,
        **dict(zip(columns, holdout, strict=True)),
    }
    return [dev_row, holdout_row]


def comparisons_table(
    dev: DevSet, soup: np.ndarray, others: Mapping[str, np.ndarray], boot: Mapping
) -> pd.DataFrame:
    """Paired bootstrap of the soup's dev macro-F1 against each of `others` (same resamples)."""
    rows = []
    for name, pred in others.items():
        comparison = paired_macro_f1(dev.y, soup, pred, dev.speakers, **boot)
        rows.append(
            {
                "comparison": f"MEDUSA soup - {name}",
                "difference": comparison.value,
                "low": comparison.low,
                "high": comparison.high,
                "share_soup_better": comparison.share_a_better,
                "resamples": comparison.n_resamples,
                UNRELIABLE: unreliable_note({"difference": comparison}),
            }
        )
    return pd.DataFrame(rows)


def attributes_table(
    model_attributes: Mapping[str, np.ndarray], soup_attributes: np.ndarray, dev: DevSet, boot
) -> pd.DataFrame:
    """CCC of act/val/dom with intervals: each model, the models' mean, the soup's head.

    `model_attributes`: model -> [N, 3] predictions on the dev rows of `dev`.
    """
    systems = {
        **model_attributes,
        "Mean of the models": np.mean(list(model_attributes.values()), axis=0),
        "MEDUSA (soup)": soup_attributes,
    }
    rows = []
    for name, predicted in systems.items():
        row, intervals = {"system": name}, {}
        for j, attribute in enumerate(ATTRIBUTES):
            ccc = ccc_interval(dev.attributes[:, j], predicted[:, j], dev.speakers, **boot)
            row.update({f"{attribute}_ccc": ccc.value, f"{attribute}_low": ccc.low,
                        f"{attribute}_high": ccc.high})  # fmt: skip
            intervals[f"{attribute}_ccc"] = ccc
        rows.append({**row, UNRELIABLE: unreliable_note(intervals)})
    return pd.DataFrame(rows)


def fairness_table(dev: DevSet, systems: Mapping[str, np.ndarray], boot) -> pd.DataFrame:
    """Per system: macro-F1 (with interval) per gender, clips of unknown gender pooled under
    "Unknown" as in ``per_group_macro_f1``, and per-speaker accuracy statistics over the
    speakers with at least 5 scored clips."""
    rows = []
    genders = pooled_groups(dev.genders)
    for name, pred in systems.items():
        for gender in sorted(set(genders), key=str):
            mask = genders == gender
            f1 = macro_f1_interval(dev.y[mask], pred[mask], dev.speakers[mask], **boot)
            rows.append({"system": name, "group": f"gender {gender}", "clips": int(mask.sum()),
                         "macro_f1": f1.value, "low": f1.low, "high": f1.high,
                         UNRELIABLE: unreliable_note({"macro_f1": f1})})  # fmt: skip
        spread = summarise(per_speaker_accuracy(dev.y, pred, dev.speakers, min_clips=5))
        rows.append({"system": name, "group": "per-speaker accuracy", "clips": len(dev.y),
                     **{f"speaker_{k}": v for k, v in spread.items()}, UNRELIABLE: ""})  # fmt: skip
    return pd.DataFrame(rows)


# Equal-mass ECE bins hold at least this many clips: fewer make each bin's accuracy so noisy
# that the ECE mostly measures sampling error (about 0.1 per bin at 20 clips).
MIN_CLIPS_PER_BIN = 20


def calibration_bins(n_clips: int) -> int:
    """ECE bins for `n_clips`: ``medusa.evaluation.calibration.DEFAULT_BINS`` (15), fewer on a small
    set (at least ``MIN_CLIPS_PER_BIN`` clips each), at least one."""
    return max(1, min(DEFAULT_BINS, n_clips // MIN_CLIPS_PER_BIN))


def calibration_table(dev: DevSet, systems: Mapping[str, np.ndarray], boot) -> pd.DataFrame:
    """Per system (name -> dev posteriors [N, C] in `dev`'s row order): ECE, Brier score and
    NLL with speaker-bootstrap intervals, over the same number of bins for every system."""
    bins = calibration_bins(len(dev.y))
    rows = []
    for name, probs in systems.items():
        intervals = calibration_intervals(probs, dev.y, dev.speakers, bins, **boot)
        row = {"system": name, "clips": len(dev.y), "bins": bins}
        for score, interval in intervals.items():
            row.update({score: interval.value, f"{score}_low": interval.low,
                        f"{score}_high": interval.high})  # fmt: skip
        rows.append({**row, UNRELIABLE: unreliable_note(intervals)})
    return pd.DataFrame(rows)


def gender_macro_f1(dev: DevSet, pred: np.ndarray) -> dict:
    """Gender -> (clips, macro-F1), for the headline."""
    return per_group_macro_f1(dev.y, pred, dev.genders)


def fairness_figure(dev: DevSet, systems: Mapping[str, np.ndarray]) -> Figure:
    """Distribution of per-speaker dev accuracy (speakers with >= 5 clips) per system."""
    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.subplots()
    values = [per_speaker_accuracy(dev.y, p, dev.speakers, min_clips=5) for p in systems.values()]
    if all(len(v) for v in values):
        ax.boxplot(values, tick_labels=list(systems), showmeans=True)
    else:
        ax.text(0.5, 0.5, "no speaker with 5 scored dev clips", ha="center", transform=ax.transAxes)
    ax.set(ylabel="accuracy per speaker", ylim=(0, 1))
    ax.set_title("Spread over dev speakers (>= 5 clips each)")
    return fig


def ablation_table(
    posterior_paths: Mapping[str, str], manifest: pd.DataFrame, variants: Mapping, boot: Mapping
) -> pd.DataFrame:
    """The paper's Table 2: per ablated model, the full model and each ablation on dev.

    `posterior_paths`: model name -> labelled posteriors file, for every ablated model and
    every variant; `variants`: variant name -> (ablated model, switch)
    (``medusa.core.config.ablation_variants``).
    """
    names = list(posterior_paths)
    paths = [posterior_paths[n] for n in names]
    X, y, rows = scored_subsets(paths, manifest)[DEV]
    classes = ensemble_classes(paths)
    dev = DevSet.of(y, rows, classes)
    probs, _ = split_inputs(X, len(classes))
    pred = {name: p.argmax(axis=1) for name, p in zip(names, probs, strict=True)}
    rows = []
    for base in dict.fromkeys(b for b, _ in variants.values()):
        full = _ablation_row(base, "full DeepSER", pred[base], dev, boot)
        rows.append(full)
        for variant, (of, switch) in variants.items():
            if of != base:
                continue
            name = f"w/o {switch.replace('_', ' ')}"
            rows.append(_ablation_row(base, name, pred[variant], dev, boot, full, pred[base]))
    table = pd.DataFrame(rows)
    return table[[c for c in table.columns if c != UNRELIABLE] + [UNRELIABLE]]


def _ablation_row(model, variant, pred, dev: DevSet, boot, full=None, full_pred=None) -> dict:
    """One row of Table 2; with the full model's row and predictions, the change against it."""
    f1 = macro_f1_interval(dev.y, pred, dev.speakers, **boot)
    acc = accuracy_interval(dev.y, pred, dev.speakers, **boot)
    intervals = {"macro_f1": f1, "accuracy": acc}
    row = {"model": model, "variant": variant, "macro_f1": f1.value, "macro_f1_low": f1.low,
           "macro_f1_high": f1.high, "accuracy": acc.value, "accuracy_low": acc.low,
           "accuracy_high": acc.high}  # fmt: skip
    if full is not None:
        change = paired_macro_f1(dev.y, pred, full_pred, dev.speakers, **boot)
        intervals["difference"] = change
        row.update(relative_change=f1.value / full["macro_f1"] - 1 if full["macro_f1"] else np.nan,
                   difference=change.value, difference_low=change.low,
                   difference_high=change.high)  # fmt: skip
    return row | {UNRELIABLE: unreliable_note(intervals)}


SOUP_SCALED = "Meta-classifier (soup), temperature-scaled"


# --------------------------------------------------------------------------------------------
# Files


def _read_tsv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"report table not found: {path} (run build_report first)")
    return pd.read_csv(
        path,
        sep="\t",
        dtype={c: str for c in ("id", "note", "features", UNRELIABLE)},
        keep_default_na=False,
        na_values=[""],
    ).fillna({"note": "", "id": "", "features": "", UNRELIABLE: ""})


def _write_tsv(table: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, table.to_csv(sep="\t", index=False, float_format="%.4f", na_rep=""))
