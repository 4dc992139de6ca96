"""Segmentation of `medusa predict` (medusa.inference.segments): fixed windows, speech turns, gaps.

The turns are checked on speech regions given by hand; Silero VAD itself runs on real speech
in tests/test_predict.py (a recording of demo clips separated by silences, through the CLI).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medusa.inference.segments import (
    SpeechDetector,
    TurnSettings,
    fixed_windows,
    gaps,
    speech_turns,
)

SR = 16000


def s(seconds: float) -> int:
    return round(seconds * SR)


def span(*pairs: tuple[float, float]) -> list[tuple[int, int]]:
    return [(s(a), s(b)) for a, b in pairs]


def test_fixed_windows():
    second = SR
    assert fixed_windows(3 * second, 8, 8, 1) == [(0, 3 * second)]
    assert fixed_windows(8 * second, 8, 8, 1) == [(0, 8 * second)]
    # 60 s: seven full windows and a 4 s tail.
    bounds = fixed_windows(60 * second, 8, 8, 1)
    assert bounds == [(i * 8 * second, min((i + 1) * 8, 60) * second) for i in range(8)]
    # A tail under min_segment_s is dropped; overlapping windows with a hop.
    assert fixed_windows(int(16.5 * second), 8, 8, 1) == [
        (0, 8 * second),
        (8 * second, 16 * second),
    ]
    assert fixed_windows(12 * second, 8, 4, 1) == [(0, 8 * second), (4 * second, 12 * second)]
    # A clip up to max_segment_s is scored whole, as the workflow scores it; a longer one is cut.
    assert fixed_windows(int(9.16 * second), 8, 8, 1, 12) == [(0, int(9.16 * second))]
    assert fixed_windows(12 * second, 8, 8, 1, 12) == [(0, 12 * second)]
    assert fixed_windows(13 * second, 8, 8, 1, 12) == [(0, 8 * second), (8 * second, 13 * second)]


def test_speech_separated_by_short_pauses_is_one_turn_and_long_silences_are_gaps():
    settings = TurnSettings(min_turn_s=1.5, max_turn_s=12.0, max_pause_s=0.5)
    speech = span((1.0, 2.0), (2.3, 4.0), (6.0, 8.5), (20.0, 22.0))
    turns = speech_turns(speech, s(30), settings)
    # The 0.3 s pause stays inside the first turn; the 2 s and 11.5 s silences separate turns.
    assert turns == span((1.0, 4.0), (6.0, 8.5), (20.0, 22.0))
    assert gaps(turns, s(30)) == span((0.0, 1.0), (4.0, 6.0), (8.5, 20.0), (22.0, 30.0))
    assert gaps(turns, s(30), min_gap=s(1.5)) == span((4.0, 6.0), (8.5, 20.0), (22.0, 30.0))
    assert speech_turns([], s(30), settings) == []


def test_a_long_turn_is_split_at_the_pause_nearest_its_middle():
    settings = TurnSettings(min_turn_s=1.5, max_turn_s=10.0, max_pause_s=0.5)
    # 25 s of speech with short pauses: one turn until cut; every piece at most 10 s.
    speech = span((0.0, 4.0), (4.3, 9.0), (9.2, 13.0), (13.4, 20.0), (20.3, 25.0))
    turns = speech_turns(speech, s(25), settings)
    assert all(end - start <= s(10) for start, end in turns)
    # Cut at pauses only: first at the one nearest 12.5 s (13.2 s), then the 13 s left part at
    # the one nearest its middle (4.15 s), the 11.6 s right part at its only pause.
    assert turns == span((0.0, 4.0), (4.3, 13.0), (13.4, 20.0), (20.3, 25.0))
    # Continuous speech with no pause: cut in the middle, again until every piece fits.
    turns = speech_turns(span((0.0, 30.0)), s(30), settings)
    assert turns == span((0.0, 7.5), (7.5, 15.0), (15.0, 22.5), (22.5, 30.0))


def test_a_short_turn_is_widened_with_the_audio_around_it_never_over_a_neighbour():
    settings = TurnSettings(min_turn_s=1.5, max_turn_s=12.0, max_pause_s=0.5)
    # A 0.5 s "yes" between two turns: widened evenly to 1.5 s.
    turns = speech_turns(span((0.0, 3.0), (5.0, 5.5), (8.0, 11.0)), s(12), settings)
    assert turns == span((0.0, 3.0), (4.5, 6.0), (8.0, 11.0))
    # At the start of the recording: all the widening goes to the right.
    assert speech_turns(span((0.1, 0.6)), s(10), settings) == span((0.0, 1.5))
    # Hemmed in by neighbours 0.3 s away on both sides (pauses of 0.2 s or more separate
    # turns here): it takes what lies between them.
    settings = TurnSettings(min_turn_s=1.5, max_turn_s=12.0, max_pause_s=0.2)
    turns = speech_turns(span((0.0, 3.0), (3.3, 3.7), (4.0, 8.0)), s(9), settings)
    assert turns == span((0.0, 3.0), (3.0, 4.0), (4.0, 8.0))


def test_turn_settings_are_checked():
    with pytest.raises(ValueError, match="--min-turn-s"):
        TurnSettings(min_turn_s=5, max_turn_s=2)
    with pytest.raises(ValueError, match="--max-pause-s"):
        TurnSettings(max_pause_s=-1)


def test_the_speech_detector_leaves_torchs_thread_count_alone():
    """Importing silero_vad sets torch's threads to 1 for the whole process; the models and
    backbones of `medusa predict` (and its --threads) must keep the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        found = SpeechDetector().speech(np.zeros(s(2.0), dtype=np.float32))
        assert found == []  # digital silence holds no speech
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
