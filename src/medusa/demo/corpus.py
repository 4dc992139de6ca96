"""The embedded demo corpus: synthetic emotional speech in the MSP-Podcast challenge layout.

Speech comes from espeak-ng (`medusa.demo.speech`). Emotion is carried both by the words (a
bank of sentences per class, `medusa.demo.sentences`) and by prosody (rate, pitch, pitch range,
loudness, pauses), with per-speaker offsets and sentences of neutral wording spoken emotionally
(`medusa.demo.plan`), so the classes are learnable without being trivially separable.
Simulated annotators then vote as MSP-Podcast raters do (`medusa.demo.annotators`), which
yields realistic disagreement, `X` (no agreement) and `O` (Other) consensus rows.

    out_dir/Audios/<FileName>.wav              16 kHz mono 16-bit PCM, Test3 clips included
    out_dir/Labels/labels_consensus.csv        FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set
    out_dir/Labels/labels_detailed.csv         FileName,EmoDetail (one row per annotator)
    out_dir/demo_truth.csv                     what was really spoken (for the ASR word error rate)
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

from medusa.core.atomic import atomic_directory
from medusa.demo.annotators import annotate_clips, consensus_letter, format_emo_detail
from medusa.demo.audio import render as _render  # a module global: tests replace it
from medusa.demo.audio import to_pcm16
from medusa.demo.plan import VOICES, Clip, plan_clips
from medusa.demo.sentences import SENTENCES
from medusa.demo.speech import SAMPLE_RATE, Synthesizer

# The names other modules and the tests take from here.
__all__ = [
    "CONSENSUS_COLUMNS",
    "DETAILED_COLUMNS",
    "PROBLEM_KINDS",
    "SAMPLE_RATE",
    "SENTENCES",
    "TRUTH_COLUMNS",
    "VOICES",
    "Synthesizer",
    "_render",
    "consensus_letter",
    "format_emo_detail",
    "generate_corpus",
]

CONSENSUS_COLUMNS = (
    "FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set",
)  # fmt: skip
DETAILED_COLUMNS = ("FileName", "EmoDetail")
TRUTH_COLUMNS = ("FileName", "Split", "Speaker", "Voice", "IntendedClass", "TextClass", "Text")
PROBLEM_KINDS = (
    "stereo", "wrong_rate", "too_short", "empty", "unreadable", "missing_audio", "bad_label",
)  # fmt: skip


def _write_csv(path: Path, header, rows, quoting=csv.QUOTE_MINIMAL) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, quoting=quoting, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _consensus_row(clip: Clip) -> list:
    act, val, dom = (round(a, 6) for a in clip.attributes)
    spkr = clip.speaker.spkr_id if clip.speaker.known else "Unknown"
    return [clip.file_name, clip.emo_class, act, val, dom, spkr, clip.speaker.gender, clip.split]


def _inject_problems(root: Path, labelled: list[Clip], seed: int) -> dict[str, str]:
    """Break a few Train clips on purpose, one per kind of bad input the data step must
    report (each file is otherwise a normal clip). Returns {FileName: problem kind}."""
    rng = np.random.default_rng([seed, 7])
    train = [c for c in labelled if c.split == "Train"]
    if len(train) < len(PROBLEM_KINDS):
        raise ValueError(f"need at least {len(PROBLEM_KINDS)} Train clips to inject problems")
    victims = [train[i] for i in rng.choice(len(train), size=len(PROBLEM_KINDS), replace=False)]
    audios = root / "Audios"
    problems = {}
    for kind, clip in zip(PROBLEM_KINDS, victims, strict=True):
        path = audios / clip.file_name
        problems[clip.file_name] = kind
        if kind in ("stereo", "wrong_rate", "too_short"):
            audio, _ = sf.read(path, dtype="int16")
            if kind == "stereo":  # second channel slightly quieter, as from a real mixer
                audio = np.stack([audio, (audio * 0.8).astype(np.int16)], axis=1)
                sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
            elif kind == "wrong_rate":
                import torch
                import torchaudio

                wave = torch.from_numpy(audio.astype(np.float32) / 32768.0)
                wave = torchaudio.functional.resample(wave, SAMPLE_RATE, 44100).numpy()
                sf.write(path, to_pcm16(wave), 44100, subtype="PCM_16")
            else:
                sf.write(path, audio[: int(0.25 * SAMPLE_RATE)], SAMPLE_RATE, subtype="PCM_16")
        elif kind == "empty":
            sf.write(path, np.zeros(0, dtype=np.int16), SAMPLE_RATE, subtype="PCM_16")
        elif kind == "unreadable":
            path.write_bytes(b"this is not a RIFF/WAVE file\n")
        elif kind == "missing_audio":
            path.unlink()
        elif kind == "bad_label":
            clip.emo_class = "Z"  # outside the MSP vocabulary
    return problems


def _write_audio(root: Path, clips: list[Clip]) -> None:
    """Render every clip into root/Audios (and note its duration)."""
    (root / "Audios").mkdir()
    synth = Synthesizer()
    for clip in clips:
        audio = _render(clip, synth)
        clip.duration = len(audio) / SAMPLE_RATE
        sf.write(root / "Audios" / clip.file_name, to_pcm16(audio), SAMPLE_RATE, "PCM_16")


def _write_labels(root: Path, clips: list[Clip], labelled: list[Clip]) -> None:
    """The two MSP label files in root/Labels, and the demo's ground truth demo_truth.csv."""
    (root / "Labels").mkdir()
    labelled_sorted = sorted(labelled, key=lambda c: c.file_name)
    _write_csv(
        root / "Labels" / "labels_consensus.csv",
        CONSENSUS_COLUMNS,
        [_consensus_row(c) for c in labelled_sorted],
    )
    _write_csv(
        root / "Labels" / "labels_detailed.csv",
        DETAILED_COLUMNS,
        [[c.file_name, d] for c in labelled_sorted for d in c.votes],
        quoting=csv.QUOTE_ALL,
    )
    _write_csv(
        root / "demo_truth.csv",
        TRUTH_COLUMNS,
        [
            [c.file_name, c.split, c.speaker.spkr_id, c.speaker.voice, c.letter]
            + [c.text_letter, c.text]
            for c in sorted(clips, key=lambda c: c.file_name)
        ],
    )


