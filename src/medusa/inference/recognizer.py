"""Emotion recognition on new recordings with a trained MEDUSA bundle (``medusa predict``).

``Recognizer(bundle_dir).predict(paths)`` takes audio files and folders (searched recursively
for the audio formats libsndfile reads), at any sample rate and channel count, and returns
``Predictions``: one row per segment, a summary per file, and the files that were skipped.

What runs is the workflow's own code, in the workflow's batches, so a clip gives the numbers the
workflow gives it (``results/predictions/test_posteriors.csv`` for Test3):

1. audio: ``medusa.core.audio.load_audio`` (16 kHz mono); an unreadable, empty or silent file is
   skipped with its reason and the rest go on;
2. segments (``medusa.inference.segments``): with ``segmentation="vad"`` (the default) speech turns
   found by voice-activity detection, what lies between them reported as gaps and not scored, a
   recording without speech skipped ("no speech found"); with ``"fixed"`` windows of
   ``window_s`` every ``hop_s`` seconds (8 s, 8 s), a last piece under ``min_segment_s``
   dropped. Either way a recording up to ``max_segment_s`` (bundle default 12 s) is one
   segment, scored whole as the workflow scores a clip (with VAD: if it holds speech);
3. ASR: ``medusa.asr.transcribe.transcribe_clips`` in blocks of
   ``batch_size x asr.BATCHES_PER_BLOCK`` segments (as ``run_asr`` does);
4. features: each feature set's backbone (``medusa.features.backbone.load_backbone``) in blocks of
   ``batch_size x features.BATCHES_PER_BLOCK`` segments (as ``extract_feature_set`` does),
   written through ``medusa.core.store.FeatureWriter`` (float16) into a temporary HDF5 file;
5. each DeepSER model: ``medusa.training.posteriors.predict_clips`` over those files;
6. the soup head: ``medusa.ensemble.meta.head_outputs`` over the models' outputs, in the head's
   model order, on one CPU thread (as ``predict_test``).

The posterior columns are the bundle's classes (its manifest's codes, in its order), whatever
the class set the bundle was trained with.

Memory does not grow with a recording's length or the number of files: a file is read in
blocks of ``BLOCK_S`` seconds for its checks and speech detection (``medusa.inference.stream``),
then the segments of all files, in order, are scored in chunks of at most ``max_chunk_s`` seconds of
segment audio, each segment read from its file when its chunk comes (a short file: all of it,
exactly as ``load_audio`` reads it); every stage batches across the segments of a chunk.
Segments are identified internally by (file number, segment number), and files are taken in
sorted path order, so the batches over a folder of clips up to ``max_chunk_s`` long in all are
the workflow's batches over the same clips. Everything runs on one device: ``acquire_device``
(a free GPU when there is one, else the CPU), or the one asked for.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from medusa.core.audio import SAMPLE_RATE, AudioError
from medusa.core.emotions import ATTRIBUTES
from medusa.inference.bundle_files import DEFAULT_SEGMENTATION, MANIFEST, BundleError
from medusa.inference.bundle_load import Bundle, load_bundle, model_store_of
from medusa.inference.recognize import (
    GAP_COLUMNS,
    MIN_GAP_S,
    SKIPPED_COLUMNS,
    Predictions,
    find_audio,
    segment_columns,
    summarise,
)
from medusa.inference.segments import (
    NO_SPEECH,
    SEGMENTATIONS,
    Bounds,
    SpeechDetector,
    TurnSettings,
    fixed_windows,
    gaps,
    speech_turns,
)
from medusa.inference.stream import AudioInfo, audio_info, blocks, read_range
from medusa.inference.upstream import UpstreamModels

log = logging.getLogger(__name__)
# Segment audio per chunk of work: what ASR, features and models hold at a time.
DEFAULT_MAX_CHUNK_S = 120.0
# A recording is checked and its speech found in blocks of this many seconds.
BLOCK_S = 300.0


def release_freed_memory() -> None:
    """Hand the memory a chunk freed back to the system. glibc keeps freed blocks in its heaps,
    and each chunk's tensors have other shapes, so without this the resident size grows chunk
    by chunk although nothing is kept (a 6-minute recording in 30 s chunks, demo bundle: 1276
    to 1428 MB after 6 chunks; with it 1121 to 1131 MB). No-op without glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    libc.malloc_trim(0)


