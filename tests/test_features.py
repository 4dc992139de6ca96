"""Feature extraction: batching, padding, frame rates, layer views, stores, shards, audio input."""

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from medusa.core.audio import AudioError, load_audio
from medusa.core.manifest import subset_paths
from medusa.core.store import FeatureReader, merge_feature_files
from medusa.demo.backbones import build_backbone
from medusa.features.backbone import layer_view, load_backbone
from medusa.features.extract import extract_feature_set

from clip_tables import partition_index

SR = 16000
KINDS = {
    "wavlm-tiny": "audio",
    "hubert-tiny": "audio",
    "whisper-random-encoder": "whisper",
    "roberta-tiny": "text",
    "modernbert-tiny": "text",
}
TEXTS = [
    "i am so happy to see you again",
    "",
    "the train was late and the meeting started without us which was annoying",
    "no",
]


# Tiny models on a shared 2-core machine: extra threads only contend.
pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    root = tmp_path_factory.mktemp("backbones")
    return {name: str(build_backbone(name, root / name, seed=0)) for name in KINDS}


def _cfg(backbones, name, layer="last", **extra):
    return {"backbone": backbones[name], "kind": KINDS[name], "layer": layer, **extra}


def _waves(seconds=(1.0, 2.6, 0.45, 3.3), seed=0):
    rng = np.random.default_rng(seed)
    t = [np.arange(int(s * SR)) / SR for s in seconds]
    return [
        (0.3 * np.sin(2 * np.pi * (120 + 40 * i) * x) + 0.05 * rng.normal(size=len(x))).astype(
            np.float32
        )
        for i, x in enumerate(t)
    ]


def _inputs(name):
    return TEXTS if KINDS[name] == "text" else _waves()


def _assert_close(a, b, tol=1e-4):
    assert a.shape == b.shape
    scale = max(1.0, float(np.abs(b).max()))
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale)


@pytest.mark.parametrize("name", list(KINDS))
def test_batched_and_one_by_one_agree(backbones, name):
    bb = load_backbone(_cfg(backbones, name), "cpu")
    inputs = _inputs(name)
    batched = bb.encode_batch(inputs)
    sorted_batches = bb.encode(inputs, batch_size=3)
    for item, together, sorted_out in zip(inputs, batched, sorted_batches, strict=True):
        (alone,) = bb.encode_batch([item])
        width = 128 if KINDS[name] == "text" else 32  # medusa.demo.backbones.TINY_*HIDDEN
        assert together.dtype == np.float32 and together.shape[1] == bb.dim == width
        _assert_close(together, alone)
        _assert_close(sorted_out, alone)


@pytest.mark.parametrize("name", ["wavlm-tiny", "hubert-tiny", "roberta-tiny", "modernbert-tiny"])
def test_padding_does_not_change_a_clip(backbones, name):
    bb = load_backbone(_cfg(backbones, name, layer=0 if "wavlm" in name else "last"), "cpu")
    if KINDS[name] == "text":
        short, long = "hello", " ".join(["a long transcript"] * 40)
    else:
        short, long = _waves((0.8, 6.0))
    (alone,) = bb.encode_batch([short])
    padded, _ = bb.encode_batch([short, long])  # short is padded to the long one's length
    _assert_close(padded, alone)
    assert np.abs(padded).mean() > 0.1  # real features, not zeros


@pytest.mark.parametrize("name", ["hubert-tiny", "whisper-random-encoder", "roberta-tiny"])
def test_reduced_precision_path_stays_close(backbones, name):
    # The GPU path runs under bf16 autocast; CPU autocast exercises the same code. oneDNN is
    # off because torch 2.11's oneDNN grouped conv1d in bf16 (the wav2vec2 positional conv)
    # returns wrong values on CPU; extraction never uses autocast on CPU.
    bb = load_backbone(_cfg(backbones, name), "cpu")
    inputs = _inputs(name)[:2]
    full = bb.encode_batch(inputs)
    bb.amp_dtype = torch.bfloat16
    with torch.backends.mkldnn.flags(enabled=False):
        half = bb.encode_batch(inputs)
    for a, b in zip(half, full, strict=True):
        assert a.dtype == np.float32 and a.shape == b.shape
        assert np.abs(a - b).mean() < 0.05 * np.abs(b).mean()


