"""The plan of the demo corpus: speakers, and for each clip its split, speaker, words, prosody
and file name (no audio yet).

Emotion is carried both by the words (a bank of sentences per class) and by prosody (rate,
pitch, pitch range, loudness, pauses), with per-speaker offsets and sentences of neutral
wording spoken emotionally, so the classes are learnable without being trivially separable.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from medusa.core.emotions import CLASS_LETTERS
from medusa.demo.sentences import SENTENCES
from medusa.demo.speech import PARAM_LIMITS

# Prosody of neutral speech, and each class's shift from it (scaled per clip by how strongly
# the speaker acts). Sad: low, slow, flat, quiet; angry: loud, fast, wide range; etc.
NEUTRAL_PROSODY = {
    "rate": 170.0,
    "pitch": 50.0,
    "pitch_range": 50.0,
    "volume": 100.0,
    "wordgap": 0.0,
}
PROSODY_SHIFT: dict[str, dict[str, float]] = {
    "A": {"rate": 25, "pitch": -5, "pitch_range": 35, "volume": 70, "wordgap": 0},
    "S": {"rate": -45, "pitch": -25, "pitch_range": -35, "volume": -35, "wordgap": 3},
    "H": {"rate": 20, "pitch": 22, "pitch_range": 40, "volume": 20, "wordgap": 0},
    "U": {"rate": 5, "pitch": 30, "pitch_range": 50, "volume": 30, "wordgap": 0},
    "F": {"rate": 45, "pitch": 25, "pitch_range": -30, "volume": -20, "wordgap": 1},
    "D": {"rate": -25, "pitch": -15, "pitch_range": 15, "volume": 10, "wordgap": 2},
    "C": {"rate": -30, "pitch": -20, "pitch_range": -20, "volume": -5, "wordgap": 2},
    "N": {"rate": 0, "pitch": 0, "pitch_range": 0, "volume": 0, "wordgap": 0},
}
# Per-clip random variation of the prosody (standard deviations).
PROSODY_JITTER = {"rate": 8.0, "pitch": 5.0, "pitch_range": 8.0, "volume": 8.0, "wordgap": 0.0}

# Share of each class among labelled clips (MSP-like: Neutral first, Happy next, Fear rarest).
CLASS_SHARE = {
    "N": 0.36, "H": 0.21, "A": 0.10, "S": 0.10, "U": 0.06, "C": 0.06, "D": 0.055, "F": 0.055,
}  # fmt: skip
TRAIN_SHARE = 0.72  # Train vs Development clips, as in the challenge release (84k / 32k)

# espeak-ng voices of the synthetic speakers: (language+variant, gender).
VOICES: tuple[tuple[str, str], ...] = (
    ("en-us+f1", "Female"), ("en+m1", "Male"), ("en-us+m3", "Male"), ("en+f2", "Female"),
    ("en-us+f3", "Female"), ("en+m2", "Male"), ("en-us+m4", "Male"), ("en+f4", "Female"),
    ("en-us+f5", "Female"), ("en+m6", "Male"), ("en-us+m7", "Male"), ("en+f3", "Female"),
    ("en-us+linda", "Female"), ("en+m8", "Male"), ("en-us+john", "Male"), ("en+belinda", "Female"),
    ("en-us+steph", "Female"), ("en+paul", "Male"), ("en-us+robert", "Male"), ("en+anika", "Female"),
)  # fmt: skip


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an espeak voice plus personal prosody offsets."""

    spkr_id: int
    known: bool  # False: its clips carry SpkrID `Unknown`
    voice: str
    gender: str
    podcast: int  # first number in its file names
    pitch_offset: float
    rate_factor: float
    range_offset: float
    volume_offset: float
    expressiveness: float  # how strongly the speaker acts emotions (scales the class shift)
    noise_dbfs: float  # level of the recording's background noise


@dataclass
class Clip:
    """One utterance of the corpus, before and after annotation."""

    file_name: str
    split: str  # Train | Development | Test3
    speaker: Speaker
    letter: str  # intended class
    text_letter: str  # class whose sentence bank the words come from
    text: str
    intensity: float
    prosody: dict[str, float]
    seed: int
    duration: float = 0.0
    votes: list[str] | None = None  # EmoDetail strings
    emo_class: str = ""
    attributes: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _class_counts(n: int, shares: dict[str, float], minimum: int) -> dict[str, int]:
    """Split n clips over the classes by share, each at least `minimum`; the rounding error
    and the clips lent to small classes are taken from the largest class."""
    counts = {c: max(minimum, round(share * n)) for c, share in shares.items()}
    largest = max(shares, key=shares.get)
    counts[largest] += n - sum(counts.values())
    return counts


def _make_speakers(n_speakers: int, rng: np.random.Generator) -> list[Speaker]:
    voices = [VOICES[i] for i in rng.permutation(len(VOICES))[:n_speakers]]
    ids = rng.choice(np.arange(1, 2000), size=n_speakers, replace=False)
    podcasts = rng.choice(np.arange(1, 10000), size=n_speakers, replace=False)
    return [
        Speaker(
            spkr_id=int(ids[i]),
            known=True,
            voice=voice,
            gender=gender,
            podcast=int(podcasts[i]),
            pitch_offset=float(rng.uniform(-12, 12)),
            rate_factor=float(rng.uniform(0.9, 1.1)),
            range_offset=float(rng.uniform(-10, 10)),
            volume_offset=float(rng.uniform(-15, 15)),
            expressiveness=float(rng.uniform(0.45, 1.0)),
            noise_dbfs=float(rng.uniform(-62, -48)),
        )
        for i, (voice, gender) in enumerate(voices)
    ]


