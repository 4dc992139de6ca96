"""The meta-classifier (stage 3 + soup) against the soft vote and a class-balanced logistic
regression, on synthetic 14-model ensembles built the way MEDUSA's meta-classifier is meant to
help (models biased toward the majority classes, reliability differing per model and per class,
two useless models; medusa.ensemble.synthetic), at several holdout sizes, and on hard meta sets.

    python benchmarks/meta_synthetic.py                  # sizes 100 300 4000, 5 worlds each
    python benchmarks/meta_synthetic.py --sizes 100 --worlds 2
    python benchmarks/meta_synthetic.py --sizes 300 --cases missing single

Cases (`--cases`, default all three): `all` (every class as drawn), `missing` (no Fear and no
Disgust clip in the meta set), `single` (Surprise, Fear, Disgust and Contempt: one clip each).
Five clips per synthetic speaker, so the cross-validation of `meta.selection` has whole
speakers per fold.

Prints dev macro-F1 (3,000 clips per world, all 8 classes, MSP-like imbalance) as mean and
standard deviation over worlds, for: soft vote; product of experts (the head's start, "stay at
the vote"); logistic regression (class_weight=balanced, on log-posteriors; the reference a
well-tuned classifier reaches); the recipe's soup (config/config.yaml `meta`: its seeds, the
prior strength its speaker-grouped cross-validation chooses, shown as `choices`); the soup at
the configured prior_strength without selection; the soup from random weights (init: random).
`--no-selection` leaves out what needs medusa.ensemble.meta_cv (to run this script on older code).
"""

from __future__ import annotations

import argparse
import collections
import math
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from medusa.core.metrics import classification_metrics
from medusa.ensemble.inputs import split_inputs
from medusa.ensemble.meta import MetaConfig, predict_probs
from medusa.ensemble.meta_training import fit_head
from medusa.ensemble.soup import soup_of
from medusa.ensemble.synthetic import make_models, sample_clips, training_arrays
from medusa.ensemble.votes import soft_vote

ROOT = Path(__file__).resolve().parents[1]
CLIPS_PER_SPEAKER = 5
MISSING = (4, 5)  # Fear, Disgust
RARE = (3, 4, 5, 6)  # Surprise, Fear, Disgust, Contempt: one clip each in case `single`


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    return classification_metrics(y, pred)["macro_f1"]


def log_posteriors(inputs: np.ndarray) -> np.ndarray:
    probs, _ = split_inputs(inputs)  # [K, N, 8]
    return np.log(np.clip(probs, 1e-4, 1)).transpose(1, 0, 2).reshape(len(inputs), -1)


