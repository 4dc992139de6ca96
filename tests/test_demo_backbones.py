"""Local demo backbones: each one round-trips through its loader and behaves like the real kind."""

import numpy as np
import pytest
import torch
import whisper
from transformers import AutoFeatureExtractor, AutoModel, AutoTokenizer

from medusa.asr.transcribe import load_asr_model, transcribe_clips, window_samples
from medusa.core.metrics import normalise_words, word_errors
from medusa.demo import backbones
from medusa.demo.corpus import Synthesizer
from medusa.features.backbone import MIXED_MASK_TYPES_WARNING

HF_BACKBONES = {
    # name: (hidden width, number of hidden_states = layers + embeddings)
    "wavlm-tiny": (32, 3),
    "hubert-tiny": (32, 3),
    "whisper-random-encoder": (32, 3),
    "whisper-tiny-en-encoder": (384, 5),
    "roberta-tiny": (128, 3),
    "modernbert-tiny": (128, 3),
    "minilm-l6": (384, 7),
}
TEXT_BACKBONES = ("roberta-tiny", "modernbert-tiny", "minilm-l6")
# Calling WavLM directly with a padding mask makes torch warn (see medusa.features._forward).
WAVLM_MASK_WARNING_IGNORED = f"ignore:{MIXED_MASK_TYPES_WARNING}:UserWarning"

# No digits or number words: Whisper writes those in varied forms.
ASR_SENTENCES = (
    ("Please close the door when you leave the kitchen.", "en-us", 160, 45),
    ("I cannot believe you forgot my birthday again.", "en-us+m3", 170, 40),
    ("The weather was lovely at the beach this morning.", "en-us+f3", 165, 55),
    ("We should ask your brother to help us move the table.", "en-us+m1", 155, 50),
    ("She was so happy when the letter finally arrived.", "en-us+f1", 170, 60),
)


# Tiny models on a shared 2-core machine: extra threads only contend.
pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """Build each backbone once per module (seed 0) and return its path."""
    root = tmp_path_factory.mktemp("backbones")
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = backbones.build_backbone(name, root / name, seed=0)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def speech():
    synth = Synthesizer()
    return [
        (text, synth.synthesize(text, voice=voice, rate=rate, pitch=pitch))
        for text, voice, rate, pitch in ASR_SENTENCES
    ]


def load_hf(path):
    model, info = AutoModel.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"], info["missing_keys"]
    assert not info["mismatched_keys"], info["mismatched_keys"]
    return model.eval()


def log_mels(clips, n_mels=80):
    return torch.stack(
        [
            whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(c)), n_mels)
            for c in clips
        ]
    )


def decode(model, clips):
    options = whisper.DecodingOptions(
        language="en", temperature=0.0, without_timestamps=True, fp16=False
    )
    return whisper.decode(model, log_mels(clips, model.dims.n_mels), options)


def test_word_errors():
    assert word_errors(["a", "b", "c"], ["a", "c"]) == 1
    assert word_errors(["a", "b"], ["x", "a", "b", "y"]) == 2
    assert word_errors([], ["a"]) == 1
    assert normalise_words("Hello, World! It's") == ["hello", "world", "it", "s"]


