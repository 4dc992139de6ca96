"""Seeded perturbations for robustness: each changes the audio as named, deterministically."""

import json

import numpy as np
import pytest
import soundfile as sf

from medusa.evaluation import degrade, perturb
from medusa.evaluation.degrade import PerturbationError
from medusa.evaluation.perturb import (
    REGISTRY,
    conditions_from_config,
    make_condition,
    perturb_files,
    perturb_folder,
    registered_condition,
)

SR = 16000


def voiced(seconds: float = 3.0, seed: int = 0, f0: float = 140.0) -> np.ndarray:
    """Speech-like test audio: a harmonic tone with a syllable-rate envelope, plus faint noise."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    tone = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in range(1, 12))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    return (0.1 * tone * envelope + 0.002 * rng.standard_normal(len(t))).astype(np.float32)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    noise = noisy.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))


def band_power(wav: np.ndarray, low: float, high: float) -> float:
    freqs = np.fft.rfftfreq(len(wav), 1 / SR)
    power = np.abs(np.fft.rfft(wav.astype(np.float64))) ** 2
    return float(power[(freqs >= low) & (freqs < high)].mean())


@pytest.fixture
def sources(tmp_path):
    """A noise folder in ESC-50's layout (44.1 kHz, stereo, shorter than the clips) and five
    babble clips."""
    noise_dir = tmp_path / "ESC-50" / "audio"
    noise_dir.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i in range(3):
        sf.write(noise_dir / f"1-{i}-A-0.wav", 0.1 * rng.standard_normal((44100, 2)), 44100)
    clips = []
    for i in range(5):
        path = tmp_path / "train" / f"speaker{i}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, voiced(2.0 + 0.3 * i, seed=10 + i, f0=100 + 30 * i), SR)
        clips.append(str(path))
    return {"folder": str(noise_dir), "clips": clips}


def noise_conditions(sources, snr: int) -> list:
    return [
        *(registered_condition(f"noise_{c}_snr{snr}") for c in ("white", "pink", "brown")),
        registered_condition(f"noise_file_snr{snr}", folder=sources["folder"]),
        registered_condition(f"babble_snr{snr}", clips=sources["clips"]),
    ]


@pytest.mark.parametrize("snr", [20, 10, 0])
def test_noise_is_added_at_the_named_snr(sources, snr):
    clean = voiced()
    for condition in noise_conditions(sources, snr):
        noisy = condition.apply(clean, "dev/clip1.wav")
        assert len(noisy) == len(clean) and noisy.dtype == np.float32
        assert abs(snr_db(clean, noisy) - snr) < 0.5, condition.name


def test_noise_colours_have_their_spectral_slope():
    """White is flat, pink falls 10 dB and brown 20 dB per decade."""
    rng = np.random.default_rng(0)
    for colour, slope in (("white", 0.0), ("pink", -10.0), ("brown", -20.0)):
        noise = degrade.coloured_noise(10 * SR, colour, rng)
        drop = 10 * np.log10(band_power(noise, 1000, 2000) / band_power(noise, 100, 200))
        assert abs(drop - slope) < 1.5, colour


def test_silent_clip_stays_silent_and_silent_noise_is_refused(tmp_path):
    silence = np.zeros(SR, dtype=np.float32)
    assert not np.any(registered_condition("noise_white_snr0").apply(silence, "a"))
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    sf.write(quiet / "zero.wav", np.zeros(SR), SR)
    condition = registered_condition("noise_file_snr10", folder=str(quiet))
    with pytest.raises(PerturbationError, match="zero.wav"):
        condition.apply(voiced(), "a")


def test_telephone_band_limits_by_spectrum():
    white = (0.1 * np.random.default_rng(1).standard_normal(4 * SR)).astype(np.float32)
    phone = registered_condition("telephone").apply(white, "a")
    assert len(phone) == len(white)
    passband = band_power(phone, 400, 3300)
    assert passband == pytest.approx(band_power(white, 400, 3300), rel=0.05)
    assert 10 * np.log10(band_power(phone, 20, 270) / passband) < -40
    assert 10 * np.log10(band_power(phone, 3430, 7900) / passband) < -40


def test_speedup_plays_a_seeded_span_faster_and_keeps_the_rest():
    t = np.arange(4 * SR) / SR
    tone = (0.3 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)
    condition = registered_condition("speedup")  # 1.25x over 30 % of the clip
    fast = condition.apply(tone, "a")
    span = round(0.3 * len(tone))
    short = round(span / 1.25)
    assert len(fast) == len(tone) - span + short
    rng = np.random.default_rng(perturb.clip_seed(condition.seed, "a"))
    start = int(rng.integers(len(tone) - span + 1))
    assert np.array_equal(fast[:start], tone[:start])
    assert np.array_equal(fast[start + short :], tone[start + span :])
    segment = fast[start + 200 : start + short - 200]
    freqs = np.fft.rfftfreq(len(segment), 1 / SR)
    assert freqs[np.argmax(np.abs(np.fft.rfft(segment)))] == pytest.approx(625, abs=5)


def test_fade_ramps_in_and_out():
    clip = np.ones(3 * SR, dtype=np.float32)
    faded = registered_condition("fade").apply(clip, "a")  # 1 s linear each end
    np.testing.assert_allclose(faded[:SR], np.linspace(0, 1, SR, endpoint=False), atol=1e-3)
    np.testing.assert_allclose(faded[SR : 2 * SR], 1.0)
    np.testing.assert_allclose(faded[-SR:], np.linspace(1, 0, SR, endpoint=False), atol=1e-3)
    short = registered_condition("fade").apply(np.ones(SR, dtype=np.float32), "a")
    assert short[0] == 0 and short[SR // 2] == pytest.approx(1, abs=1e-3)  # each at most half


@pytest.mark.parametrize(("name", "max_kbps"), [("mp3_low", 20), ("opus_low", 12)])
def test_codec_round_trip_is_lossy_low_bitrate_and_keeps_length(name, max_kbps):
    clean = voiced(3.0)[: 3 * SR - 123]  # not a whole number of codec frames
    condition = registered_condition(name)
    params = dict(condition.params)
    encoded = degrade.encode(clean, params["codec"], params["compression_level"])
    assert len(encoded) * 8 / (len(clean) / SR) / 1000 < max_kbps
    decoded = condition.apply(clean, "a")
    assert len(decoded) == len(clean)
    error = np.sqrt(np.mean((decoded - clean) ** 2)) / np.sqrt(np.mean(clean**2))
    assert 0.01 < error < 0.6  # changed, but still the same clip, aligned (no codec delay)


def test_same_seed_same_audio_different_seed_or_clip_different(sources):
    clean = voiced()
    seeded = [
        name for name in REGISTRY if not name.startswith(("fade", "telephone", "mp3", "opus"))
    ]
    extra = {"noise_file": {"folder": sources["folder"]}, "babble": {"clips": sources["clips"]}}
    for name in seeded:
        kind = REGISTRY[name][0]
        condition = registered_condition(name, **extra.get(kind, {}))
        other_seed = registered_condition(name, seed=1, **extra.get(kind, {}))
        first = condition.apply(clean, "clip1")
        assert np.array_equal(first, condition.apply(clean.copy(), "clip1")), name
        assert not np.array_equal(first, condition.apply(clean, "clip2")), name
        assert not np.array_equal(first, other_seed.apply(clean, "clip1")), name


def write_clips(folder, n=3):
    paths = []
    for i in range(n):
        path = folder / f"spk{i}" / f"clip{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, voiced(1.5, seed=i), SR, subtype="PCM_16")
        paths.append(path)
    return paths


def test_batch_output_of_a_clip_does_not_depend_on_the_other_clips(tmp_path):
    paths = write_clips(tmp_path / "dev")
    condition = registered_condition("noise_pink_snr10")
    all_clips = perturb_files(paths, tmp_path / "dev", tmp_path / "all", condition)
    alone = perturb_files(paths[1:2], tmp_path / "dev", tmp_path / "alone", condition)
    reversed_ = perturb_folder(tmp_path / "dev", tmp_path / "rev", condition)
    assert alone[0].read_bytes() == all_clips[1].read_bytes() == reversed_[1].read_bytes()
    assert all_clips[0].read_bytes() != all_clips[1].read_bytes()


def test_perturb_files_writes_16_bit_unclipped_clips_and_the_condition(tmp_path):
    paths = write_clips(tmp_path / "dev", 2)
    sf.write(paths[0], np.full(SR, 0.99, dtype=np.float32), SR)  # loud: 0 dB noise would clip
    condition = registered_condition("noise_white_snr0")
    written = perturb_files(paths, tmp_path / "dev", tmp_path / "out", condition)
    assert [p.relative_to(tmp_path / "out").as_posix() for p in written] == [
        "spk0/clip0.wav",
        "spk1/clip1.wav",
    ]
    info = sf.info(written[0])
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    loud, _ = sf.read(written[0])
    assert np.max(np.abs(loud)) > 0.9  # scaled down as a whole: only the peak at full scale
    assert np.mean(np.abs(loud) > 0.999) < 0.001
    record = json.loads((tmp_path / "out" / "condition.json").read_text())
    assert record == {"name": "noise_white_snr0", "key": condition.key, **condition.canonical()}


def test_perturb_files_fails_whole_and_leaves_the_old_output(tmp_path):
    paths = write_clips(tmp_path / "dev", 2)
    out = tmp_path / "out"
    condition = registered_condition("telephone")
    perturb_files(paths[:1], tmp_path / "dev", out, condition)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    paths[1].write_bytes(b"not audio")
    with pytest.raises(ValueError, match="clip1.wav"):
        perturb_files(paths, tmp_path / "dev", out, condition)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    with pytest.raises(PerturbationError, match="not below the audio root"):
        perturb_files(paths, tmp_path / "elsewhere", out, condition)


def test_perturb_files_never_writes_into_the_corpus(tmp_path):
    corpus = tmp_path / "corpus"
    paths = write_clips(corpus, 2)
    before = {p: p.read_bytes() for p in corpus.rglob("*") if p.is_file()}
    condition = registered_condition("fade")
    for out in (corpus, corpus / "perturbed", tmp_path):
        with pytest.raises(PerturbationError, match="overlap"):
            perturb_files(paths, corpus, out, condition)
    with pytest.raises(PerturbationError, match="not below the audio root"):
        perturb_files(
            [corpus / "spk0" / ".." / ".." / "x.wav"], corpus, tmp_path / "out", condition
        )
    assert {p: p.read_bytes() for p in corpus.rglob("*") if p.is_file()} == before


def test_conditions_from_config(tmp_path, sources):
    section = {
        "seed": 3,
        "noise_dir": sources["folder"],
        "conditions": {
            "noise_pink_snr10": None,
            "babble_snr0": {"talkers": 2},
            "telephone": {},
            "street_snr5": {"kind": "noise_file", "snr_db": 5},
            "opus_lower": {"kind": "codec", "codec": "opus", "compression_level": 0.999, "seed": 9},
        },
    }
    conditions = conditions_from_config(section, babble_clips=sources["clips"])
    assert [c.name for c in conditions] == list(section["conditions"])
    by_name = {c.name: c for c in conditions}
    assert by_name["noise_pink_snr10"] == registered_condition("noise_pink_snr10", seed=3)
    assert dict(by_name["babble_snr0"].params)["talkers"] == 2
    assert dict(by_name["street_snr5"].params) == {"folder": sources["folder"], "snr_db": 5}
    assert by_name["opus_lower"].seed == 9
    babble = by_name["babble_snr0"].canonical()["params"]["clips"]
    assert babble["count"] == 5 and len(babble["sha256"]) == 64


def test_condition_key_follows_what_decides_the_output():
    base = registered_condition("noise_white_snr10")
    assert base.key == make_condition("renamed", "noise", dict(base.params)).key
    assert base.key != registered_condition("noise_white_snr10", seed=1).key
    assert base.key != registered_condition("noise_white_snr10", snr_db=11).key


@pytest.mark.parametrize(
    ("conditions", "key"),
    [
        ({"mystery": {}}, "robustness.conditions.mystery.kind"),
        ({"babble_snr0": {"talkers": 0}}, "robustness.conditions.babble_snr0.talkers"),
        ({"noise_white_snr10": {"colour": "purple"}}, "noise_white_snr10.colour"),
        ({"telephone": {"volume": 3}}, "robustness.conditions.telephone.volume"),
        ({"noise_file_snr0": {}}, "noise_file_snr0.folder: missing, and robustness.noise_dir"),
        ({"mp3_low": {"compression_level": 1.0}}, "mp3_low.compression_level"),
        ({"fade": {"seed": -1}}, "robustness.conditions.fade.seed"),
        ({"bad/name": {"kind": "fade"}}, "robustness.conditions.bad/name"),
        ({"telephone": {"high_hz": 5000}}, "telephone: telephone needs low_hz < high_hz"),
    ],
)
def test_bad_condition_config_names_the_key(conditions, key):
    with pytest.raises(PerturbationError, match=key.replace(".", r"\.")):
        conditions_from_config({"conditions": conditions}, babble_clips=["a.wav"] * 5)


def test_babble_without_clips_is_an_error():
    with pytest.raises(PerturbationError, match="babble_snr10: babble needs clips"):
        conditions_from_config({"conditions": {"babble_snr10": None}})