def _count_by(clips: list[Clip], attr: str) -> dict[str, int]:
    counts = Counter(getattr(c, attr) for c in clips)
    return {k: counts[k] for k in sorted(counts)}


def _summary(
    out_dir: Path, seed: int, n_test: int, clips: list[Clip], problems: dict[str, str]
) -> dict:
    """What generate_corpus returns (see there)."""
    labelled = [c for c in clips if c.split != "Test3"]
    split_names = ("Train", "Development", "Test3")
    per_split = {s: [c for c in clips if c.split == s] for s in split_names}
    return {
        "out_dir": str(out_dir),
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "n_files": len(clips) - sum(kind == "missing_audio" for kind in problems.values()),
        "n_labelled": len(labelled),
        "n_test": n_test,
        "n_annotations": sum(len(c.votes) for c in labelled),
        "seconds_of_audio": round(sum(c.duration for c in clips), 2),
        "splits": {s: len(per_split[s]) for s in split_names},
        "consensus": {s: _count_by(per_split[s], "emo_class") for s in split_names[:2]},
        "intended": {s: _count_by(per_split[s], "letter") for s in split_names},
        "speakers": {
            s: sorted(
                {c.speaker.spkr_id if c.speaker.known else "Unknown" for c in per_split[s]}, key=str
            )
            for s in split_names
        },
        "problems": problems,
    }


def generate_corpus(
    out_dir: str | os.PathLike,
    n_labelled: int = 300,
    n_test: int = 40,
    seed: int = 0,
    n_speakers: int = 16,
    inject_problems: bool = False,
) -> dict:
    """Write a synthetic corpus in the MSP-Podcast challenge layout to `out_dir`.

    `n_labelled` clips go to Train/Development (speaker-disjoint, about 72/28), `n_test`
    unlabelled clips to Test3; `n_speakers` espeak voices in all (Train gets one whose SpkrID
    is `Unknown`). The same arguments give the same bytes. With `inject_problems`, a few
    Train clips are broken on purpose (see PROBLEM_KINDS); otherwise the corpus is clean.
    The folder appears complete or not at all (built next to it, then renamed).
    Returns a summary: counts per split and class, speakers, seconds of audio, problems.
    """
    if n_labelled < 16:
        raise ValueError(f"n_labelled={n_labelled} must be at least 16")
    if n_test < 0:
        raise ValueError(f"n_test={n_test} must be >= 0")
    if not 8 <= n_speakers <= len(VOICES):
        raise ValueError(f"n_speakers={n_speakers} must be within [8, {len(VOICES)}]")
    out_dir = Path(out_dir)
    clips = plan_clips(n_labelled, n_test, n_speakers, seed)
    labelled = [c for c in clips if c.split != "Test3"]
    annotate_clips(labelled, seed)
    with atomic_directory(out_dir) as tmp:
        _write_audio(tmp, clips)
        problems = _inject_problems(tmp, labelled, seed) if inject_problems else {}
        _write_labels(tmp, clips, labelled)
    return _summary(out_dir, seed, n_test, clips, problems)