def logistic_regression(X: np.ndarray, y: np.ndarray, X_dev: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(class_weight="balanced", max_iter=3000)
    return model.fit(log_posteriors(X), y).predict(log_posteriors(X_dev))


def meta_set(X: np.ndarray, y: np.ndarray, case: str) -> tuple[np.ndarray, np.ndarray]:
    """The meta clips of a case: all, without Fear and Disgust, or one clip of each rare class."""
    if case == "all":
        keep = np.ones(len(y), dtype=bool)
    elif case == "missing":
        keep = ~np.isin(y, MISSING)
    else:
        first = [int(np.flatnonzero(y == c)[0]) for c in RARE if (y == c).any()]
        keep = ~np.isin(y, RARE) | np.isin(np.arange(len(y)), first)
    return X[keep], y[keep]


def arrays(X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    train = training_arrays(X, y)
    train["y"] = np.asarray(y, dtype=np.int64)
    train["groups"] = np.array([f"speaker:{i // CLIPS_PER_SPEAKER}" for i in range(len(y))])
    return train


def soup(train: dict, X_dev: np.ndarray, cfg: MetaConfig, seeds: list[int]) -> np.ndarray:
    heads = [fit_head(train, cfg, seed)[0] for seed in seeds]
    architecture = {"n_inputs": train["X"].shape[1], "head": cfg.head, "mlp_hidden": cfg.mlp_hidden}
    return predict_probs(soup_of(heads, architecture), X_dev).argmax(axis=1)


def selected_config(train: dict, meta: dict) -> tuple[MetaConfig, str]:
    """The recipe's cross-validated choice (medusa.ensemble.meta_cv) applied to its config."""
    from medusa.ensemble.meta_cv import SelectionConfig, cross_validate

    cfg = MetaConfig.from_dict(meta)
    record = cross_validate(train, cfg, SelectionConfig.from_dict(meta["selection"]))
    choice = record["choice"]
    prior = math.inf if choice == "vote" else float(choice)
    return MetaConfig.from_dict({**meta, "prior_strength": prior}), str(choice)


def one_world(size: int, world: int, meta: dict, case: str, selection: bool) -> dict:
    models = make_models(seed=world)
    X, y = meta_set(*sample_clips(models, size, seed=1000 + world), case)
    X_dev, y_dev = sample_clips(models, 3000, seed=2000 + world)
    probs_dev = list(split_inputs(X_dev)[0])
    train, seeds = arrays(X, y), list(meta["seeds"])
    fixed = MetaConfig.from_dict(meta)  # MetaConfig leaves `selection` to medusa.ensemble.meta_cv
    product = np.log(np.clip(np.stack(probs_dev), 1e-4, None)).mean(axis=0).argmax(axis=1)
    scores = {
        "soft vote": macro_f1(y_dev, soft_vote(probs_dev).argmax(axis=1)),
        "product of experts": macro_f1(y_dev, product),
        "logistic regression": macro_f1(y_dev, logistic_regression(X, y, X_dev)),
    }
    choice = ""
    if selection:
        cfg, choice = selected_config(train, meta)
        scores["soup (recipe: cross-validated prior)"] = macro_f1(
            y_dev, soup(train, X_dev, cfg, seeds)
        )
    scores[f"soup (prior_strength {fixed.prior_strength:g}, no selection)"] = macro_f1(
        y_dev, soup(train, X_dev, fixed, seeds)
    )
    random = MetaConfig.from_dict({**meta, "init": "random"})
    scores["soup (random start)"] = macro_f1(y_dev, soup(train, X_dev, random, seeds))
    return {"scores": scores, "choice": choice}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 4000])
    parser.add_argument("--worlds", type=int, default=5)
    parser.add_argument("--cases", nargs="+", default=["all", "missing", "single"],
                        choices=["all", "missing", "single"])  # fmt: skip
    parser.add_argument("--no-selection", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    meta = yaml.safe_load((ROOT / "config/config.yaml").read_text())["meta"]
    selection = not args.no_selection
    if not selection:
        meta.pop("selection", None)
    print(f"meta: init {meta['init']}, {meta['steps']} steps, lr {meta['lr']}, "
          f"prior {meta['prior_strength']}, selection {meta.get('selection')}, "
          f"{len(meta['seeds'])} seeds; dev = 3,000 clips")  # fmt: skip
    print("| meta clips | case | system | dev macro-F1 (mean ± sd over worlds) |")
    print("|---|---|---|---|")
    for case in args.cases:
        for size in args.sizes:
            started = time.perf_counter()
            runs = [one_world(size, w, meta, case, selection) for w in range(args.worlds)]
            for system in runs[0]["scores"]:
                values = [run["scores"][system] for run in runs]
                if not np.isnan(values).all():
                    print(f"| {size} | {case} | {system} | "
                          f"{np.mean(values):.3f} ± {np.std(values):.3f} |")  # fmt: skip
            choices = collections.Counter(run["choice"] for run in runs)
            print(f"<!-- {case}, {size} clips: {time.perf_counter() - started:.1f} s; "
                  f"choices {dict(choices)} -->")  # fmt: skip


if __name__ == "__main__":
    main()
