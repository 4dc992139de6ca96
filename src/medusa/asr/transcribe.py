"""ASR stage: openai-whisper transcripts of every clip of an audio partition.

Greedy decoding (temperature 0), English, no timestamps, no prompt (so no conditioning on
previous text). Clips are cut into windows of at most the model's input length (30 s; one
window for most clips); the windows of a block of clips are sorted by length and decoded in
batches with ``whisper.decode`` on ``(B, n_mels, 3000)`` log-mel batches, and each clip's window
texts are joined in order.

A clip longer than the window is cut where it is quietest, not blindly at the window length:
each cut is the point of lowest short-time energy (``CUT_SMOOTHING_S`` average) in the last
``CUT_SEARCH_FRACTION`` of the window, so a cut falls in a pause between words when there is
one. A window whose ``no_speech_prob`` is above ``no_speech_threshold`` (config
``asr.no_speech_threshold``; whisper's own default for skipping a segment is 0.6) contributes
no text: on silence or a short tail, whisper tends to invent "Thank you." or "you" while
scoring it as no speech (0.8-0.99).

For a clip of several windows the scores are combined as:

- ``avg_logprob``: the mean over the windows that kept their text (over all windows when none
  did), weighted by each window's token count (+1 for the end token, as whisper itself
  averages), i.e. exactly the average log-probability per token of the joined transcript;
- ``no_speech_prob``: the mean over all windows weighted by window duration, i.e. the expected
  share of the clip's audio that holds no speech.

API:

- ``load_asr_model(name_or_path, device)``: a whisper model from an official name
  (``large-v3``, needs the download cache) or a local checkpoint file.
- ``transcribe_clips(model, items, batch_size, device, progress=True, language="en",
  no_speech_threshold=None)``: ``[(id, audio)]`` -> ``[{"id", "text", "avg_logprob",
  "no_speech_prob"}]`` in input order (None keeps every window's text).
- ``run_asr(model_name_or_path, index_path, out_path, batch_size=16, shard=0, n_shards=1,
  device="cpu", language="en", checkpoint=None, audio_root="", no_speech_threshold=None)``:
  one audio partition (or one shard of it, see ``medusa.core.store.shard_ids``) from its clip
  table to a transcript file (``medusa.asr.transcripts``) whose first line records the model and
  the sha256 of the checkpoint that ran.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import whisper
from tqdm import tqdm

from medusa.asr.transcripts import write_transcripts
from medusa.core.audio import SAMPLE_RATE, load_audio
from medusa.core.fetch import FETCH_COMMAND, FetchError, checkpoint_sha256, whisper_checkpoint
from medusa.core.store import shard_ids
from medusa.corpus.audio_index import clip_paths

log = logging.getLogger(__name__)
WINDOW_SAMPLES = whisper.audio.N_SAMPLES  # 30 s at 16 kHz: whisper's fixed input length
# Clips are transcribed in blocks of this many batches of consecutive ids (see run_asr).
BATCHES_PER_BLOCK = 16
# Where a long clip is cut: the quietest point of the last sixth of each window (5 s of 30 s),
# energy averaged over 0.1 s (a pause between words, not the closure of a plosive).
CUT_SEARCH_FRACTION = 1 / 6
CUT_SMOOTHING_S = 0.1
ENERGY_HOP = 160  # 10 ms at 16 kHz


def load_asr_model(name_or_path: str, device: torch.device | str = "cpu") -> whisper.Whisper:
    """Load an openai-whisper model by official name or local checkpoint path, in eval mode."""
    device = torch.device(device)
    if not os.path.isfile(name_or_path) and name_or_path not in whisper.available_models():
        raise ValueError(
            f"whisper model {name_or_path!r} is neither a checkpoint file nor one of "
            f"{whisper.available_models()}"
        )
    try:
        model = whisper.load_model(name_or_path, device=device)
    except (OSError, RuntimeError) as err:  # no network and not in ~/.cache/whisper
        raise RuntimeError(
            f"cannot load whisper model {name_or_path!r} ({err}); without network, download it "
            f"beforehand or pass a local checkpoint path"
        ) from err
    return model.eval()


def window_samples(model: whisper.Whisper) -> int:
    """Samples per encoder window: 30 s for every released model (1500 encoder frames, two
    mel frames each); shorter for a checkpoint built with a reduced audio context."""
    return model.dims.n_audio_ctx * 2 * whisper.audio.HOP_LENGTH


def window_starts(audio: np.ndarray, size: int = WINDOW_SAMPLES) -> list[int]:
    """Where each window of a clip starts: 0, then, while more than `size` samples are left,
    the quietest point of the last CUT_SEARCH_FRACTION of the current window (the one nearest
    the window's end among equally quiet points), so that every window is at most `size`."""
    starts = [0]
    if len(audio) <= size:
        return starts
    frames = len(audio) // ENERGY_HOP
    power = np.square(audio[: frames * ENERGY_HOP].astype(np.float64)).reshape(frames, -1)
    smoothing = max(1, round(CUT_SMOOTHING_S * SAMPLE_RATE / ENERGY_HOP))
    energy = np.convolve(power.mean(axis=1), np.ones(smoothing) / smoothing, mode="same")
    search = max(1, int(size * CUT_SEARCH_FRACTION) // ENERGY_HOP)
    while len(audio) - starts[-1] > size:
        last = (starts[-1] + size) // ENERGY_HOP  # the cut at frame `last` keeps <= size
        first = max(last - search, starts[-1] // ENERGY_HOP + 1)
        region = energy[first : last + 1]
        quietest = first + len(region) - 1 - int(np.argmin(region[::-1]))
        starts.append(quietest * ENERGY_HOP)
    return starts


def _windows(audio: np.ndarray, size: int = WINDOW_SAMPLES) -> list[np.ndarray]:
    """Cut a clip into consecutive windows of at most `size` samples at quiet points (an
    empty clip is one empty window)."""
    starts = window_starts(audio, size)
    return [audio[a:b] for a, b in zip(starts, [*starts[1:], len(audio)], strict=True)]


def _log_mel(
    window: np.ndarray, n_mels: int, device: torch.device, size: int = WINDOW_SAMPLES
) -> torch.Tensor:
    # One window at a time: whisper normalises the log-mel by the maximum of its input, so a
    # batched call would let clips influence each other.
    padded = whisper.pad_or_trim(torch.from_numpy(np.asarray(window, dtype=np.float32)), size)
    return whisper.log_mel_spectrogram(padded.to(device), n_mels=n_mels)


@torch.inference_mode()
def transcribe_clips(
    model: whisper.Whisper,
    items: Sequence[tuple[str, np.ndarray]],
    batch_size: int,
    device: torch.device | str,
    progress: bool = True,
    language: str = "en",
    no_speech_threshold: float | None = None,
) -> list[dict]:
    """Transcribe 16 kHz clips ``[(utt_id, audio)]``; results in input order. A window whose
    no_speech_prob is above `no_speech_threshold` adds no text (None: every window does)."""
    device = torch.device(device)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    options = whisper.DecodingOptions(
        task="transcribe",
        language=language,
        temperature=0.0,
        without_timestamps=True,
        fp16=device.type == "cuda",  # fp16 needs a GPU; fp32 on CPU
    )
    n_mels = model.dims.n_mels
    size = window_samples(model)
    # (clip index, window index, samples), longest first: a batch's windows then take similar
    # numbers of decoding steps, and an out-of-memory error shows up on the first batch.
    windows = [
        (c, w, win)
        for c, (_, audio) in enumerate(items)
        for w, win in enumerate(_windows(audio, size))
    ]
    windows.sort(key=lambda x: -len(x[2]))
    decoded: dict[tuple[int, int], whisper.DecodingResult] = {}
    batches = range(0, len(windows), batch_size)
    for start in tqdm(batches, desc="asr", unit="batch", disable=not progress):
        batch = windows[start : start + batch_size]
        mel = torch.stack([_log_mel(win, n_mels, device, size) for _, _, win in batch])
        for (c, w, _), result in zip(batch, whisper.decode(model, mel, options), strict=True):
            decoded[c, w] = result
    results = []
    for c, (utt_id, audio) in enumerate(items):
        parts = _windows(audio, size)
        outs = [decoded[c, w] for w in range(len(parts))]
        lengths = [len(p) for p in parts]
        results.append({"id": utt_id, **combine_windows(outs, lengths, no_speech_threshold)})
    return results


def combine_windows(
    outs: Sequence[whisper.DecodingResult],
    samples: Sequence[int],
    no_speech_threshold: float | None = None,
) -> dict:
    """One clip's text and scores from its windows' results (see the module docstring)."""
    speech = [
        o for o in outs if no_speech_threshold is None or o.no_speech_prob <= no_speech_threshold
    ]
    scored = speech or outs
    tokens = [len(o.tokens) + 1 for o in scored]  # whisper divides by len(tokens) + 1
    return {
        "text": " ".join(t for o in speech if (t := o.text.strip())),
        "avg_logprob": float(np.average([o.avg_logprob for o in scored], weights=tokens)),
        "no_speech_prob": float(
            np.average([o.no_speech_prob for o in outs], weights=[max(n, 1) for n in samples])
        ),
    }


def run_asr(
    model_name_or_path: str,
    index_path: str | os.PathLike,
    out_path: str | os.PathLike,
    batch_size: int = 16,
    shard: int = 0,
    n_shards: int = 1,
    device: torch.device | str = "cpu",
    progress: bool = True,
    language: str = "en",
    revision: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    audio_root: str | os.PathLike = "",
    no_speech_threshold: float | None = None,
) -> int:
    """Transcribe one audio partition (shard) into a transcript file sorted by id.

    `index_path`: the partition's clip table (``medusa.corpus.audio_index.write_audio_index``),
    whose paths are relative to `audio_root` (the corpus folder, data.root).
    `checkpoint`: the local copy of a remote model (``medusa.core.fetch``), checked against the
    sha256 that `model_name_or_path` and `revision` pin; the file's first line records both.

    Clips are read and transcribed in blocks of BATCHES_PER_BLOCK batches of consecutive ids
    (sorted by length inside a block), so memory stays bounded and, shards being whole blocks,
    a sharded run decodes every clip in the same batch as the unsharded one. Returns the
    number of clips written.
    """
    device = torch.device(device)
    paths = dict(clip_paths(index_path, audio_root))
    part = Path(index_path).stem
    block = batch_size * BATCHES_PER_BLOCK
    ids = shard_ids(paths, shard, n_shards, block)
    source, sha256 = checkpoint_to_load(model_name_or_path, revision, checkpoint)
    log.info(
        "asr: %d clips of partition %r (shard %d/%d) on %s with %s (%s, sha256 %s), language %s",
        len(ids),
        part,
        shard,
        n_shards,
        device,
        model_name_or_path,
        source,
        sha256,
        language,
    )
    results: list[dict] = []
    if ids:
        model = load_asr_model(source, device)
        bar = tqdm(total=len(ids), desc=f"asr {part}", unit="clip", disable=not progress)
        for start in range(0, len(ids), block):
            chunk = ids[start : start + block]
            items = [(u, load_audio(paths[u], SAMPLE_RATE)) for u in chunk]
            results += transcribe_clips(
                model,
                items,
                batch_size,
                device,
                progress=False,
                language=language,
                no_speech_threshold=no_speech_threshold,
            )
            bar.update(len(chunk))
        bar.close()
    provenance = {"model": model_name_or_path, "revision": sha256, "language": language}
    write_transcripts(results, out_path, provenance)
    empty = sum(1 for r in results if not r["text"])
    log.info("asr: wrote %d transcripts (%d empty) to %s", len(results), empty, out_path)
    return len(results)


def checkpoint_to_load(
    model: str, revision: str | None, checkpoint: str | os.PathLike | None
) -> tuple[str, str]:
    """(what to load, its sha256): the fetched copy after checking it, a local checkpoint, or
    (outside the workflow) a release name that openai-whisper downloads itself."""
    if checkpoint is not None:
        expected = whisper_checkpoint({"model": model, "revision": revision}).sha256
        actual = checkpoint_sha256(checkpoint)
        if actual != expected:
            raise FetchError(
                f"{checkpoint}: sha256 {actual}, but {model} at revision {expected} was asked "
                f"for; refusing it: delete the file and run `{FETCH_COMMAND}` again"
            )
        return str(checkpoint), actual
    if os.path.isfile(model):
        return model, checkpoint_sha256(model)
    return model, whisper_checkpoint({"model": model, "revision": revision}).sha256