def test_backbone_path_and_unknown_name(tmp_path):
    assert backbones.backbone_path("whisper-random-asr", tmp_path) == tmp_path / "model.pt"
    assert backbones.backbone_path("wavlm-tiny", tmp_path) == tmp_path
    with pytest.raises(ValueError, match="unknown backbone 'wavlm-large'"):
        backbones.build_backbone("wavlm-large", tmp_path / "x")
    with pytest.raises(ValueError, match="unknown audio backbone kind"):
        backbones.build_tiny_audio_backbone("wav2vec2", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_read_ct2_model_rejects_truncated_file(tmp_path):
    source = backbones.tiny_en_ct2_dir() / "model.bin"
    broken = tmp_path / "model.bin"
    broken.write_bytes(source.read_bytes()[:200_000])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        backbones.read_ct2_model(broken)


@pytest.mark.parametrize("name", sorted(HF_BACKBONES))
@pytest.mark.filterwarnings(WAVLM_MASK_WARNING_IGNORED)
def test_hf_backbone_loads_without_missing_keys(build, name):
    width, n_states = HF_BACKBONES[name]
    path = build(name)
    model = load_hf(path)
    with torch.inference_mode():
        if name in TEXT_BACKBONES:
            tokenizer = AutoTokenizer.from_pretrained(path)
            batch = tokenizer(["", "I am so happy today!"], padding=True, return_tensors="pt")
            out = model(**batch, output_hidden_states=True)
        elif "whisper" in name:
            extractor = AutoFeatureExtractor.from_pretrained(path)
            clip = np.random.default_rng(0).normal(0, 0.1, 2 * 16000).astype(np.float32)
            features = extractor(clip, sampling_rate=16000, return_tensors="pt").input_features
            out = model.get_encoder()(features, output_hidden_states=True)
        else:
            extractor = AutoFeatureExtractor.from_pretrained(path)
            clip = np.random.default_rng(0).normal(0, 0.1, 2 * 16000).astype(np.float32)
            batch = extractor(clip, sampling_rate=16000, return_tensors="pt")
            assert "attention_mask" in batch
            out = model(**batch, output_hidden_states=True)
    assert len(out.hidden_states) == n_states
    assert out.last_hidden_state.shape[-1] == width
    assert torch.isfinite(out.last_hidden_state).all()


@pytest.mark.parametrize("name", ["wavlm-tiny", "hubert-tiny"])
@pytest.mark.filterwarnings(WAVLM_MASK_WARNING_IGNORED)
def test_tiny_audio_backbone_gives_50_frames_per_second(build, name):
    path = build(name)
    model = load_hf(path)
    extractor = AutoFeatureExtractor.from_pretrained(path)
    assert extractor.do_normalize and extractor.sampling_rate == 16000
    rng = np.random.default_rng(1)
    clips = [rng.normal(0, 0.1, int(s * 16000)).astype(np.float32) for s in (3.0, 1.5)]
    batch = extractor(clips, sampling_rate=16000, padding=True, return_tensors="pt")
    with torch.inference_mode():
        frames = model(**batch).last_hidden_state.shape[1]
    assert frames == 149  # 3 s: (48000 - 400) // 320 + 1
    lengths = model._get_feat_extract_output_lengths(batch["attention_mask"].sum(-1))
    assert lengths.tolist() == [149, 74]


@pytest.mark.parametrize("name", ["roberta-tiny", "modernbert-tiny"])
def test_tiny_text_tokenizer(build, name):
    tokenizer = AutoTokenizer.from_pretrained(build(name))
    assert tokenizer.model_max_length == 512
    empty = tokenizer("")["input_ids"]
    assert empty == [tokenizer.cls_token_id, tokenizer.sep_token_id]
    for text in ("I miss the old house.", "Café naïve, zebra!"):  # byte-level: no <unk>
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_minilm_is_the_trained_model(build):
    path = build("minilm-l6")
    model = load_hf(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = tokenizer(
        ["I am happy", "I am joyful", "the stock market"], padding=True, return_tensors="pt"
    )
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None]
    pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert pooled[0] @ pooled[1] > pooled[0] @ pooled[2] + 0.3


@pytest.mark.parametrize("name", ["roberta-tiny", "wavlm-tiny", "whisper-random-asr"])
def test_builders_are_deterministic(tmp_path, name):
    def weights(seed, folder):
        path = backbones.build_backbone(name, tmp_path / folder, seed=seed)
        if name.endswith("-asr"):
            return torch.load(path, weights_only=True)["model_state_dict"]
        return load_hf(path).state_dict()

    first, again, other = weights(0, "a"), weights(0, "b"), weights(1, "c")
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
    if name == "roberta-tiny":
        assert (tmp_path / "a/tokenizer.json").read_bytes() == (
            tmp_path / "b/tokenizer.json"
        ).read_bytes()


def test_build_replaces_folder_atomically(tmp_path):
    target = tmp_path / "hubert"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    backbones.build_backbone("hubert-tiny", target, seed=0)
    assert sorted(p.name for p in target.iterdir()) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["hubert"]  # no temporary leftovers


def test_random_whisper_asr_decodes_without_nan(build, speech):
    model = whisper.load_model(str(build("whisper-random-asr")), device="cpu")
    results = decode(model, [clip for _, clip in speech[:2]])
    for result in results:
        assert isinstance(result.text, str) and len(result.tokens) <= 32
        assert np.isfinite(result.avg_logprob) and np.isfinite(result.no_speech_prob)


def test_converted_tiny_en_encoder_matches_openai_whisper(build, speech):
    reference = whisper.load_model(str(build("whisper-tiny-en-asr")), device="cpu").eval()
    hf = load_hf(build("whisper-tiny-en-encoder"))
    mel = log_mels([speech[0][1]])
    # The folder's feature extractor computes the same log-mel as openai-whisper.
    extractor = AutoFeatureExtractor.from_pretrained(build("whisper-tiny-en-encoder"))
    features = extractor(speech[0][1], sampling_rate=16000, return_tensors="pt").input_features
    assert (features - mel).abs().max() < 1e-5
    with torch.inference_mode():
        expected = reference.encoder(mel)
        actual = hf.get_encoder()(mel).last_hidden_state
    assert actual.shape == (1, 1500, 384)
    assert (expected - actual).abs().max() < 1e-4


@pytest.mark.parametrize(
    ("name", "window_s"), [("whisper-tiny-en-asr", 30), ("whisper-tiny-en-15s-asr", 15)]
)
def test_converted_tiny_en_transcribes_synthesised_speech(build, speech, name, window_s):
    model = load_asr_model(str(build(name)), "cpu")
    assert window_samples(model) == window_s * 16000
    items = [(str(i), clip) for i, (_, clip) in enumerate(speech)]
    results = transcribe_clips(model, items, 8, "cpu", progress=False)
    errors = words = 0
    for (text, _), result in zip(speech, results, strict=True):
        reference = normalise_words(text)
        errors += word_errors(reference, normalise_words(result["text"]))
        words += len(reference)
    wer = errors / words
    print(f"{name} WER on {len(speech)} synthesised sentences: {wer:.3f}")
    assert wer < 0.2, [r["text"] for r in results]
