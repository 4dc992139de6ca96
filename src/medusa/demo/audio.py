"""The audio of a planned clip: espeak speech placed in a short noisy recording."""

from __future__ import annotations

import numpy as np

from medusa.demo.plan import Clip
from medusa.demo.speech import SAMPLE_RATE, Synthesizer

# Clip timing (seconds).
MIN_DURATION, MAX_DURATION = 0.8, 4.0
LEAD_SILENCE = (0.05, 0.2)
TAIL_SILENCE = (0.1, 0.25)
SPEECH_GAIN = 0.7


def _trim(speech: np.ndarray, threshold: float = 1e-3, margin: int = 320) -> np.ndarray:
    """Drop espeak's leading/trailing silence, keeping `margin` samples (20 ms) around speech."""
    loud = np.flatnonzero(np.abs(speech) > threshold)
    if loud.size == 0:
        return speech
    return speech[max(0, loud[0] - margin) : loud[-1] + margin]


def render(clip: Clip, synth: Synthesizer) -> np.ndarray:
    """Speech of a clip with pauses and background noise, 0.8-4 s long."""
    rng = np.random.default_rng(clip.seed)
    lead = rng.uniform(*LEAD_SILENCE)
    tail = rng.uniform(*TAIL_SILENCE)
    budget = int((MAX_DURATION - lead - tail) * SAMPLE_RATE)
    prosody = dict(clip.prosody)
    for _ in range(4):
        speech = _trim(synth.synthesize(clip.text, clip.speaker.voice, **prosody, seed=clip.seed))
        if len(speech) <= budget:
            break
        # Too slow to fit: speak faster (keeps every word, which the ASR check needs).
        prosody["rate"] = min(450.0, prosody["rate"] * 1.08 * len(speech) / budget)
    else:
        raise RuntimeError(f"{clip.file_name}: {clip.text!r} does not fit in {MAX_DURATION} s")
    clip.prosody = prosody
    n_lead = int(lead * SAMPLE_RATE)
    n_total = max(n_lead + len(speech) + int(tail * SAMPLE_RATE), int(MIN_DURATION * SAMPLE_RATE))
    audio = np.zeros(n_total, dtype=np.float64)
    # espeak's limiter lets loud voices reach full scale: leave headroom for the noise.
    audio[n_lead : n_lead + len(speech)] = SPEECH_GAIN * speech
    audio += rng.standard_normal(n_total) * 10 ** (clip.speaker.noise_dbfs / 20)
    return audio


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    return np.round(np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