def test_audio_frames_follow_the_conv_stack(backbones):
    bb = load_backbone(_cfg(backbones, "wavlm-tiny"), "cpu")
    waves = _waves((1.0, 3.0)) + [np.zeros(100, np.float32)]
    out = bb.encode_batch(waves)
    assert [len(o) for o in out] == [49, 149, 1]  # ~50 frames/s; a tiny clip still gets a frame


def test_whisper_has_50_frames_per_second_not_1500_per_clip(backbones):
    bb = load_backbone(_cfg(backbones, "whisper-random-encoder"), "cpu")
    seconds = (1.0, 2.5, 7.3)
    out = bb.encode_batch(_waves(seconds))
    for s, frames in zip(seconds, out, strict=True):
        assert len(frames) == math.ceil(s * SR / 320)
        assert abs(len(frames) / s - 50) < 1


def test_whisper_45s_clip_in_two_windows(backbones):
    bb = load_backbone(_cfg(backbones, "whisper-random-encoder"), "cpu")
    (clip,) = _waves((45.0,))
    (out,) = bb.encode_batch([clip])
    assert out.shape == (2250, bb.dim)
    first, rest = bb.encode_batch([clip[: 30 * SR], clip[30 * SR :]])
    _assert_close(out[:1500], first)
    _assert_close(out[1500:], rest)


@pytest.fixture(scope="module")
def deep_wavlm(tmp_path_factory):
    """A 5-layer WavLM with the stable layer norm, like WavLM-large (sum_last4 needs >= 4)."""
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    folder = tmp_path_factory.mktemp("deep_wavlm")
    config = WavLMConfig(
        hidden_size=16,
        num_hidden_layers=5,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
    )
    torch.manual_seed(0)
    WavLMModel(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True).save_pretrained(folder)
    return str(folder)


def test_layer_views_are_what_they_claim(deep_wavlm):
    (clip,) = _waves((1.5,))
    views = {
        layer: load_backbone({"backbone": deep_wavlm, "kind": "audio", "layer": layer}, "cpu")
        for layer in ("last", "sum_last4", 0, 2, -1)
    }
    model = views["last"].model
    inputs = views["last"].feature_extractor([clip], sampling_rate=SR, return_tensors="pt")
    with torch.inference_mode():
        out = model(inputs["input_values"], output_hidden_states=True)
    hs, last = out.hidden_states, out.last_hidden_state[0].numpy()
    assert len(hs) == 6
    # The transformers 5 behaviour our convention corrects: hidden_states[-1] is pre-LayerNorm.
    assert not np.allclose(hs[-1][0].numpy(), last, atol=1e-3)
    with torch.inference_mode():
        normed = model.encoder.layer_norm(hs[-1])[0].numpy()
    np.testing.assert_allclose(normed, last, atol=1e-5)
    got = {layer: bb.encode_batch([clip])[0] for layer, bb in views.items()}
    _assert_close(got["last"], last)
    _assert_close(got[-1], last)
    _assert_close(got[0], hs[0][0].numpy())
    _assert_close(got[2], hs[2][0].numpy())
    want_sum = hs[-4][0] + hs[-3][0] + hs[-2][0] + out.last_hidden_state[0]
    _assert_close(got["sum_last4"], want_sum.numpy())


def test_layer_view_rejects_bad_layers(backbones):
    states = [torch.zeros(1, 2, 3)] * 3
    with pytest.raises(ValueError, match="sum_last4 needs at least 4 layers"):
        layer_view(states, "sum_last4")
    with pytest.raises(ValueError, match="out of range"):
        layer_view(states, 3)
    with pytest.raises(ValueError, match="sum_last4 needs at least 4 layers"):
        load_backbone(_cfg(backbones, "wavlm-tiny", layer="sum_last4"), "cpu")
    with pytest.raises(ValueError, match="out of range"):
        load_backbone(_cfg(backbones, "wavlm-tiny", layer=7), "cpu")
    with pytest.raises(ValueError, match="kind"):
        load_backbone({"backbone": backbones["wavlm-tiny"], "kind": "video", "layer": "last"})


