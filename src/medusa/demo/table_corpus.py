"""A second demo corpus, CREMA-D-like, in the table layout: 6 acted classes, one label per clip,
speaker folds, and unlabelled clips from other speakers (predicted like MSP-Podcast's Test3).

The speech is made as for the MSP-Podcast demo (`medusa.demo.plan`, `medusa.demo.audio`): espeak
voices with per-speaker offsets, sentence banks and prosody per class, so the classes are
learnable the same way. Like CREMA-D's actors, every speaker acts every class about equally.

    out_dir/clips.csv          id,path,partition,speaker,gender,label,act,val,dom
    out_dir/audio/<id>.wav     16 kHz mono 16-bit PCM

`partition` is the speaker fold (1..k, folds balanced by clip count) and is empty, as is
`label`, on unlabelled rows; act/val/dom (in [1, 7]) are empty on unlabelled rows and on a few
labelled ones.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from medusa.core.atomic import atomic_directory
from medusa.demo.annotators import CLASS_ATTRIBUTES
from medusa.demo.audio import render as _render  # a module global: tests replace it
from medusa.demo.audio import to_pcm16
from medusa.demo.plan import VOICES, Clip, _Deck, _make_speakers, _words_and_prosody
from medusa.demo.speech import SAMPLE_RATE, Synthesizer

TABLE_DEMO_CLASSES = {
    "A": "Anger",
    "D": "Disgust",
    "F": "Fear",
    "H": "Happy",
    "N": "Neutral",
    "S": "Sad",
}
TABLE_NAME = "clips.csv"
AUDIO_DIR = "audio"
TABLE_COLUMNS = ("id", "path", "partition", "speaker", "gender", "label", "act", "val", "dom")
# Share of labelled clips whose act/val/dom are left empty (the table allows it).
MISSING_ATTRIBUTES_SHARE = 0.05
# Speakers' shares of the clips vary a little, as CREMA-D's actors' do (Dirichlet concentration).
SPEAKER_SHARE_CONCENTRATION = 20.0
FIRST_SPEAKER_ID = 1001  # CREMA-D's actors are 1001-1091
# Separates this corpus's random streams from the MSP demo's for the same seed.
_STREAM = 25


@dataclass
class TableClip:
    """One row of the table: a planned clip, its id, fold (None: unlabelled) and attributes."""

    clip_id: str
    fold: int | None
    speaker_id: str
    clip: Clip
    attributes: tuple[float, float, float] | None


def _speaker_clip_counts(n: int, n_speakers: int, rng: np.random.Generator) -> list[int]:
    """Split n clips over the speakers, near-evenly (each at least one), largest remainders."""
    shares = rng.dirichlet(np.full(n_speakers, SPEAKER_SHARE_CONCENTRATION)) * (n - n_speakers)
    counts = np.floor(shares).astype(int) + 1
    remainders = shares - np.floor(shares)
    for i in np.argsort(-remainders, kind="stable")[: n - int(counts.sum())]:
        counts[i] += 1
    return [int(c) for c in counts]


def assign_folds(clip_counts: list[int], folds: int) -> list[int]:
    """Fold (1..folds) of each speaker, balancing clips per fold: the speaker with most clips
    first, each to the fold with fewest clips (then fewest speakers, then lowest number)."""
    loads = [[0, 0, fold] for fold in range(1, folds + 1)]
    fold_of = [0] * len(clip_counts)
    for i in sorted(range(len(clip_counts)), key=lambda i: (-clip_counts[i], i)):
        lightest = min(loads)
        fold_of[i] = lightest[2]
        lightest[0] += clip_counts[i]
        lightest[1] += 1
    return fold_of


def _class_cycle(n: int, rng: np.random.Generator) -> list[str]:
    """n class codes cycling through a shuffled order of the classes: any 6 in a row are all
    different, so every stretch of >= 6 clips has every class."""
    codes = list(TABLE_DEMO_CLASSES)
    order = [codes[i] for i in rng.permutation(len(codes))]
    return [order[i % len(order)] for i in range(n)]


def _attributes(letter: str, intensity: float, rng: np.random.Generator) -> tuple:
    """Perceived act/val/dom of a clip: class-typical, weaker when acted weakly (as the MSP
    demo's raters perceive them), within [1, 7]."""
    neutral = np.array(CLASS_ATTRIBUTES["N"])
    target = np.array(CLASS_ATTRIBUTES[letter])
    strength = 1.0 if letter == "N" else min(intensity, 1.0)
    value = neutral + strength * (target - neutral) + rng.normal(0, 0.45, size=3)
    return tuple(round(float(v), 4) for v in np.clip(value, 1.0, 7.0))


def _table_clip(fold, speaker_id, speaker, number, letter, deck, rngs) -> TableClip:
    """One planned clip: the words, prosody and attributes of `letter` acted by `speaker`."""
    rng_layout, rng_words, rng_attributes = rngs
    text, text_letter, intensity, prosody = _words_and_prosody(letter, speaker, deck, rng_words)
    clip_id = f"{speaker_id}_{number:03d}"
    clip = Clip(
        file_name=f"{clip_id}.wav",
        split="unlabelled" if fold is None else f"fold {fold}",
        speaker=speaker,
        letter=letter,
        text_letter=text_letter,
        text=text,
        intensity=intensity,
        prosody=prosody,
        seed=int(rng_layout.integers(2**31)),
    )
    attributes = None if fold is None else _attributes(letter, intensity, rng_attributes)
    return TableClip(clip_id, fold, speaker_id, clip, attributes)


def _speaker_rows(groups, rngs, speaker_ids) -> list[TableClip]:
    """The clips of each (fold or None, [speakers], [clip counts]) group: class codes cycle over
    the group's clips in speaker order, so each speaker and each group is class-balanced."""
    rng_layout, rng_words, _ = rngs
    deck = _Deck(rng_words)
    rows = []
    for fold, speakers, counts in groups:
        letters = iter(_class_cycle(sum(counts), rng_layout))
        for speaker, count in zip(speakers, counts, strict=True):
            speaker_id = speaker_ids[speaker.spkr_id]
            # Clip numbers in random order, so that ids do not follow the class cycle.
            for number in rng_layout.permutation(count) + 1:
                rows.append(
                    _table_clip(fold, speaker_id, speaker, int(number), next(letters), deck, rngs)
                )
    return rows


def plan_table_clips(
    n_labelled: int, n_test: int, folds: int, n_speakers: int, seed: int
) -> list[TableClip]:
    """Speakers, their folds, and each clip's words, prosody, class and attributes (no audio)."""
    rng_speakers, rng_layout, rng_words, rng_attributes, rng_missing = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, _STREAM]).spawn(5)
    )
    speakers = _make_speakers(n_speakers, rng_speakers)
    numbers = rng_speakers.choice(91, size=n_speakers, replace=False) + FIRST_SPEAKER_ID
    speaker_ids = {s.spkr_id: str(int(k)) for s, k in zip(speakers, numbers, strict=True)}
    n_test_speakers = min(2, n_test)
    labelled = speakers[: n_speakers - n_test_speakers]
    counts = _speaker_clip_counts(n_labelled, len(labelled), rng_layout)
    fold_of = assign_folds(counts, folds)
    groups = [
        (
            fold,
            [s for s, f in zip(labelled, fold_of, strict=True) if f == fold],
            [c for c, f in zip(counts, fold_of, strict=True) if f == fold],
        )
        for fold in range(1, folds + 1)
    ]
    if n_test:
        test_speakers = speakers[n_speakers - n_test_speakers :]
        test_counts = [len(part) for part in np.array_split(np.arange(n_test), n_test_speakers)]
        groups.append((None, test_speakers, test_counts))
    rows = _speaker_rows(groups, (rng_layout, rng_words, rng_attributes), speaker_ids)
    n_missing = round(MISSING_ATTRIBUTES_SHARE * n_labelled)
    for i in rng_missing.choice(n_labelled, size=n_missing, replace=False):
        rows[int(i)].attributes = None  # labelled rows come first
    return rows


