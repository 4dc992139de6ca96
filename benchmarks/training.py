"""Training throughput: steps per second and the share of step time spent waiting for data.

Runs the stage-1 training loop of `medusa.training` (same dataset, length-bucketed batches,
DataLoader and `train_one_epoch`) on a demo-sized store and prints, per number of DataLoader
workers, steps/s and the time share spent in `next(loader)`. The target is < 10% waiting.

    python benchmarks/training.py                     # synthetic: 300 clips, dims 384 + 32
    python benchmarks/training.py results/features    # real features: first two feature sets
                                                       # with a train.h5 (or --features a b)

Without a path argument, real demo features at results/features are used when present.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from medusa.core.store import FeatureReader, FeatureWriter
from medusa.training.data import BatchPlan, ClipDataset, length_bucketed_batches, make_loader
from medusa.training.model import build_model, class_weights_from_targets
from medusa.training.settings import ModelSettings
from medusa.training.steps import train_one_epoch

FRAME_RATE = 50

ROOT = Path(__file__).resolve().parents[1]


def synthetic_store(folder: Path, n_clips: int, dims: list[int], seed: int = 0) -> list[Path]:
    """One feature file per dim: clips of 1-4 s at 50 frames/s, random float16 frames."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1 * FRAME_RATE, 4 * FRAME_RATE + 1, n_clips)
    paths = []
    for m, dim in enumerate(dims):
        path = folder / f"synthetic{m}_{dim}.h5"
        with FeatureWriter(path, dim, {"feature_set": f"synthetic{m}"}) as writer:
            for i, length in enumerate(lengths):
                writer.add(f"clip{i:05d}", rng.standard_normal((length, dim)).astype(np.float16))
        paths.append(path)
    return paths


def real_store(root: Path, names: list[str] | None) -> list[Path]:
    """train.h5 of the named feature sets (default: the first two that have one)."""
    if names is None:
        names = sorted(p.parent.name for p in root.glob("*/train.h5"))[:2]
    paths = [root / name / "train.h5" for name in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if len(paths) < 2 or missing:
        raise SystemExit(f"need two feature files under {root}; missing: {missing or names}")
    return paths


def common_ids(paths: list[Path]) -> list[str]:
    readers = [FeatureReader(p) for p in paths]
    ids = sorted(set(readers[0].ids).intersection(*(r.ids for r in readers[1:])))
    for r in readers:
        r.close()
    return ids


def run(paths: list[Path], workers: int, args: argparse.Namespace) -> dict:
    ids = common_ids(paths)
    dataset = ClipDataset(ids, paths, args.max_frames)
    # The recipe's model settings (config/config.yaml), with this benchmark's sizes on top.
    recipe = yaml.safe_load((ROOT / "config/config.yaml").read_text())["model_defaults"]
    params = {key: value for key, value in recipe.items() if key != "enabled"}
    settings = ModelSettings.from_params(
        {
            **params,
            "name": "benchmark",
            "features": [f"f{i}" for i in range(len(paths))],
            "hidden_size": args.hidden_size,
            "num_heads": args.num_heads,
            "ff_size": args.ff_size,
            "attention_dropout": args.attention_dropout,
        }
    )
    torch.manual_seed(0)
    model = build_model(settings, dataset.dims, [1] * len(dataset.dims))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    rng = np.random.default_rng(0)
    targets = torch.as_tensor(rng.dirichlet(np.ones(8), len(ids)), dtype=torch.float32)
    attributes = torch.as_tensor(1 + 6 * rng.random((len(ids), 3)), dtype=torch.float32)
    plan = BatchPlan()
    device = torch.device("cpu")
    loader = make_loader(dataset, plan, workers, device, persistent=True)
    epochs = []
    for _ in range(args.epochs):
        plan.batches = length_bucketed_batches(
            np.arange(len(ids)), dataset.lengths, args.batch_size, rng
        )
        epochs.append(
            train_one_epoch(
                model,
                loader,
                optimizer,
                targets,
                attributes,
                class_weights_from_targets(targets),
                (1.5, 0.4),
                torch.Generator().manual_seed(0),
                device,
                amp=False,
            )
        )
    # The loader alone (no model): how many batches/s the data path can deliver.
    tick = time.perf_counter()
    batches = sum(1 for _ in loader)
    loader_rate = batches / (time.perf_counter() - tick)
    measured = epochs[1:] or epochs  # the first epoch also starts the workers
    steps = sum(e["steps"] for e in measured)
    seconds = sum(e["seconds"] for e in measured)
    wait = sum(e["data_wait_seconds"] for e in measured)
    first = epochs[0]
    return {
        "clips": len(ids),
        "steps_per_s": steps / seconds,
        "data_wait_share": wait / seconds,
        "first_epoch_wait_share": first["data_wait_seconds"] / first["seconds"],
        "loader_batches_per_s": loader_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("features_root", nargs="?", type=Path, help="results/features of a run")
    parser.add_argument("--features", nargs="+", help="feature-set names under features_root")
    parser.add_argument("--synthetic", action="store_true", help="ignore results/features")
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--dims", type=int, nargs="+", default=[384, 32])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hidden-size", type=int, default=32)  # config/demo.yaml's model
    parser.add_argument("--num-heads", type=int, default=2)
    parser.add_argument("--ff-size", type=int, default=64)
    parser.add_argument("--max-frames", type=int, default=1500)
    parser.add_argument(
        "--attention-dropout", type=float, help="default: as dropout (0.1); 0 is faster on CPU"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    root = args.features_root
    if root is None and not args.synthetic and list(Path("results/features").glob("*/train.h5")):
        root = Path("results/features")
    with tempfile.TemporaryDirectory() as tmp:
        if root is not None:
            paths = real_store(root, args.features)
            source = f"real features {[str(p) for p in paths]}"
        else:
            paths = synthetic_store(Path(tmp), args.clips, args.dims)
            source = f"synthetic store: {args.clips} clips of 1-4 s, dims {args.dims}, 50 frames/s"
        print(source)
        print(
            f"model: hidden {args.hidden_size}, heads {args.num_heads}, FF {args.ff_size}, "
            f"attention dropout {args.attention_dropout if args.attention_dropout is not None else 0.1}, "
            f"batch {args.batch_size}, {args.threads} torch threads; epochs 2.. measured"
        )
        print(
            f"{'workers':>8} {'steps/s':>9} {'data wait':>10} {'(1st epoch)':>12} {'loader alone':>14}"
        )
        for workers in args.workers:
            start = time.perf_counter()
            result = run(paths, workers, args)
            print(
                f"{workers:>8} {result['steps_per_s']:>9.1f} {100 * result['data_wait_share']:>9.1f}% "
                f"{100 * result['first_epoch_wait_share']:>11.1f}% "
                f"{result['loader_batches_per_s']:>9.1f} b/s   ({time.perf_counter() - start:.1f} s)"
            )


if __name__ == "__main__":
    main()
