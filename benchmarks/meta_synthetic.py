"""The meta-classifier (stage 3 + soup) against the soft vote and a class-balanced logistic
regression, on synthetic 14-model ensembles built the way MEDUSA's meta-classifier is meant to
help (models biased toward the majority classes, reliability differing per model and per class,
two useless models; medusa.synthetic), at several holdout sizes.

    python benchmarks/meta_synthetic.py                  # sizes 100 300 4000, 5 worlds each
    python benchmarks/meta_synthetic.py --sizes 100 --worlds 2

Prints dev macro-F1 (3,000 clips per world, MSP-like imbalance) as mean and standard
deviation over worlds, for:
  soft vote; logistic regression (class_weight=balanced, on log-posteriors; the reference a
  well-tuned classifier reaches); the recipe's soup (config/config.yaml `meta`, its seeds);
  the same soup started from random weights (init: random) instead of the votes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from medusa.ensemble import MetaConfig, fit_head, predict_probs, soft_vote, soup_of, split_inputs
from medusa.metrics import classification_metrics
from medusa.synthetic import make_models, sample_clips, training_arrays

ROOT = Path(__file__).resolve().parents[1]


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    return classification_metrics(y, pred)["macro_f1"]


def logistic_regression(X: np.ndarray, y: np.ndarray, X_dev: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    def log_posteriors(inputs):
        probs, _ = split_inputs(inputs)  # [K, N, 8]
        return np.log(np.clip(probs, 1e-4, 1)).transpose(1, 0, 2).reshape(len(inputs), -1)

    model = LogisticRegression(class_weight="balanced", max_iter=3000)
    return model.fit(log_posteriors(X), y).predict(log_posteriors(X_dev))


def soup(X, y, X_dev, meta: dict, seeds: list[int]) -> np.ndarray:
    cfg = MetaConfig.from_dict(meta)
    heads = [fit_head(training_arrays(X, y), cfg, seed)[0] for seed in seeds]
    architecture = {"n_inputs": X.shape[1], "head": cfg.head, "mlp_hidden": cfg.mlp_hidden}
    return predict_probs(soup_of(heads, architecture), X_dev).argmax(axis=1)


def one_world(size: int, world: int, meta: dict) -> dict[str, float]:
    models = make_models(seed=world)
    X, y = sample_clips(models, size, seed=1000 + world)
    X_dev, y_dev = sample_clips(models, 3000, seed=2000 + world)
    seeds = list(meta["seeds"])
    return {
        "soft vote": macro_f1(y_dev, soft_vote(list(split_inputs(X_dev)[0])).argmax(axis=1)),
        "logistic regression": macro_f1(y_dev, logistic_regression(X, y, X_dev)),
        "soup (recipe)": macro_f1(y_dev, soup(X, y, X_dev, meta, seeds)),
        "soup (random start)": macro_f1(
            y_dev, soup(X, y, X_dev, {**meta, "init": "random"}, seeds)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 4000])
    parser.add_argument("--worlds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    meta = yaml.safe_load((ROOT / "config/config.yaml").read_text())["meta"]
    print(f"meta: init {meta['init']}, {meta['steps']} steps, lr {meta['lr']}, "
          f"prior {meta['prior_strength']}, {len(meta['seeds'])} seeds; dev = 3,000 clips")  # fmt: skip
    print("| holdout clips | system | dev macro-F1 (mean ± sd over worlds) |")
    print("|---|---|---|")
    for size in args.sizes:
        started = time.perf_counter()
        runs = [one_world(size, world, meta) for world in range(args.worlds)]
        for system in runs[0]:
            values = [run[system] for run in runs]
            print(f"| {size} | {system} | {np.mean(values):.3f} ± {np.std(values):.3f} |")
        print(f"<!-- {size} clips: {time.perf_counter() - started:.1f} s -->")


if __name__ == "__main__":
    main()
