"""Cost of `medusa predict` with a bundle: VAD turns vs fixed windows, one long recording vs many
files, batched vs one file per call.

Runs on the demo bundle of a completed run (`snakemake bundle` after `make demo`, or the
CI-sized run of the tests). Inputs: long recordings made of the run's labelled clips separated
by silences of 0.3-3 s and a 10 s silence every minute (`--long-min`: their minutes), and
`--files` short files (the run's Test3 clips, or the AUDIO given, repeated; 0: none). Each case
runs in a fresh process, so that its peak RSS is its own: load (bundle, models, and a first
call on one short file, which loads the ASR model and the backbones) is timed apart from
prediction, and writing the outputs (tables, a timeline PNG per file, the HTML page) apart
again. Prints a Markdown table: wall seconds, real-time factor (processing seconds per second
of audio; below 1 is faster than real time), peak RSS.

    .venv/bin/python benchmarks/predict.py --workdir RUN [--files 24] [--long-min 10 ...]
        [--modes fixed,vad] [--chunk-s S] [--threads 2] [--device auto|cpu|cuda] [--single]
        [AUDIO ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

SR = 16000


def long_recording(workdir: Path, path: Path, minutes: float, seed: int = 0) -> None:
    """Labelled demo clips joined by silences (noise at -60 dBFS) of 0.3-3 s, and a 10 s silence
    every minute, to `minutes` long."""
    audios = workdir / "resources/demo/msp-podcast/Audios"
    clips = sorted(p for p in audios.glob("*.wav") if "_test3_" not in p.name)
    rng = np.random.default_rng(seed)
    pieces, total, next_pause = [], 0, 60 * SR
    target = int(minutes * 60 * SR)
    while total < target:
        audio, rate = sf.read(clips[rng.integers(len(clips))], dtype="float32")
        assert rate == SR
        silence = 10.0 if total >= next_pause else rng.uniform(0.3, 3.0)
        if total >= next_pause:
            next_pause += 60 * SR
        noise = rng.standard_normal(int(silence * SR)).astype(np.float32) * 10 ** (-60 / 20)
        pieces += [audio, noise]
        total += len(audio) + len(noise)
    sf.write(path, np.concatenate(pieces)[:target], SR)


def short_files(workdir: Path, folder: Path, n: int, audio: list[str]) -> list[Path]:
    """`n` distinct copies of the inputs (default: the run's Test3 clips)."""
    from medusa.corpus.audio_index import clip_paths
    from medusa.corpus.guard import DEMO_CORPUS_HOME
    from medusa.inference.recognize import find_audio

    if audio:
        sources, _ = find_audio(audio)
    else:
        index = workdir / "results/audio/unlabelled.tsv"
        sources = [Path(p) for _, p in clip_paths(index, workdir / DEMO_CORPUS_HOME)]
    if not sources:
        raise SystemExit("no audio files")
    files = []
    for i in range(n):
        files.append(folder / f"{i:04d}_{sources[i % len(sources)].name}")
        shutil.copyfile(sources[i % len(sources)], files[-1])
    return files


def worker(args) -> None:
    """One case in this process: prints one JSON line."""
    import torch

    from medusa.inference.recognize import write_predictions
    from medusa.inference.recognizer import Recognizer

    torch.set_num_threads(args.threads)
    files = [Path(p) for p in args.worker_files]
    started = time.perf_counter()
    with Recognizer(
        args.bundle,
        device=args.device,
        backbone_root=args.workdir,
        progress=False,
        segmentation=args.segments,
        **({"max_chunk_s": args.chunk_s} if args.chunk_s else {}),
    ) as recognizer:
        recognizer.predict([args.warm_up])  # loads the ASR model and the backbones
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        if args.single:
            results = [recognizer.predict([f]) for f in files]
        else:
            results = [recognizer.predict(files)]
        if recognizer.device.type == "cuda":
            torch.cuda.synchronize()
        predict_s = time.perf_counter() - started
        device = str(recognizer.device)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medusa-bench-out-") as out:
        for i, predictions in enumerate(results):
            write_predictions(predictions, Path(out) / f"p{i}.csv", timelines=True, html=True)
    outputs_s = time.perf_counter() - started
    gaps = sum((r.gaps["end_s"] - r.gaps["start_s"]).sum() for r in results)
    print(
        json.dumps(
            {
                "load_s": load_s,
                "predict_s": predict_s,
                "outputs_s": outputs_s,
                "segments": int(sum(len(r.segments) for r in results)),
                "gaps_s": float(gaps),
                "audio_s": sum(sf.info(str(f)).duration for f in files),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "device": device,
            }
        )
    )


def run_case(args, segments: str, files: list[Path], single: bool, warm_up: Path) -> dict:
    command = [sys.executable, __file__, "--workdir", str(args.workdir)]
    command += ["--bundle", str(args.bundle), "--threads", str(args.threads)]
    command += ["--device", args.device, "--segments", segments, "--warm-up", str(warm_up)]
    command += ["--chunk-s", str(args.chunk_s)] if args.chunk_s else []
    command += [*(["--single"] if single else []), "--worker", *map(str, files)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"case {segments} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("audio", nargs="*", help="short audio files or folders (default: Test3)")
    parser.add_argument("--workdir", type=Path, default=Path("."), help="run with results/bundle")
    parser.add_argument("--bundle", type=Path, help="default: WORKDIR/results/bundle")
    parser.add_argument("--files", type=int, default=24, help="short files (repeats inputs)")
    parser.add_argument(
        "--long-min", type=float, nargs="+", default=[10.0], help="long recordings, minutes"
    )
    parser.add_argument("--chunk-s", type=float, help="Recognizer max_chunk_s (default: its own)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--single", action="store_true", help="also: one short file per call")
    parser.add_argument(
        "--modes", default="fixed,vad", help="segmentations to compare (default: fixed,vad)"
    )
    parser.add_argument("--segments", default="vad", help=argparse.SUPPRESS)
    parser.add_argument("--warm-up", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs="+", dest="worker_files", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.bundle = args.bundle or args.workdir / "results/bundle"
    if args.worker_files:
        worker(args)
        return
    with tempfile.TemporaryDirectory(prefix="medusa-bench-") as tmp:
        files = short_files(args.workdir, Path(tmp), max(1, args.files), args.audio)
        modes = args.modes.split(",")
        cases = []
        for minutes in args.long_min:
            long = Path(tmp) / f"long-{minutes:g}min.wav"
            long_recording(args.workdir, long, minutes)
            cases += [(f"one {minutes:g}-min recording", s, [long], False) for s in modes]
        if args.files:
            cases += [(f"{len(files)} short files", s, files, False) for s in modes]
        if args.single:
            cases.append((f"{len(files)} short files, one per call", "vad", files, True))
        rows = [
            (name, segments, run_case(args, segments, f, single, warm_up=files[0]))
            for name, segments, f, single in cases
        ]
    chunk = f"max_chunk_s {args.chunk_s:g}" if args.chunk_s else "default max_chunk_s"
    print(
        f"bundle {args.bundle}: device {rows[0][2]['device']}, {args.threads} CPU threads, "
        f"{chunk}; load = bundle, models, ASR model and backbones (first call)"
    )
    print()
    print(
        "| input | segments | audio s | segments | gaps s | load s | predict s | real-time factor "
        "| outputs s (tables, PNGs, HTML) | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, segments, r in rows:
        print(
            f"| {name} | {segments} | {r['audio_s']:.0f} | {r['segments']} | {r['gaps_s']:.0f} | "
            f"{r['load_s']:.1f} | {r['predict_s']:.1f} | {r['predict_s'] / r['audio_s']:.3f} | "
            f"{r['outputs_s']:.1f} | {r['peak_rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
