"""The evaluation report (docs/method.md, section 7): paper-shaped tables with intervals,
figures and a short headline.

Everything is recomputed from the posteriors files and the heads' checkpoints, on the same
scored sets as the ensemble stages (``medusa.ensemble.inputs.evaluation_data``): ``dev`` (the
consensus classes of the run's class set, X/O excluded) and the class-balanced selection holdout.
Dev figures carry 95% bootstrap intervals that resample speakers (``medusa.evaluation.figures``).
Files in ``out_dir``:

- ``table1.tsv``: paper Table 1: each DeepSER model's macro-F1 and accuracy, then the rows
  Average DeepSER (its interval: of the models' mean on each resample), Top DeepSER (best
  class-balanced holdout macro-F1) and MEDUSA (soup).
- ``table3.tsv``: paper Table 3 for the whole ensemble and each top-k ensemble: majority
  voting, soft voting, meta-classifier (single seed: mean and std over seeds, interval of the
  seeds' mean) and its soup.
- ``comparisons.tsv``: paired bootstrap of the soup against the soft vote and the best model.
- ``attributes.tsv``: concordance correlation of arousal, valence, dominance (Task 2's metric).
- ``fairness.tsv``, ``fairness.png``: per-gender macro-F1, spread of per-speaker accuracy.
- ``per_class_f1.tsv``: per-class F1 of every system on both scored sets (empty for a class
  in neither truth nor predictions; macro-F1 over the classes present), dev with intervals.
- ``confusion.png``: the soup's row-normalised confusion matrix on dev.
- ``models.png``: each model's dev macro-F1 with its interval, against soft voting, the soup
  and chance.
- ``calibration.tsv`` (Table C), ``calibration.png``: ECE, Brier score and NLL on dev with
  intervals of each model, the soft vote, the product of experts, the soup and the soup after
  temperature scaling (``medusa.evaluation.temperature``: T fitted on the meta clips, never dev);
  the reliability diagram of the soft vote, the best model and the soup before and after.
- ``headline.md``: Table 3 and the main comparisons in a few lines (``format_headline``).

Every table with intervals has an ``unreliable_intervals`` column naming the intervals with
over 10% undefined resamples (``medusa.evaluation.figures.unreliable_note``); the headline marks
them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medusa.core.atomic import atomic_write_text
from medusa.core.emotions import NUM_CLASSES
from medusa.core.manifest import read_manifest
from medusa.core.metrics import classification_metrics
from medusa.corpus.partitions import DEV, HOLDOUT
from medusa.ensemble.inputs import (
    BALANCED_HOLDOUT,
    SCORED_VIEWS,
    EnsembleError,
    ensemble_classes,
    posterior_model_name,
    reorder_models,
    scored_subsets,
    split_inputs,
)
from medusa.ensemble.meta import head_outputs, load_head, predict_probs
from medusa.ensemble.meta_training import in_sample_views, single_threaded
from medusa.ensemble.votes import majority_vote, product_of_experts, soft_vote
from medusa.evaluation.calibration import (
    reliability_curves,
    temperature_scale,
    write_reliability_diagram,
)
from medusa.evaluation.figures import (
    SOUP_SCALED,
    UNRELIABLE,
    DevSet,
    _write_tsv,
    attributes_table,
    bootstrap_settings,
    calibration_table,
    comparisons_table,
    fairness_figure,
    fairness_table,
    interval_columns,
    per_class_rows,
)
from medusa.evaluation.headline import format_headline
from medusa.evaluation.report_figures import _confusion_figure, _models_figure, _save_figure
from medusa.evaluation.temperature import read_temperature

log = logging.getLogger(__name__)

SCORED = (DEV, BALANCED_HOLDOUT)
METRICS = ("macro_f1", "micro_f1", "accuracy")
CHANCE_F1 = 1.0 / NUM_CLASSES  # MSP-Podcast's 8 classes; ``chance_f1`` for a class set
# "Product of experts" is the meta-classifier's start and its "stay at the vote" point.
TECHNIQUES = (
    "Majority voting",
    "Soft voting",
    "Product of experts",
    "Meta-classifier (single)",
    "Meta-classifier (soup)",
)


@dataclass(frozen=True)
class Ensemble:
    """One way of combining models for Table 3: all of them, or the top k by selection score."""

    label: str
    seed_dirs: Sequence[str | os.PathLike]
    soup_dir: str | os.PathLike


@single_threaded
def build_report(
    posterior_paths: Mapping[str, str | os.PathLike],
    meta_seed_dirs: Sequence[str | os.PathLike],
    soup_dir: str | os.PathLike,
    manifest_path: str | os.PathLike,
    evaluation: Mapping,
    out_dir: str | os.PathLike,
    model_features: Mapping[str, Sequence[str]] | None = None,
    top_ensembles: Sequence[Ensemble] = (),
    temperature: str | os.PathLike | None = None,
) -> dict[str, pd.DataFrame]:
    """Write the report files (module docstring) and return its tables by name.

    `posterior_paths` maps model name -> posteriors file, in Table 1 order; `model_features`
    optionally maps model name -> the feature sets it fuses (shown in Table 1);
    `top_ensembles`: the top-k ensembles' seeds and soups, scored in Table 3 too;
    `temperature`: the soup's ``temperature.json`` (rule temperature), for Table C's
    temperature-scaled row (without it Table C has no such row).
    """
    out_dir = Path(out_dir)
    names = list(posterior_paths)
    for name, path in posterior_paths.items():
        if posterior_model_name(path) != name:
            raise EnsembleError(f"{path}: holds model {posterior_model_name(path)!r}, not {name!r}")
    if not meta_seed_dirs:
        raise EnsembleError("build_report: no meta-classifier seed directories given")
    manifest = read_manifest(manifest_path)
    scored = scored_subsets(list(posterior_paths.values()), manifest)
    classes = ensemble_classes(list(posterior_paths.values()))
    data = {subset: (X, y) for subset, (X, y, _) in scored.items()}
    dev = DevSet.of(*scored[DEV][1:], classes)
    boot = bootstrap_settings(evaluation)

    # Every system's predictions and scores: the models, then each ensemble's votes and heads.
    per_model = _model_predictions(names, data, classes)
    model_scores = {name: _score(per_model[name], data, classes) for name in names}
    whole = Ensemble(f"all {len(names)} models", meta_seed_dirs, soup_dir)
    systems = {e.label: _combine(e, names, data, classes) for e in [whole, *top_ensembles]}
    main = systems[whole.label]
    fairness = _fairness_systems(names, per_model, model_scores, main)
    calibration, curves = _calibration(names, data, model_scores, main, temperature, dev, boot)

    # Tables, figures and the headline.
    tables = {
        "table1": _table1(names, per_model, model_scores, main, model_features or {}, dev, boot),
        "table3": pd.concat([_table3(label, s, dev, boot) for label, s in systems.items()]),
        "per_class_f1": _per_class(names, per_model, main, dev, data[HOLDOUT][1], boot),
        "comparisons": _comparisons(names, per_model, model_scores, main, dev, boot),
        "attributes": _attributes(names, data, main, dev, boot),
        "fairness": fairness_table(dev, fairness, boot),
        "meta_selection": _selection_table(systems),
        "calibration": calibration,
    }
    for name, table in tables.items():
        _write_tsv(table, out_dir / f"{name}.tsv")
    _save_figure(_confusion_figure(main["soup_scores"][DEV], classes), out_dir / "confusion.png")
    _save_figure(_models_figure(tables["table1"], main, classes), out_dir / "models.png")
    _save_figure(fairness_figure(dev, fairness), out_dir / "fairness.png")
    title = f"Reliability on dev ({int(calibration['bins'].iloc[0])} equal-mass bin(s))"
    write_reliability_diagram(out_dir / "calibration.png", curves, title)
    atomic_write_text(out_dir / "headline.md", format_headline(out_dir))
    log.info("report: %d models, %d ensembles -> %s", len(names), len(systems), out_dir)
    return tables


# --------------------------------------------------------------------------------------------
# Predictions and scores

Predictions = dict[str, np.ndarray]  # scored set -> predicted class indices


def _model_predictions(
    names: Sequence[str],
    data: Mapping[str, tuple[np.ndarray, np.ndarray]],
    classes: Sequence[str],
) -> dict[str, Predictions]:
    """{model: its argmax predictions on every scored set}."""
    per_model: dict[str, Predictions] = {name: {} for name in names}
    for subset in data:
        probs, _ = split_inputs(data[subset][0], len(classes))
        for name, p in zip(names, probs, strict=True):
            per_model[name][subset] = p.argmax(axis=1)
    return per_model


def _combine(
    ensemble: Ensemble,
    names: Sequence[str],
    data: Mapping[str, tuple[np.ndarray, np.ndarray]],
    classes: Sequence[str],
) -> dict:
    """One ensemble's votes, meta seeds and soup: predictions and scores on every scored set.

    The models are those its soup was trained on (all, or the top k); a head's figures on
    the clips it trained on are not an evaluation and are left out (NaN).
    """
    head, info = load_head(ensemble.soup_dir)
    soup = _predictions_of(head, info, names, data)
    own = {s: (reorder_models(X, names, info["models"]), y) for s, (X, y) in data.items()}
    votes: dict[str, Predictions] = {k: {} for k in TECHNIQUES if "Meta" not in k}
    for subset, (X, _) in own.items():
        probs, _ = split_inputs(X, len(classes))
        votes["Majority voting"][subset] = majority_vote(list(probs))
        votes["Soft voting"][subset] = soft_vote(list(probs)).argmax(axis=1)
        votes["Product of experts"][subset] = product_of_experts(list(probs)).argmax(axis=1)
    singles = [_head_predictions(d, names, data)[0] for d in ensemble.seed_dirs]
    seen = in_sample_views(info["train_on"])
    return {
        "info": info,
        "head": head,
        "soup": soup,
        "singles": singles,
        "votes": votes,
        "vote_scores": {k: _score(v, data, classes) for k, v in votes.items()},
        "single_scores": [_score(p, data, classes, seen) for p in singles],
        "soup_scores": _score(soup, data, classes, seen),
    }


def _head_predictions(
    directory: str | os.PathLike,
    names: Sequence[str],
    data: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> tuple[Predictions, dict]:
    """(a meta-classifier head's predictions on every scored set, its checkpoint info)."""
    model, info = load_head(directory)
    return _predictions_of(model, info, names, data), info


def _predictions_of(model, info: Mapping, names: Sequence[str], data: Mapping) -> Predictions:
    """A loaded head's predictions on every scored set (its models picked out of `data`)."""
    return {
        s: predict_probs(model, reorder_models(data[s][0], names, info["models"])).argmax(1)
        for s in data
    }


def _score(
    preds: Mapping[str, np.ndarray],
    data: Mapping[str, tuple[np.ndarray, np.ndarray]],
    classes: Sequence[str],
    in_sample: Sequence[str] = (),
) -> dict[str, dict]:
    """Metrics of every scored view (SCORED_VIEWS); views in `in_sample` as NaN."""
    scores = {}
    for view in SCORED:
        subset, balanced = SCORED_VIEWS[view]
        truth, predicted = data[subset][1], preds[subset]
        scores[view] = classification_metrics(truth, predicted, balanced, classes=classes)
        if view in in_sample:
            scores[view] = _not_an_evaluation(scores[view])
    return scores


def _not_an_evaluation(metrics: dict) -> dict:
    return {**{m: float("nan") for m in METRICS}, "confusion": metrics["confusion"]}


# --------------------------------------------------------------------------------------------
# Tables


def _top_model(names: Sequence[str], model_scores: Mapping) -> str:
    """The best single model by the selection score (class-balanced holdout macro-F1)."""
    return max(names, key=lambda n: model_scores[n][BALANCED_HOLDOUT]["macro_f1"])


def _row(scores: Mapping, dev_preds: Sequence[np.ndarray], dev: DevSet, boot: Mapping) -> dict:
    """Figures of one system, or of the mean over several (`dev_preds`: their dev predictions):
    dev with intervals, and holdout."""
    row = {f"{s}_{m}": scores[s][m] for s in SCORED for m in ("macro_f1", "accuracy")}
    return row | interval_columns(dev, dev_preds, boot)


def _table1(names, per_model, model_scores, main, features, dev, boot) -> pd.DataFrame:
    """Paper Table 1: per-model macro-F1 and accuracy, then Average, Top and the soup."""
    rows = [
        {"id": str(i), "model": name, "features": " + ".join(features.get(name, [])),
         **_row(model_scores[name], [per_model[name][DEV]], dev, boot)}
        for i, name in enumerate(names, start=1)
    ]  # fmt: skip
    mean = {
        s: {m: float(np.mean([model_scores[n][s][m] for n in names])) for m in METRICS}
        for s in SCORED
    }
    every_model = [per_model[n][DEV] for n in names]
    rows.append({"model": "Average DeepSER", **_row(mean, every_model, dev, boot),
                 "note": f"mean of {len(names)} models"})  # fmt: skip
    top = _top_model(names, model_scores)
    rows.append({"model": "Top DeepSER", **_row(model_scores[top], [per_model[top][DEV]], dev, boot),
                 "note": f"{top} (best class-balanced holdout F1)"})  # fmt: skip
    info = main["info"]
    note = f"meta-classifier soup of {len(info.get('seeds', []))} seeds"
    note += f", trained on the {info['train_on']} clips"
    if info["train_on"] == HOLDOUT:
        note += " (its holdout figures would be in-sample: left out)"
    rows.append({"model": "MEDUSA (soup)", **_row(main["soup_scores"], [main["soup"][DEV]], dev, boot),
                 "note": note})  # fmt: skip
    table = pd.DataFrame(rows)
    table[["id", "features", "note"]] = table[["id", "features", "note"]].fillna("")
    return table[[c for c in table.columns if c != UNRELIABLE] + [UNRELIABLE]]


def _table3(label: str, system: Mapping, dev: DevSet, boot: Mapping) -> pd.DataFrame:
    """Paper Table 3 for one ensemble: the four ways of combining it, with dev intervals; the
    single seeds as mean and standard deviation over seeds, the interval that of their mean."""
    runs = {
        "Majority voting": ([system["vote_scores"]["Majority voting"]], [system["votes"]["Majority voting"]]),
        "Soft voting": ([system["vote_scores"]["Soft voting"]], [system["votes"]["Soft voting"]]),
        "Product of experts": ([system["vote_scores"]["Product of experts"]], [system["votes"]["Product of experts"]]),
        "Meta-classifier (single)": (system["single_scores"], system["singles"]),
        "Meta-classifier (soup)": ([system["soup_scores"]], [system["soup"]]),
    }  # fmt: skip
    rows = []
    for technique in TECHNIQUES:
        scores, preds = runs[technique]
        row = {"ensemble": label, "technique": technique, "runs": len(scores)}
        for s in SCORED:
            for m in METRICS:
                values = [sc[s][m] for sc in scores]
                row[f"{s}_{m}"] = float(np.mean(values))
                # Spread over seeds only means something for the single-seed row.
                row[f"{s}_{m}_std"] = float(np.std(values)) if len(values) > 1 else np.nan
        row.update(interval_columns(dev, [p[DEV] for p in preds], boot))
        rows.append(row)
    return pd.DataFrame(rows)


def _per_class(names, per_model, main, dev: DevSet, holdout_y, boot) -> pd.DataFrame:
    """Per-class F1 of every model, vote, the seeds' mean and the soup (``per_class_rows``)."""
    in_sample = BALANCED_HOLDOUT in in_sample_views(main["info"]["train_on"])
    systems = {
        **{name: ([per_model[name]], False) for name in names},
        **{vote: ([preds], False) for vote, preds in main["votes"].items()},
        "Meta-classifier (single, mean)": (main["singles"], in_sample),
        "Meta-classifier (soup)": ([main["soup"]], in_sample),
    }
    rows = {DEV: [], BALANCED_HOLDOUT: []}
    for name, (predictions, seen) in systems.items():
        dev_row, holdout_row = per_class_rows(name, dev, holdout_y, predictions, boot, seen)
        rows[DEV].append(dev_row)
        rows[BALANCED_HOLDOUT].append(holdout_row)
    table = pd.DataFrame(rows[DEV] + rows[BALANCED_HOLDOUT])
    return table[[c for c in table.columns if c != UNRELIABLE] + [UNRELIABLE]]


def _selection_table(systems: Mapping[str, Mapping]) -> pd.DataFrame:
    """Each ensemble's cross-validated choice of regularisation (``medusa.ensemble.meta_cv``): one
    row per grid point (macro-F1 over speaker-grouped folds: mean, sd, standard error), the
    chosen one marked; one row with the reason when no validation was possible."""
    rows = []
    for label, system in systems.items():
        record = system["info"].get("selection") or {}
        common = {"ensemble": label, "folds": record.get("folds"),
                  "speakers": record.get("n_speakers"), "clips": record.get("n_clips")}  # fmt: skip
        for point in record.get("grid") or [{"prior_strength": record.get("choice")}]:
            scores = point.get("fold_macro_f1", [])
            rows.append({
                **common,
                "setting": point.get("setting", str(point["prior_strength"])),
                "cv_macro_f1": point.get("cv_macro_f1"),
                "sd": point.get("sd"),
                "se": point.get("se"),
                "fold_macro_f1": " ".join("" if v is None else f"{v:.3f}" for v in scores),
                "chosen": point["prior_strength"] == record.get("choice"),
                "reason": record.get("reason", "no selection record in the soup's checkpoint"),
            })  # fmt: skip
    return pd.DataFrame(rows)


def _comparisons(names, per_model, model_scores, main, dev, boot) -> pd.DataFrame:
    """The soup against the soft vote and the best single model, paired on dev."""
    top = _top_model(names, model_scores)
    others = {
        "soft vote": main["votes"]["Soft voting"][DEV],
        f"best single model ({top})": per_model[top][DEV],
    }
    return comparisons_table(dev, main["soup"][DEV], others, boot)


def _attributes(names, data, main, dev, boot) -> pd.DataFrame:
    """CCC of the attributes on dev: each model, their mean, the soup's attribute head."""
    X = data[DEV][0]
    _, attributes = split_inputs(X, len(dev.classes))  # [K, N, 3]
    models = main["info"]["models"]
    _, soup_attributes = head_outputs(main["head"], reorder_models(X, names, models))
    return attributes_table(dict(zip(names, attributes, strict=True)), soup_attributes, dev, boot)


def _calibration(names, data, model_scores, main, temperature, dev, boot):
    """Table C (each model, the soft vote, the product of experts, the soup, and the soup
    after temperature scaling) and the reliability curves of the diagram."""
    X = data[DEV][0]
    probs, _ = split_inputs(X, len(dev.classes))
    soup = predict_probs(main["head"], reorder_models(X, names, main["info"]["models"]))
    systems = {
        **dict(zip(names, probs, strict=True)),
        "Soft voting": soft_vote(list(probs)),
        "Product of experts": product_of_experts(list(probs)),
        "Meta-classifier (soup)": soup,
    }
    scaled = {}  # the scaled row's (temperature, note)
    if temperature is not None:
        record = read_temperature(temperature, main["info"]["models"])
        systems[SOUP_SCALED] = temperature_scale(soup, record["temperature"])
        scaled[SOUP_SCALED] = (record["temperature"], _temperature_note(record))
    table = calibration_table(dev, {k: np.asarray(p, np.float64) for k, p in systems.items()}, boot)
    table.insert(1, "temperature", [scaled.get(k, (np.nan,))[0] for k in systems])
    table.insert(len(table.columns) - 1, "note", [scaled.get(k, (0, ""))[1] for k in systems])
    top = _top_model(names, model_scores)
    shown = ["Soft voting", top, "Meta-classifier (soup)", SOUP_SCALED]
    curves = reliability_curves(
        {f"Top DeepSER ({k})" if k == top else k: systems[k] for k in shown if k in systems},
        dev.y,
        int(table["bins"].iloc[0]),
    )
    return table, curves


def _temperature_note(record: Mapping) -> str:
    fitted, before, after = record["fitted_on"], record["before"], record["after"]
    return (
        f"T = {record['temperature']:.3f}, {record['note']}: {fitted['clips']} clips of "
        f"{fitted['speakers']} speaker(s), NLL there {before['nll']:.3f} -> {after['nll']:.3f}"
    )


def _fairness_systems(names, per_model, model_scores, main) -> dict[str, np.ndarray]:
    top = _top_model(names, model_scores)
    return {"MEDUSA (soup)": main["soup"][DEV], f"Top DeepSER ({top})": per_model[top][DEV]}