def _write_audio(root: Path, rows: list[TableClip]) -> None:
    """Render every clip into root/audio (and note its duration)."""
    (root / AUDIO_DIR).mkdir()
    synth = Synthesizer()
    for row in rows:
        audio = _render(row.clip, synth)
        row.clip.duration = len(audio) / SAMPLE_RATE
        sf.write(root / AUDIO_DIR / row.clip.file_name, to_pcm16(audio), SAMPLE_RATE, "PCM_16")


def _table_row(row: TableClip) -> list:
    attributes = row.attributes if row.attributes is not None else ("", "", "")
    return [
        row.clip_id,
        f"{AUDIO_DIR}/{row.clip.file_name}",
        "" if row.fold is None else row.fold,
        row.speaker_id,
        row.clip.speaker.gender,
        "" if row.fold is None else row.clip.letter,
        *attributes,
    ]


def _write_table(root: Path, rows: list[TableClip]) -> None:
    with open(root / TABLE_NAME, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(TABLE_COLUMNS)
        writer.writerows(_table_row(r) for r in sorted(rows, key=lambda r: r.clip_id))


def _summary(out_dir: Path, seed: int, folds: int, rows: list[TableClip]) -> dict:
    """What generate_table_corpus returns (see there)."""
    labelled = [r for r in rows if r.fold is not None]
    per_fold = {f: [r for r in labelled if r.fold == f] for f in range(1, folds + 1)}
    unlabelled = [r for r in rows if r.fold is None]
    return {
        "out_dir": str(out_dir),
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "classes": dict(TABLE_DEMO_CLASSES),
        "n_labelled": len(labelled),
        "n_test": len(unlabelled),
        "seconds_of_audio": round(sum(r.clip.duration for r in rows), 2),
        "clips_per_fold": {f: len(fold_rows) for f, fold_rows in per_fold.items()},
        "classes_per_fold": {
            f: dict(sorted(Counter(r.clip.letter for r in fold_rows).items()))
            for f, fold_rows in per_fold.items()
        },
        "speakers_per_fold": {
            f: sorted({r.speaker_id for r in fold_rows}) for f, fold_rows in per_fold.items()
        },
        "unlabelled_speakers": sorted({r.speaker_id for r in unlabelled}),
        "missing_attributes": sum(r.attributes is None for r in labelled),
    }


def _check_arguments(n_labelled: int, n_test: int, folds: int, n_speakers: int) -> None:
    if not 2 <= n_speakers <= len(VOICES):
        raise ValueError(f"n_speakers={n_speakers} must be within [2, {len(VOICES)}]")
    if n_test < 0:
        raise ValueError(f"n_test={n_test} must be >= 0")
    n_fold_speakers = n_speakers - min(2, n_test)
    if not 2 <= folds <= n_fold_speakers:
        raise ValueError(
            f"folds={folds} must be within [2, {n_fold_speakers}] "
            f"(at least one speaker per fold; {n_speakers - n_fold_speakers} other(s) speak "
            "the unlabelled clips)"
        )
    if n_labelled < n_fold_speakers:
        raise ValueError(
            f"n_labelled={n_labelled} must be at least the {n_fold_speakers} speakers of the folds"
        )


def generate_table_corpus(
    out_dir: str | os.PathLike,
    n_labelled: int,
    n_test: int,
    folds: int,
    seed: int,
    n_speakers: int = 14,
) -> dict:
    """Write a CREMA-D-like synthetic corpus in the table layout to `out_dir`.

    `n_labelled` clips from `n_speakers` less the unlabelled clips' speakers, in `folds` speaker
    folds; `n_test` unlabelled clips from 1 or 2 speakers of their own. The same arguments give
    the same bytes; the folder appears complete or not at all (built next to it, then renamed).
    Returns a summary: clips per fold and class, speakers per fold, seconds of audio.
    """
    _check_arguments(n_labelled, n_test, folds, n_speakers)
    out_dir = Path(out_dir)
    rows = plan_table_clips(n_labelled, n_test, folds, n_speakers, seed)
    with atomic_directory(out_dir) as tmp:
        _write_audio(tmp, rows)
        _write_table(tmp, rows)
    return _summary(out_dir, seed, folds, rows)
