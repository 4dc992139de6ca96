"""Word error rate of the demo's ASR against the sentences the demo generator spoke.

Usage (after `make demo`, or at least `snakemake results/asr/{subset}.jsonl --configfile config/demo.yaml`):

    .venv/bin/python benchmarks/demo_asr_wer.py [--corpus resources/demo/msp-podcast] [--asr results/asr]

Without the workflow's transcripts it transcribes the corpus itself with the demo's ASR model
(`--model`, default the converted Whisper tiny.en with the demo's 15 s window), through the
same library code. Prints the WER per subset, per intended emotion (prosody) and per voice.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402

from medusa.asr.transcribe import load_asr_model, transcribe_clips  # noqa: E402
from medusa.asr.transcripts import read_transcripts  # noqa: E402
from medusa.core.audio import load_audio  # noqa: E402
from medusa.core.metrics import word_error_rate  # noqa: E402


def transcripts(asr_dir: Path, corpus: Path, truth: pd.DataFrame, model_path: str) -> dict:
    files = sorted(asr_dir.glob("*.jsonl")) if asr_dir.is_dir() else []
    if files:
        print(f"transcripts: the workflow's {', '.join(f.name for f in files)}")
        return {k: v["text"] for f in files for k, v in read_transcripts(f).items()}
    print(f"transcripts: none under {asr_dir}; transcribing with {model_path}")
    model = load_asr_model(model_path, "cpu")
    items = []
    for name in truth["FileName"]:
        path = corpus / "Audios" / name
        if path.exists():
            items.append((Path(name).stem, load_audio(path)))
    return {r["id"]: r["text"] for r in transcribe_clips(model, items, 16, "cpu")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path("resources/demo/msp-podcast"))
    parser.add_argument("--asr", type=Path, default=Path("results/asr"))
    parser.add_argument("--model", default="resources/backbones/whisper-tiny-en-15s-asr/model.pt")
    args = parser.parse_args()
    truth = pd.read_csv(args.corpus / "demo_truth.csv", keep_default_na=False)
    hyps = transcripts(args.asr, args.corpus, truth, args.model)
    truth["id"] = truth["FileName"].str.removesuffix(".wav")
    truth = truth[truth["id"].isin(hyps)].copy()
    if truth.empty:
        print("no transcribed clip matches the corpus truth file", file=sys.stderr)
        return 1
    truth["hyp"] = truth["id"].map(hyps)

    def wer(rows: pd.DataFrame) -> str:
        return f"{100 * word_error_rate(list(rows['Text']), list(rows['hyp'])):5.1f}%"

    print(f"\nclips: {len(truth)}   overall WER: {wer(truth)}")
    for column, title in [
        ("Split", "split"),
        ("IntendedClass", "emotion (prosody)"),
        ("Voice", "voice"),
    ]:
        print(f"\nWER by {title}:")
        for key, rows in truth.groupby(column):
            print(f"  {key:<12} {len(rows):4d} clips  {wer(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