def _allocate_speakers(speakers: list[Speaker], with_test: bool) -> dict[str, list[Speaker]]:
    """Disjoint speaker sets per split; the last Train speaker's identity is `Unknown`."""
    n_test = (2 if len(speakers) >= 10 else 1) if with_test else 0
    rest = len(speakers) - n_test
    n_dev = max(2, round(0.3 * rest))
    train = speakers[: rest - n_dev]
    train[-1] = replace(train[-1], known=False)
    return {
        "Train": train,
        "Development": speakers[rest - n_dev : rest],
        "Test3": speakers[rest:],
    }


def _assign_speakers(n: int, speakers: list[Speaker], rng: np.random.Generator) -> list[Speaker]:
    """Speaker of each of n clips: every speaker at least once, uneven shares (like podcasts);
    the unknown-identity speaker only a few clips."""
    known = [s for s in speakers if s.known]
    unknown = [s for s in speakers if not s.known]
    chosen = unknown * max(1, round(0.03 * n))
    if n >= len(chosen) + len(known):
        chosen += known
    weights = rng.dirichlet(np.full(len(known), 3.0))
    chosen += [known[i] for i in rng.choice(len(known), size=n - len(chosen), p=weights)]
    return [chosen[i] for i in rng.permutation(len(chosen))]


class _Deck:
    """Draws sentences of a bank in shuffled order, reshuffling when used up (few repeats)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.piles: dict[str, list[str]] = {}

    def draw(self, letter: str) -> str:
        pile = self.piles.get(letter)
        if not pile:
            bank = SENTENCES[letter]
            pile = [bank[i] for i in self.rng.permutation(len(bank))]
            self.piles[letter] = pile
        return pile.pop()


def _words_and_prosody(
    letter: str, speaker: Speaker, deck: _Deck, rng: np.random.Generator
) -> tuple[str, str, float, dict[str, float]]:
    """Sentence (and the class of its wording), acting intensity and espeak prosody of a clip."""
    if letter == "N":
        # Now and then emotional words are spoken flatly.
        text_letter = rng.choice(CLASS_LETTERS[:-1]) if rng.random() < 0.1 else "N"
    else:
        text_letter = "N" if rng.random() < 0.25 else letter
    text_letter = str(text_letter)
    intensity = float(np.clip(speaker.expressiveness + rng.normal(0, 0.15), 0.2, 1.2))
    shift = PROSODY_SHIFT[letter]
    prosody = {
        name: base + intensity * shift[name] + rng.normal(0, PROSODY_JITTER[name])
        for name, base in NEUTRAL_PROSODY.items()
    }
    prosody["rate"] *= speaker.rate_factor
    prosody["pitch"] += speaker.pitch_offset
    prosody["pitch_range"] += speaker.range_offset
    prosody["volume"] += speaker.volume_offset
    prosody = {name: float(np.clip(value, *PARAM_LIMITS[name])) for name, value in prosody.items()}
    return deck.draw(text_letter), text_letter, intensity, prosody


def plan_clips(n_labelled: int, n_test: int, n_speakers: int, seed: int) -> list[Clip]:
    """Who says what, how, in which split and under which file name (no audio yet)."""
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]
    rng_speakers, rng_layout, rng_words, rng_names = rngs
    splits = _allocate_speakers(_make_speakers(n_speakers, rng_speakers), with_test=n_test > 0)
    n_train = round(TRAIN_SHARE * n_labelled)
    sizes = {"Train": n_train, "Development": n_labelled - n_train}
    deck = _Deck(rng_words)
    clips: list[Clip] = []
    for split, n in [*sizes.items(), ("Test3", n_test)]:
        if n == 0:
            continue
        if split == "Test3":  # Test3 is balanced over the 8 classes, as in the challenge
            order = [CLASS_LETTERS[i % 8] for i in rng_layout.permutation(n)]
        else:
            # Small classes get a floor so that the default corpus has every class in Train.
            counts = _class_counts(n, CLASS_SHARE, minimum=min(14, n // 15))
            letters = [c for c, k in counts.items() for _ in range(k)]
            order = [letters[i] for i in rng_layout.permutation(n)]
        speakers = _assign_speakers(n, splits[split], rng_layout)
        for letter, speaker in zip(order, speakers, strict=True):
            text, text_letter, intensity, prosody = _words_and_prosody(
                letter, speaker, deck, rng_words
            )
            clips.append(
                Clip(
                    file_name="",
                    split=split,
                    speaker=speaker,
                    letter=letter,
                    text_letter=text_letter,
                    text=text,
                    intensity=intensity,
                    prosody=prosody,
                    seed=int(rng_layout.integers(2**31)),
                )
            )
    _name_clips(clips, rng_names)
    return clips


def _name_clips(clips: list[Clip], rng: np.random.Generator) -> None:
    """MSP-PODCAST_<podcast>_<segment>[_<part>].wav, segments increasing within a podcast;
    Test3 clips are MSP-PODCAST_test3_<n>.wav."""
    segment: Counter[int] = Counter()
    n_test = 0
    for clip in clips:
        if clip.split == "Test3":
            n_test += 1
            clip.file_name = f"MSP-PODCAST_test3_{n_test:04d}.wav"
            continue
        podcast = clip.speaker.podcast
        segment[podcast] += int(rng.integers(1, 4))  # segments between ours were not kept
        name = f"MSP-PODCAST_{podcast:04d}_{segment[podcast]:04d}"
        if rng.random() < 0.05:  # some releases split a segment and add a third number
            name += f"_{int(rng.integers(1, 3)):04d}"
        clip.file_name = name + ".wav"
