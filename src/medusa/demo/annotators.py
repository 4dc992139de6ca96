"""Simulated MSP-Podcast annotators: each clip gets 5-7 raters with personal habits, whose votes
show realistic disagreement, `X` (no agreement) and `O` (Other) consensus rows."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from medusa.core.emotions import CLASS_LETTERS, CLASS_NAMES, NAME_TO_LETTER
from medusa.demo.plan import Clip

LETTER_TO_NAME = dict(zip(CLASS_LETTERS, CLASS_NAMES, strict=True))
# Which classes a rater confuses a clip with (relative weights).
CONFUSIONS: dict[str, dict[str, float]] = {
    "A": {"D": 1.0, "C": 1.0, "N": 1.0, "U": 0.5, "F": 0.3},
    "S": {"N": 2.0, "F": 0.8, "C": 0.4, "D": 0.3},
    "H": {"U": 1.2, "N": 2.0, "C": 0.3},
    "U": {"H": 1.5, "F": 0.8, "N": 1.2, "A": 0.3},
    "F": {"S": 1.0, "U": 1.0, "N": 0.8, "A": 0.4},
    "D": {"C": 1.5, "A": 1.0, "N": 0.8, "S": 0.4},
    "C": {"D": 1.2, "A": 0.8, "N": 1.5, "H": 0.2},
    "N": {"S": 1.0, "H": 1.0, "C": 0.6, "U": 0.4, "A": 0.2},
}
SECONDARIES: dict[str, tuple[str, ...]] = {
    "A": ("Angry", "Frustrated", "Annoyed", "Disgust", "Contempt"),
    "S": ("Sad", "Disappointed", "Depressed", "Concerned", "Fear"),
    "H": ("Happy", "Amused", "Excited", "Surprise"),
    "U": ("Surprise", "Confused", "Excited", "Amused", "Fear"),
    "F": ("Fear", "Concerned", "Confused", "Sad"),
    "D": ("Disgust", "Annoyed", "Frustrated", "Contempt", "Angry"),
    "C": ("Contempt", "Annoyed", "Amused", "Disgust", "Frustrated"),
    "N": ("Neutral", "Concerned", "Confused", "Amused"),
}
# Free text typed by raters who chose Other (misspellings and spaces included, as in MSP).
OTHER_TEXTS = (
    "Curious", "curious", "Bored", "sarcastic", "Confused", "Concerned", "Amused", "nervous",
    "Frustrated", "Disapointed", "calm", "tired", "Interested", "Annoyed", "very tired",
    "Hopeful", "Relieved", "worried", "Excited/hopeful", "Pensive",
)  # fmt: skip
# Mean (act, val, dom) ratings of each class on the 1-7 scales.
CLASS_ATTRIBUTES: dict[str, tuple[float, float, float]] = {
    "A": (6.0, 2.0, 5.8),
    "S": (2.3, 2.0, 2.6),
    "H": (5.0, 6.0, 4.8),
    "U": (5.6, 4.7, 4.2),
    "F": (5.2, 2.3, 2.4),
    "D": (4.2, 2.3, 4.5),
    "C": (3.6, 2.8, 5.3),
    "N": (3.8, 4.0, 4.0),
}
N_WORKERS = 40
ANNOTATORS_PER_CLIP = (5, 7)
ALL_OTHER_SHARE = 0.02  # clips on which every rater picks Other: no 8-class vote at all


@dataclass(frozen=True)
class Worker:
    """A simulated MSP rater with personal habits."""

    worker_id: int
    other_rate: float
    neutral_lean: float
    bias: tuple[float, float, float]


def _make_workers(rng: np.random.Generator) -> list[Worker]:
    ids = rng.choice(np.arange(1, 100000), size=N_WORKERS, replace=False)
    return [
        Worker(
            worker_id=int(i),
            other_rate=float(rng.uniform(0.0, 0.06)),
            neutral_lean=float(rng.uniform(0.0, 1.0)),
            bias=tuple(float(b) for b in rng.normal(0, 0.35, size=3)),
        )
        for i in ids
    ]


def format_emo_detail(
    worker_id: int, primary: str, secondaries: list[str], ratings: tuple[int, int, int]
) -> str:
    """One rater's MSP-Podcast EmoDetail string, e.g.
    `WORKER00012345; Happy; Amused,Excited; A:5; V:6; D:4;`."""
    act, val, dom = ratings
    return f"WORKER{worker_id:08d}; {primary}; {','.join(secondaries)}; A:{act}; V:{val}; D:{dom};"


def consensus_letter(primaries: list[str]) -> str:
    """Plurality of primary votes (all `Other-*` count as O); a tie for the top gives X."""
    counts = Counter("O" if p.startswith("Other") else NAME_TO_LETTER[p] for p in primaries)
    top = max(counts.values())
    winners = [letter for letter, count in counts.items() if count == top]
    return winners[0] if len(winners) == 1 else "X"


def _vote(
    clip: Clip, clarity: float, worker: Worker, all_other: bool, rng: np.random.Generator
) -> str:
    """A rater's primary choice: a class letter, or O for Other."""
    p_other = 1.0 if all_other else 0.03 + worker.other_rate
    if rng.random() < p_other:
        return "O"
    if rng.random() < clarity:
        return clip.letter
    weights = dict(CONFUSIONS[clip.letter])
    if clip.text_letter != clip.letter:  # the words pull towards their own class
        weights[clip.text_letter] = weights.get(clip.text_letter, 0.0) + 2.0
    if clip.letter != "N":  # some raters call anything mild Neutral
        weights["N"] = weights.get("N", 0.0) + 2.0 * worker.neutral_lean
    letters = list(weights)
    p = np.array([weights[c] for c in letters])
    return letters[int(rng.choice(len(letters), p=p / p.sum()))]


