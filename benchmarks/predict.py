"""Throughput of `medusa predict` with a bundle: batched over all files vs one file at a time.

Runs on the demo bundle of a completed run (`snakemake bundle` after `make demo`, or the
CI-sized run of the tests) over audio files, by default the run's Test3 clips, repeated to
`--files` files. The ASR model, backbones and models are loaded once, before timing (the first
call loads the backbones and is not counted). Prints files per second and the real-time factor
(processing seconds per second of audio; below 1 is faster than real time).

    .venv/bin/python benchmarks/predict.py --workdir RUN [--files 24] [--threads 2]
        [--device auto|cpu|cuda] [AUDIO ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from medusa.corpus_guard import DEMO_CORPUS_HOME  # noqa: E402
from medusa.partitions import clip_paths  # noqa: E402
from medusa.recognize import Recognizer, find_audio, real_time_factor  # noqa: E402


def audio_seconds(paths: list[Path]) -> float:
    return sum(sf.info(str(p)).duration for p in paths)


def timed(recognizer: Recognizer, batches: list[list[Path]]) -> tuple[float, int]:
    """(wall seconds, segments) of predicting each batch in turn."""
    started = time.perf_counter()
    segments = 0
    for batch in batches:
        segments += len(recognizer.predict(batch).segments)
    if recognizer.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, segments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("audio", nargs="*", help="audio files or folders (default: Test3 clips)")
    parser.add_argument("--workdir", type=Path, default=Path("."), help="run with results/bundle")
    parser.add_argument("--bundle", type=Path, help="default: WORKDIR/results/bundle")
    parser.add_argument("--files", type=int, default=24, help="files to predict (repeats inputs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle = args.bundle or args.workdir / "results/bundle"
    if args.audio:
        sources, _ = find_audio(args.audio)
    else:
        index = args.workdir / "results/audio/unlabelled.tsv"
        # The demo run's Test3 clips (index paths are relative to its data.root).
        sources = [Path(p) for _, p in clip_paths(index, args.workdir / DEMO_CORPUS_HOME)]
    if not sources:
        raise SystemExit("no audio files")

    with tempfile.TemporaryDirectory(prefix="medusa-bench-") as tmp:
        # Distinct copies, so that every file is read and predicted.
        files = []
        for i in range(args.files):
            source = sources[i % len(sources)]
            files.append(Path(tmp) / f"{i:04d}_{source.name}")
            shutil.copyfile(source, files[-1])
        seconds_of_audio = audio_seconds(files)
        with Recognizer(
            bundle, device=args.device, backbone_root=args.workdir, progress=False
        ) as r:
            started = time.perf_counter()
            r.predict(files[:1])  # loads the ASR model and the backbones
            load_s = time.perf_counter() - started
            batched_s, segments = timed(r, [files])
            single_s, _ = timed(r, [[f] for f in files])
            device = r.device

    print(
        f"bundle {bundle}: {len(files)} files, {segments} segments, {seconds_of_audio:.1f} s of "
        f"audio, device {device}, {args.threads} CPU threads; first call (loading) {load_s:.1f} s"
    )
    print()
    print("| mode | wall s | files/s | real-time factor | speed-up |")
    print("|---|---|---|---|---|")
    for mode, wall in (("batched (one call)", batched_s), ("one file per call", single_s)):
        print(
            f"| {mode} | {wall:.2f} | {len(files) / wall:.2f} | "
            f"{real_time_factor(wall, seconds_of_audio):.3f} | {single_s / wall:.2f}x |"
        )


if __name__ == "__main__":
    main()