class _Unusable(ValueError):
    """A recording that is skipped; the message is the reason."""


@dataclass
class _Segment:
    key: str  # sorts as (file, segment)
    file: int  # index into the planned files
    start: int  # samples at 16 kHz
    end: int


# --------------------------------------------------------------------------------------------
# The recognizer


class Recognizer:
    """A loaded bundle ready to predict; use as a context manager (or call `close`).

    `device`: "auto" (a free GPU through ``acquire_device``, else the CPU), "cpu" or "cuda".
    `backbone_root`, `path_map`: where local backbones recorded with relative (or moved) paths
    are (``medusa.inference.bundle_load.resolve_source``). `model_store`: where fetch_models put the
    hub backbones and the ASR checkpoint (default: the workflow's ``model_store`` the bundle
    recorded); a hub backbone without a copy there loads by id at the recorded commit from the
    Hugging Face cache. `segmentation`: "vad" (speech turns) or "fixed" (windows);
    `min_turn_s`, `max_turn_s` (default: `max_segment_s`), `max_pause_s`: the turns of "vad"
    (``medusa.inference.segments``); `window_s`, `hop_s`, `min_segment_s`: the windows of "fixed";
    `max_segment_s`: a recording up to this long is scored whole; `silence_rms`: the silence
    threshold (defaults: the bundle's).
    `keep_backbones`: keep the ASR model and backbones loaded between calls to `predict`.
    `max_chunk_s`: seconds of segment audio scored in one pass (memory).
    """

    def __init__(
        self,
        bundle_dir: str | os.PathLike,
        device: str = "auto",
        backbone_root: str | os.PathLike | None = None,
        path_map: Mapping[str, str] | None = None,
        window_s: float | None = None,
        hop_s: float | None = None,
        min_segment_s: float | None = None,
        silence_rms: float | None = None,
        model_store: str | os.PathLike | None = None,
        max_segment_s: float | None = None,
        progress: bool = True,
        keep_backbones: bool = True,
        verify_backbones: bool = True,
        max_chunk_s: float = DEFAULT_MAX_CHUNK_S,
        segmentation: str = "vad",
        min_turn_s: float | None = None,
        max_turn_s: float | None = None,
        max_pause_s: float | None = None,
        calibrate: bool = True,
    ):
        self.bundle: Bundle = load_bundle(bundle_dir)
        # The soup's temperature (fitted on the meta clips when the bundle was built): the
        # posteriors' confidence matches how often they are right; argmax is unchanged.
        self.calibrate = calibrate and "calibration" in self.bundle.manifest
        self.classes = self.bundle.class_set()
        seg = self.bundle.manifest["segmentation"]
        self.window_s = float(window_s if window_s is not None else seg["window_s"])
        self.hop_s = float(hop_s if hop_s is not None else seg["hop_s"])
        self.min_segment_s = float(
            min_segment_s if min_segment_s is not None else seg["min_segment_s"]
        )
        self.silence_rms = float(silence_rms if silence_rms is not None else seg["silence_rms"])
        # Bundles made before the key existed: today's default (a clip is scored whole).
        self.max_segment_s = float(
            max_segment_s
            if max_segment_s is not None
            else seg.get("max_segment_s", DEFAULT_SEGMENTATION["max_segment_s"])
        )
        if self.window_s <= 0 or self.hop_s <= 0:
            raise ValueError(f"window_s and hop_s must be > 0, got {self.window_s}, {self.hop_s}")
        if segmentation not in SEGMENTATIONS:
            raise ValueError(f"segmentation must be one of {SEGMENTATIONS}, got {segmentation!r}")
        self.segmentation = segmentation
        turn_defaults = TurnSettings(max_turn_s=self.max_segment_s)
        self.turns = TurnSettings(
            min_turn_s=float(min_turn_s if min_turn_s is not None else turn_defaults.min_turn_s),
            max_turn_s=float(max_turn_s if max_turn_s is not None else turn_defaults.max_turn_s),
            max_pause_s=float(
                max_pause_s if max_pause_s is not None else turn_defaults.max_pause_s
            ),
        )
        self._speech = SpeechDetector()
        self.progress = progress
        self.max_chunk_s = float(max_chunk_s)
        self._stack = contextlib.ExitStack()
        self.device = self._open_device(device)
        store, store_explicit = model_store_of(self.bundle.manifest, model_store)
        self.upstream = UpstreamModels(
            self.bundle,
            self.device,
            backbone_root,
            dict(path_map or {}),
            store,
            store_explicit,
            keep=keep_backbones,
            verify=verify_backbones,
        )
        try:
            self._models = self.bundle.load_models(self.device)
            self._head, _ = self.bundle.load_head()
            self._check_classes(self._head.n_classes)
        except BaseException:
            self.close()  # release the claimed GPU
            raise

    def _check_classes(self, n_posteriors: int) -> None:
        letters = self.classes.letters
        if n_posteriors != len(letters):
            raise BundleError(
                f"{self.bundle.path / MANIFEST}: the soup gives {n_posteriors} posteriors, "
                f"the manifest names {len(letters)} classes ({' '.join(letters)})"
            )

    # ---------------------------------------------------------------- device, lifetime

    def _open_device(self, device: str) -> torch.device:
        if device == "cpu":
            return torch.device("cpu")
        if device not in ("auto", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
        from medusa.core.devices import acquire_device

        chosen = self._stack.enter_context(acquire_device())
        if device == "cuda" and chosen.type != "cuda":
            self._stack.close()
            raise RuntimeError("--device cuda: no usable CUDA device (see the log above)")
        return chosen

    def close(self) -> None:
        self.upstream.clear()
        self._stack.close()

    def __enter__(self) -> Recognizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- prediction

    def predict(self, paths: Iterable[str | os.PathLike] | str | os.PathLike) -> Predictions:
        """Predict every audio file of `paths` (files or folders); see the module docstring."""
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        files, skipped = find_audio(paths)
        planned: list[tuple[AudioInfo, Bounds]] = []
        gap_rows: list[tuple[str, float, float]] = []
        for path in files:
            try:
                info, bounds = self._plan(path)
            except (AudioError, OSError) as err:  # unreadable: report it, go on
                skipped.append((str(path), f"unreadable audio: {err}"))
                continue
            except _Unusable as err:
                skipped.append((str(path), str(err)))
                continue
            planned.append((info, bounds))
            gap_rows += [
                (str(path), start / SAMPLE_RATE, end / SAMPLE_RATE)
                for start, end in gaps(bounds, info.samples, round(MIN_GAP_S * SAMPLE_RATE))
            ]
        segment_tables = []
        for chunk in self._chunks(planned):
            segment_tables.append(self._predict_chunk(planned, chunk))
            release_freed_memory()
        for path, reason in skipped:
            log.warning("skipped %s: %s", path, reason)
        segments = (
            pd.concat(segment_tables, ignore_index=True)
            if segment_tables
            else pd.DataFrame(columns=segment_columns(self.classes))
        )
        durations = {str(info.path): info.samples / SAMPLE_RATE for info, _ in planned}
        return Predictions(
            segments,
            summarise(segments, durations, self.classes),
            pd.DataFrame(skipped, columns=SKIPPED_COLUMNS),
            pd.DataFrame(gap_rows, columns=GAP_COLUMNS),
            self.classes,
            self.calibration_note,
        )

    def _plan(self, path: Path) -> tuple[AudioInfo, Bounds]:
        """(the file's header, its segments), reading it once in blocks of BLOCK_S: the
        silence and sanity checks and the speech detection never hold the whole recording.
        Raises _Unusable with the reason a file is skipped."""
        info = audio_info(path)
        if info.samples <= 0:
            raise _Unusable("empty audio")
        squares, speech = 0.0, []
        for start, block in blocks(info, BLOCK_S):
            if not np.isfinite(block).all():
                raise _Unusable("audio contains NaN or infinite samples")
            squares += float(np.sum(np.square(block, dtype=np.float64)))
            if self.segmentation == "vad":
                speech += [(a + start, b + start) for a, b in self._speech.speech(block)]
        rms = math.sqrt(squares / info.samples)
        if rms < self.silence_rms:
            raise _Unusable(f"silent audio (RMS {rms:.2e} < {self.silence_rms:g})")
        bounds = self.segment(info.samples, speech)
        if not bounds:
            raise _Unusable(NO_SPEECH)
        return info, bounds

    def segment(self, n_samples: int, speech: Bounds) -> Bounds:
        """[start, end) sample bounds of the segments of a 16 kHz recording of `n_samples`, of
        which `speech` holds speech (VAD); [] if none is found. A recording up to
        max_segment_s is one segment (with VAD: if it holds speech)."""
        if self.segmentation == "fixed":
            return fixed_windows(
                n_samples, self.window_s, self.hop_s, self.min_segment_s, self.max_segment_s
            )
        if not speech:
            return []
        if n_samples <= round(self.max_segment_s * SAMPLE_RATE):
            return [(0, n_samples)]
        return speech_turns(speech, n_samples, self.turns, SAMPLE_RATE)

    def _chunks(self, planned: Sequence[tuple[AudioInfo, Bounds]]) -> Iterator[list[_Segment]]:
        """Every segment, in (file, segment) order, in chunks of at most max_chunk_s seconds of
        segment audio (at least one segment each): what one pass of ASR, features and models
        holds at a time."""
        chunk: list[_Segment] = []
        chunk_samples = 0
        limit = self.max_chunk_s * SAMPLE_RATE
        for f, (_, bounds) in enumerate(planned):
            for s, (start, end) in enumerate(bounds):
                if chunk and chunk_samples + (end - start) > limit:
                    yield chunk
                    chunk, chunk_samples = [], 0
                chunk.append(_Segment(f"{f:08d}.{s:06d}", f, start, end))
                chunk_samples += end - start
        if chunk:
            yield chunk

    def _predict_chunk(
        self, planned: Sequence[tuple[AudioInfo, Bounds]], segments: list[_Segment]
    ) -> pd.DataFrame:
        # Each segment read from its file (a short file: all of it, as load_audio reads it).
        clips = {seg.key: read_range(planned[seg.file][0], seg.start, seg.end) for seg in segments}
        keys = [seg.key for seg in segments]  # sorted by construction
        feature_sets = self.bundle.used_feature_sets()
        n = len(keys)
        total = n * (1 + len(feature_sets) + len(self._models))
        with (
            tqdm(total=total, desc="predict", unit="step", disable=not self.progress) as bar,
            tempfile.TemporaryDirectory(prefix="medusa-predict-") as tmp,
        ):
            bar.set_description(f"asr ({n} segments)")
            transcripts = self._transcribe(keys, clips, bar)
            feature_files = {}
            for name in feature_sets:
                bar.set_description(f"features {name}")
                inputs = transcripts if self.bundle.feature_sets[name]["kind"] == "text" else clips
                feature_files[name] = self._extract(name, keys, inputs, Path(tmp), bar)
            outputs = []
            for model_name in self.bundle.models:
                bar.set_description(f"model {model_name}")
                outputs.append(self._run_model(model_name, keys, feature_files))
                bar.update(n)
            bar.set_description("predict")
        probs, attributes = self._ensemble(outputs)
        self._check_classes(probs.shape[1])
        letters = self.classes.letters
        table = pd.DataFrame(
            {
                "file": [str(planned[seg.file][0].path) for seg in segments],
                "start_s": [seg.start / SAMPLE_RATE for seg in segments],
                "end_s": [seg.end / SAMPLE_RATE for seg in segments],
                "transcript": [transcripts[k] for k in keys],
                "emotion": np.asarray(letters)[probs.argmax(axis=1)],
            }
        )
        for i, letter in enumerate(letters):
            table[letter] = probs[:, i].astype(np.float64)
        for i, name in enumerate(ATTRIBUTES):
            table[name] = attributes[:, i].astype(np.float64)
        return table

    def _transcribe(self, keys: list[str], clips: dict[str, np.ndarray], bar) -> dict[str, str]:
        """Transcripts in run_asr's blocks (consecutive keys, sorted by length inside)."""
        from medusa.asr.transcribe import BATCHES_PER_BLOCK, transcribe_clips

        asr = self.bundle.manifest["asr"]
        model = self.upstream.asr()
        block = asr["batch_size"] * BATCHES_PER_BLOCK
        texts = {}
        for start in range(0, len(keys), block):
            chunk = keys[start : start + block]
            results = transcribe_clips(
                model,
                [(k, clips[k]) for k in chunk],
                asr["batch_size"],
                self.device,
                progress=False,
                language=asr["language"],
                # Bundles made before the key existed kept every window's text.
                no_speech_threshold=asr.get("no_speech_threshold"),
            )
            texts.update({r["id"]: r["text"] for r in results})
            bar.update(len(chunk))
        return texts

    def _extract(self, name: str, keys: list[str], inputs: Mapping, tmp: Path, bar) -> Path:
        """One feature set of every segment into tmp/<name>.h5, in extract_feature_set's blocks."""
        from medusa.core.store import FeatureWriter
        from medusa.features.extract import BATCHES_PER_BLOCK

        backbone = self.upstream.backbone(name)
        block = backbone.cfg.batch_size * BATCHES_PER_BLOCK
        path = tmp / f"{name}.h5"
        with FeatureWriter(path, backbone.dim, {"feature_set": name}) as writer:
            for start in range(0, len(keys), block):
                chunk = keys[start : start + block]
                encoded = backbone.encode([inputs[k] for k in chunk], on_batch=bar.update)
                for key, frames in zip(chunk, encoded, strict=True):
                    writer.add(key, frames)
        return path

    def _run_model(
        self, model_name: str, keys: list[str], feature_files: Mapping[str, Path]
    ) -> np.ndarray:
        """[N, C + 3]: the model's C posteriors then act, val, dom (the head's input layout)."""
        from medusa.training.checkpoints import settings_of
        from medusa.training.posteriors import predict_clips

        model, checkpoint = self._models[model_name]
        settings, _ = settings_of(checkpoint)
        paths = [feature_files[fs] for fs in checkpoint["features"]]
        probs, attributes = predict_clips(model, keys, paths, settings, self.device)
        return np.concatenate([probs, attributes], axis=1)

    def _ensemble(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        from medusa.ensemble.meta import head_outputs
        from medusa.ensemble.meta_training import single_threaded

        X = np.concatenate(outputs, axis=1).astype(np.float32)
        # One thread, as predict_test: results independent of the core count.
        probs, attributes = single_threaded(head_outputs)(self._head, X)
        return (self.bundle.calibrate(probs) if self.calibrate else probs), attributes

    @property
    def calibration_note(self) -> str:
        """How the output posteriors are calibrated, for the output's summary."""
        if not self.calibrate:
            return "uncalibrated (the soup's raw posteriors, as the workflow writes them)"
        fitted = self.bundle.manifest["calibration"].get("fitted_on", {})
        return (
            f"temperature-scaled (T = {self.bundle.temperature:.3g}, fitted on "
            f"{fitted.get('clips', '?')} {fitted.get('subset', '?')} clips)"
        )