def test_text_empty_transcript_and_truncation(backbones):
    for name in ("roberta-tiny", "modernbert-tiny"):
        bb = load_backbone(_cfg(backbones, name), "cpu")
        empty, long = bb.encode_batch(["", "word " * 3000])
        assert len(empty) == 2  # just the special tokens: <s></s> or [CLS][SEP]
        assert np.isfinite(empty).all()
        assert len(long) == bb.max_length <= 512


def test_missing_weights_are_refused(tmp_path, backbones):
    folder = tmp_path / "broken"
    build_backbone("hubert-tiny", folder)
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = 3  # the checkpoint holds 2 layers: layer 2 would be random
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="lacks or mismatches weights"):
        load_backbone({"backbone": str(folder), "kind": "audio", "layer": "last"}, "cpu")


# ---------------------------------------------------------------------------------------------
# Whole stage: manifest -> HDF5 store
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Seven clips in a manifest: five dev (one 8 kHz stereo), two train; plus transcripts."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "Audios").mkdir()
    rows = ["id\tpath\tsubset\tduration_s"]
    seconds = [1.2, 0.6, 2.4, 1.8, 0.9, 1.1, 1.5]
    subsets = ["dev", "dev", "train", "dev", "dev", "train", "dev"]
    ids = ["d_03", "d_01", "t_01", "d_02", "d_05", "t_02", "d_04"]
    for i, (utt_id, s, subset, wave) in enumerate(
        zip(ids, seconds, subsets, _waves(seconds, seed=3), strict=True)
    ):
        path = root / "Audios" / f"{utt_id}.wav"
        if i == 0:  # stereo at 8 kHz: must be downmixed and resampled
            sf.write(path, np.stack([wave[::2], wave[::2]], axis=1), SR // 2, subtype="PCM_16")
        else:
            sf.write(path, wave, SR, subtype="PCM_16")
        rows.append(f"{utt_id}\t{path}\t{subset}\t{s}")
    (root / "manifest.tsv").write_text("\n".join(rows) + "\n")
    texts = {u: TEXTS[i % len(TEXTS)] for i, u in enumerate(ids)}
    with open(root / "asr.jsonl", "w") as f:
        for u in sorted(ids):
            f.write(json.dumps({"id": u, "text": texts[u], "avg_logprob": -0.3}) + "\n")
    return root


def test_extract_writes_the_store_in_id_order(backbones, corpus, tmp_path):
    cfg = _cfg(backbones, "hubert-tiny", batch_size=2)
    out = tmp_path / "hubert" / "dev.h5"
    n = extract_feature_set(
        "hubert", cfg, partition_index(corpus / "manifest.tsv", "dev"), out, progress=False
    )
    assert n == 5
    bb = load_backbone(cfg, "cpu")
    with FeatureReader(out) as r:
        r.verify()
        assert r.ids == ["d_01", "d_02", "d_03", "d_04", "d_05"]
        attrs = r.attrs
        assert attrs["backbone"] == backbones["hubert-tiny"] and attrs["kind"] == "audio"
        assert attrs["layer"] == "last" and attrs["dim"] == 32 and attrs["frame_rate"] == 50.0
        assert attrs["feature_set"] == "hubert" and len(attrs["weights_sha256"]) == 64
        for utt_id, path in subset_paths(corpus / "manifest.tsv", "dev"):
            (want,) = bb.encode_batch([load_audio(path)])
            np.testing.assert_allclose(r[utt_id], want.astype(np.float16), atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("name", ["wavlm-tiny", "roberta-tiny", "whisper-random-encoder"])
def test_sharded_and_unsharded_runs_give_identical_files(
    backbones, corpus, tmp_path, name, monkeypatch
):
    # Blocks of one batch of 2 clips: 5 clips = 3 blocks, split 1 + 2 over the two shards.
    monkeypatch.setattr("medusa.features.extract.BATCHES_PER_BLOCK", 1)
    cfg = _cfg(backbones, name, batch_size=2)
    args = {"asr_path": corpus / "asr.jsonl", "progress": False}
    manifest = corpus / "manifest.tsv"
    extract_feature_set("fs", cfg, partition_index(manifest, "dev"), tmp_path / "whole.h5", **args)
    shards = [tmp_path / f"shard{k}.h5" for k in range(2)]
    for k, path in enumerate(shards):
        extract_feature_set(
            "fs", cfg, partition_index(manifest, "dev"), path, shard=k, n_shards=2, **args
        )
    assert [len(FeatureReader(p)) for p in shards] == [2, 3]
    merge_feature_files(shards, tmp_path / "merged.h5")
    with FeatureReader(tmp_path / "whole.h5") as a, FeatureReader(tmp_path / "merged.h5") as b:
        assert a.ids == b.ids and len(a) == 5
        assert a.attrs == b.attrs
        np.testing.assert_array_equal(a.lengths, b.lengths)
        np.testing.assert_array_equal(a.offsets, b.offsets)
        np.testing.assert_array_equal(a._frames()[()], b._frames()[()])


def test_text_extraction_handles_empty_transcripts(backbones, corpus, tmp_path):
    cfg = _cfg(backbones, "modernbert-tiny")
    out = tmp_path / "text.h5"
    extract_feature_set(
        "mb",
        cfg,
        partition_index(corpus / "manifest.tsv", "dev"),
        out,
        asr_path=corpus / "asr.jsonl",
        progress=False,
    )
    transcripts = {
        json.loads(x)["id"]: json.loads(x)["text"]
        for x in (corpus / "asr.jsonl").read_text().splitlines()
    }
    with FeatureReader(out) as r:
        assert r.attrs["frame_rate"] == 0.0 and r.attrs["kind"] == "text"
        empty = [u for u in r.ids if transcripts[u] == ""]
        assert empty and all(len(r[u]) == 2 for u in empty)


def test_text_extraction_names_missing_transcripts(backbones, corpus, tmp_path):
    (tmp_path / "asr.jsonl").write_text(json.dumps({"id": "d_01", "text": "hi"}) + "\n")
    with pytest.raises(ValueError, match="no transcript for 4 clip"):
        extract_feature_set(
            "rb",
            _cfg(backbones, "roberta-tiny"),
            partition_index(corpus / "manifest.tsv", "dev"),
            tmp_path / "x.h5",
            asr_path=tmp_path / "asr.jsonl",
            progress=False,
        )
    assert not (tmp_path / "x.h5").exists()


def test_empty_subset_gives_an_empty_store(backbones, corpus, tmp_path):
    n = extract_feature_set(
        "w",
        _cfg(backbones, "wavlm-tiny"),
        partition_index(corpus / "manifest.tsv", "test"),
        tmp_path / "t.h5",
    )
    with FeatureReader(tmp_path / "t.h5") as r:
        assert n == 0 and len(r) == 0 and r.dim == 32


# ---------------------------------------------------------------------------------------------
# Audio input and the manifest
# ---------------------------------------------------------------------------------------------


def test_load_audio_downmixes_and_resamples(tmp_path):
    t = np.arange(8000) / 8000
    left, right = np.sin(2 * np.pi * 200 * t), 0.5 * np.sin(2 * np.pi * 200 * t)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 8000, subtype="FLOAT")
    wav = load_audio(tmp_path / "s.wav")
    assert wav.dtype == np.float32 and wav.ndim == 1 and len(wav) == SR
    assert abs(np.abs(wav).max() - 0.75) < 0.02  # the mean of the two channels
    sf.write(tmp_path / "m.wav", left, 8000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "m.wav", target_sr=8000), left, atol=1e-6)


def test_load_audio_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        load_audio(tmp_path / "nope.wav")
    (tmp_path / "bad.wav").write_bytes(b"RIFF but not really")
    with pytest.raises(AudioError, match="bad.wav"):
        load_audio(tmp_path / "bad.wav")


def test_subset_paths(corpus, tmp_path):
    rows = subset_paths(corpus / "manifest.tsv", "train")
    assert [u for u, _ in rows] == ["t_01", "t_02"]
    assert subset_paths(corpus / "manifest.tsv", "nothing") == []
    (tmp_path / "m.tsv").write_text("id\tsubset\nx\tdev\n")
    with pytest.raises(ValueError, match=r"m.tsv: missing column\(s\) \['path'\]"):
        subset_paths(tmp_path / "m.tsv", "dev")
    (tmp_path / "m.tsv").write_text("id\tpath\tsubset\nx\ta.wav\tdev\nx\tb.wav\tdev\n")
    with pytest.raises(ValueError, match="m.tsv:3: id 'x' appears twice"):
        subset_paths(tmp_path / "m.tsv", "dev")