def _annotate(clip: Clip, workers: list[Worker], all_other: bool, rng: np.random.Generator):
    """Simulated MSP ratings of one clip: EmoDetail rows, consensus class and attributes."""
    if clip.letter == "N":
        clarity = rng.beta(7, 2) - (0.15 if clip.text_letter != "N" else 0.0)
    else:
        clarity = rng.beta(7, 2.2) * (0.8 + 0.2 * min(clip.intensity, 1.0))
        clarity -= 0.15 if clip.text_letter != clip.letter else 0.0
    # The clip's perceived attributes: class-typical, weaker when acted weakly.
    neutral = np.array(CLASS_ATTRIBUTES["N"])
    target = np.array(CLASS_ATTRIBUTES[clip.letter])
    strength = 1.0 if clip.letter == "N" else min(clip.intensity, 1.0)
    latent = neutral + strength * (target - neutral) + rng.normal(0, 0.45, size=3)
    n_raters = int(rng.integers(ANNOTATORS_PER_CLIP[0], ANNOTATORS_PER_CLIP[1] + 1))
    details, primaries, ratings_all = [], [], []
    for w in rng.choice(len(workers), size=n_raters, replace=False):
        worker = workers[int(w)]
        choice = _vote(clip, clarity, worker, all_other, rng)
        if choice == "O":
            primary = "Other-" + str(rng.choice(OTHER_TEXTS))
            centre = latent + worker.bias
        else:
            primary = LETTER_TO_NAME[choice]
            # Raters who heard another emotion rate it partly as that emotion.
            centre = 0.7 * (latent + worker.bias) + 0.3 * np.array(CLASS_ATTRIBUTES[choice])
        ratings = np.clip(np.round(centre + rng.normal(0, 0.7, size=3)), 1, 7).astype(int)
        pool = SECONDARIES[clip.letter if choice == "O" else choice]
        k = int(rng.choice(4, p=[0.3, 0.35, 0.25, 0.1]))
        secondaries = [str(s) for s in rng.choice(pool, size=min(k, len(pool)), replace=False)]
        if rng.random() < 0.03:
            secondaries.append("Other-" + str(rng.choice(OTHER_TEXTS)))
        details.append(format_emo_detail(worker.worker_id, primary, secondaries, tuple(ratings)))
        primaries.append(primary)
        ratings_all.append(ratings)
    clip.votes = details
    clip.emo_class = consensus_letter(primaries)
    mean = np.mean(ratings_all, axis=0)
    clip.attributes = (float(mean[0]), float(mean[1]), float(mean[2]))


def annotate_clips(labelled: list[Clip], seed: int) -> None:
    """Rate every labelled clip (EmoDetail votes, consensus class, mean attributes) with one
    pool of workers; a few clips get only `Other` votes (see ALL_OTHER_SHARE)."""
    rng = np.random.default_rng([seed, 5])
    workers = _make_workers(rng)
    n_all_other = max(1, round(ALL_OTHER_SHARE * len(labelled)))
    all_other = set(rng.choice(len(labelled), size=n_all_other, replace=False))
    for i, clip in enumerate(labelled):
        _annotate(clip, workers, i in all_other, rng)
