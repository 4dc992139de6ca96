"""Reading a recording in pieces (medusa.inference.stream): the same samples as reading it whole.

`medusa predict` reads every file through `read_range` and `blocks`; a clip read in full must
be what `load_audio` (the workflow's reader) gives, bit for bit at 16 kHz, and any range of a
file at another rate or channel count must equal the same range of the whole file resampled.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from medusa.core.audio import AudioError, load_audio
from medusa.inference.stream import audio_info, blocks, read_range

RANGES = [(0, 1), (1000, 5000), (12345, 54321), (-50, 700), (60000, 10**9)]


@pytest.mark.parametrize(
    ("rate", "channels", "fmt"),
    [
        (16000, 1, "wav"),
        (16000, 2, "flac"),
        (44100, 2, "flac"),
        (48000, 1, "wav"),
        (8000, 1, "wav"),
        (22050, 2, "ogg"),
    ],
)
def test_ranges_and_blocks_equal_the_whole_file_read_at_once(tmp_path, rate, channels, fmt):
    rng = np.random.default_rng(rate)
    audio = (0.1 * rng.standard_normal((rate * 4 + 37, channels))).astype(np.float32)
    path = tmp_path / f"audio.{fmt}"
    sf.write(path, audio, rate)
    whole = load_audio(path)
    info = audio_info(path)
    assert info.samples == len(whole)
    tolerance = 0.0 if rate == 16000 else 1e-6  # resampling: float rounding only
    for start, end in RANGES:
        got = read_range(info, start, end)
        expected = whole[max(0, start) : min(end, len(whole))]
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance)
    pieces = list(blocks(info, 0.7))
    assert [start for start, _ in pieces] == list(range(0, len(whole), 11200))
    np.testing.assert_allclose(
        np.concatenate([b for _, b in pieces]), whole, rtol=0, atol=tolerance
    )


def test_an_unreadable_file_is_named(tmp_path):
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage" + bytes(200))
    with pytest.raises(AudioError, match="broken.wav"):
        audio_info(path)
