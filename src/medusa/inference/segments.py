"""Where a recording is cut into the segments `medusa predict` scores, and what it leaves out.

Two segmentations:

- ``vad`` (the default): voice-activity detection with Silero VAD (the ``silero-vad`` wheel,
  MIT licence; its TorchScript model ships inside the wheel, nothing is downloaded). Speech
  regions separated by pauses shorter than ``max_pause_s`` form one turn; a turn longer than
  ``max_turn_s`` is split at the pause nearest its middle (in the middle of the speech when it
  has no pause), again until every piece fits; a turn shorter than ``min_turn_s`` is widened
  with the audio around it, never over a neighbouring turn. MSP-Podcast's clips, on which the
  models were trained, are single-speaker speech turns of about 3-11 s. What no turn covers is
  reported as a gap and not scored.
- ``fixed``: windows of ``window_s`` every ``hop_s`` seconds, silence or not (`fixed_windows`).

In both, a recording no longer than ``max_segment_s`` is one segment, scored whole as the
workflow scores a clip; with ``vad`` only if speech is found in it (else it is skipped: "no speech
found").
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

# medusa.core.audio's rate; not imported from there, so that the command line's help (which shows
# this module's defaults) does not pay for importing torch.
SAMPLE_RATE = 16000
SEGMENTATIONS = ("vad", "fixed")
# Turns of MSP-Podcast-like length: pauses shorter than this stay inside a turn; a shorter
# turn is widened (models trained on clips of 3-11 s judge a half-second "yes" poorly alone).
DEFAULT_MAX_PAUSE_S = 0.5
DEFAULT_MIN_TURN_S = 1.5
# Silero's own defaults: speech probability threshold, shortest speech and silence it reports.
VAD_THRESHOLD = 0.5
VAD_MIN_SPEECH_MS = 250
VAD_MIN_SILENCE_MS = 100
VAD_PAD_MS = 30
NO_SPEECH = "no speech found"

Bounds = list[tuple[int, int]]  # [start, end) in samples


@dataclass(frozen=True)
class TurnSettings:
    """How speech regions become turns (seconds); see the module docstring."""

    min_turn_s: float = DEFAULT_MIN_TURN_S
    max_turn_s: float = 12.0
    max_pause_s: float = DEFAULT_MAX_PAUSE_S

    def __post_init__(self) -> None:
        if not 0 < self.min_turn_s <= self.max_turn_s:
            raise ValueError(
                f"min_turn_s ({self.min_turn_s:g} s, --min-turn-s) must be > 0 and at most "
                f"max_turn_s ({self.max_turn_s:g} s, --max-turn-s)"
            )
        if self.max_pause_s < 0:
            raise ValueError(f"max_pause_s (--max-pause-s) must be >= 0, got {self.max_pause_s:g}")


def fixed_windows(
    n_samples: int,
    window_s: float,
    hop_s: float,
    min_segment_s: float,
    max_segment_s: float = 0.0,
    sample_rate: int = SAMPLE_RATE,
) -> Bounds:
    """[start, end) sample bounds of a recording's fixed windows.

    A recording no longer than `max_segment_s` (or than a window) is one segment: scored
    whole, as the workflow scores a clip. A longer one is cut into windows of `window_s`
    starting every `hop_s` seconds until one reaches the end; the last one is dropped when
    shorter than `min_segment_s`.
    """
    window = max(1, round(window_s * sample_rate))
    hop = max(1, round(hop_s * sample_rate))
    if n_samples <= max(window, round(max_segment_s * sample_rate)):
        return [(0, n_samples)]
    bounds = []
    start = 0
    while True:
        end = min(start + window, n_samples)
        bounds.append((start, end))
        if end >= n_samples:
            break
        start += hop
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_segment_s * sample_rate:
        bounds.pop()
    return bounds


class SpeechDetector:
    """Silero VAD's TorchScript model, loaded on first use, run on the CPU."""

    def __init__(self) -> None:
        self._model = None
        self._timestamps = None

    def _load(self) -> None:
        import torch

        # Importing silero_vad sets torch's CPU threads to 1 for the whole process: keep the
        # caller's setting (the models and backbones run with it).
        threads = torch.get_num_threads()
        try:
            from silero_vad import get_speech_timestamps, load_silero_vad

            with warnings.catch_warnings():
                # Its loader uses importlib.resources.path and torch.jit.load, both deprecated.
                warnings.simplefilter("ignore", DeprecationWarning)
                self._model = load_silero_vad(onnx=False)
            self._timestamps = get_speech_timestamps
        finally:
            torch.set_num_threads(threads)

    def speech(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Bounds:
        """[start, end) sample bounds of the speech Silero finds in 16 kHz mono `audio`."""
        import torch

        if self._model is None:
            self._load()
        with torch.inference_mode():
            found = self._timestamps(
                torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
                self._model,
                threshold=VAD_THRESHOLD,
                sampling_rate=sample_rate,
                min_speech_duration_ms=VAD_MIN_SPEECH_MS,
                min_silence_duration_ms=VAD_MIN_SILENCE_MS,
                speech_pad_ms=VAD_PAD_MS,
            )
        return [(int(s["start"]), int(s["end"])) for s in found]


def speech_turns(
    speech: Bounds, n_samples: int, settings: TurnSettings, sample_rate: int = SAMPLE_RATE
) -> Bounds:
    """Turns from sorted, disjoint speech regions (see the module docstring)."""
    max_pause = settings.max_pause_s * sample_rate
    groups: list[Bounds] = []  # the speech regions of each turn
    for region in speech:
        if groups and region[0] - groups[-1][-1][1] < max_pause:
            groups[-1].append(region)
        else:
            groups.append([region])
    max_turn = max(1, round(settings.max_turn_s * sample_rate))
    min_turn = round(settings.min_turn_s * sample_rate)
    turns = [turn for group in groups for turn in _split(group, max_turn, min_turn)]
    return _widen(turns, n_samples, min_turn, max_turn)


def _split(regions: Bounds, max_turn: int, min_turn: int) -> Bounds:
    """One turn (its speech regions) cut at pauses until no piece is longer than max_turn."""
    start, end = regions[0][0], regions[-1][1]
    if end - start <= max_turn:
        return [(start, end)]
    middle = (start + end) // 2
    # Cut in the middle of the pause nearest the turn's middle that leaves both sides at least
    # min_turn long; continuous speech (no such pause) is cut in its middle.
    pauses = [(a[1] + b[0]) // 2 for a, b in zip(regions, regions[1:], strict=False)]
    fair = [p for p in pauses if p - start >= min_turn and end - p >= min_turn]
    cut = min(fair, key=lambda p: abs(p - middle)) if fair else middle
    left = [(a, min(b, cut)) for a, b in regions if a < cut]
    right = [(max(a, cut), b) for a, b in regions if b > cut]
    return _split(left, max_turn, min_turn) + _split(right, max_turn, min_turn)


def _widen(turns: Bounds, n_samples: int, min_turn: int, max_turn: int) -> Bounds:
    """Turns shorter than min_turn widened evenly on both sides with the audio around them,
    within the recording and never over a neighbour."""
    widened = []
    for i, (start, end) in enumerate(turns):
        missing = min(min_turn, max_turn) - (end - start)
        if missing > 0:
            lower = widened[-1][1] if widened else 0
            upper = turns[i + 1][0] if i + 1 < len(turns) else n_samples
            left = min(missing // 2, start - lower)
            right = min(missing - left, upper - end)
            left = min(missing - right, start - lower)  # what the right side could not take
            start, end = start - left, end + right
        widened.append((start, end))
    return widened


def gaps(bounds: Bounds, n_samples: int, min_gap: int = 1) -> Bounds:
    """The parts of [0, n_samples) no segment covers, at least `min_gap` samples long."""
    found, covered = [], 0
    for start, end in sorted(bounds):
        if start - covered >= min_gap:
            found.append((covered, start))
        covered = max(covered, end)
    if n_samples - covered >= min_gap:
        found.append((covered, n_samples))
    return found
