"""English text-to-speech with espeak-ng (GPL-3.0-or-later, bundled by the `espeakng-loader`
wheel), called through its C API with ctypes, so that the same arguments always give the same
samples."""

from __future__ import annotations

import atexit
import ctypes
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_IDS = {"rate": 1, "volume": 2, "pitch": 3, "pitch_range": 4, "wordgap": 7}
# Accepted range of each prosody parameter.
PARAM_LIMITS = {
    "rate": (80, 450),
    "volume": (0, 200),
    "pitch": (0, 100),
    "pitch_range": (0, 100),
    "wordgap": (0, 100),
}
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Espeak:
    """A private copy of libespeak-ng, loaded fresh for every utterance.

    espeak-ng keeps hidden global state: its noise generator is seeded from the clock at
    start-up (we reseed it per utterance), and other internal state carries over from one
    utterance to the next, so the same call twice returns different samples (checked with
    1.52; espeak_Terminate does not reset it). Unloading and reloading the library for every
    utterance, from a copy that nothing else in the process has opened (so dlclose really
    unloads it), makes each result a function of its arguments only, for about 8 ms per
    utterance. The library is a process-wide singleton, so all calls take one lock.
    """

    _instance: _Espeak | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as err:  # the demo extra is optional for real-corpus users
            raise ImportError(
                "the demo corpus needs espeak-ng: pip install 'medusa-ser[demo]' "
                "(package espeakng-loader)"
            ) from err
        self.data_path = Path(espeakng_loader.get_data_path())
        self._copy_dir = Path(tempfile.mkdtemp(prefix="medusa-espeak-"))
        atexit.register(shutil.rmtree, self._copy_dir, True)
        self._lib_path = self._copy_dir / "libespeak-ng.so"
        shutil.copyfile(espeakng_loader.get_library_path(), self._lib_path)
        self.lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        # espeak keeps only a raw pointer to the callback: hold the ctypes object for life.
        self._callback = _SYNTH_CALLBACK(self._on_audio)
        self.native_rate = self._check_load()

    @classmethod
    def shared(cls) -> _Espeak:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _on_audio(self, wav, n_samples, _events) -> int:
        if n_samples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        return 0  # 0 = keep synthesising

    def _load(self):
        lib = ctypes.CDLL(str(self._lib_path))
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(), 0)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed (data path {self.data_path})")
        lib.espeak_SetSynthCallback(self._callback)
        return lib, rate

    def _unload(self, lib) -> None:
        import _ctypes  # dlclose lives in the C half of ctypes

        lib.espeak_Terminate()
        _ctypes.dlclose(lib._handle)

    def _check_load(self) -> int:
        lib, rate = self._load()
        self._unload(lib)
        return rate

    def check_voice(self, voice: str) -> None:
        """Reject unknown variants (espeak silently falls back to its default for those)."""
        variant = voice.partition("+")[2]
        if variant and not (self.data_path / "voices" / "!v" / variant).is_file():
            raise ValueError(f"unknown espeak-ng voice variant {variant!r} in voice {voice!r}")

    def synth(self, text: str, voice: str, params: dict[str, int], seed: int) -> np.ndarray:
        """Native-rate int16 samples of `text`."""
        self.check_voice(voice)
        encoded = text.encode("utf-8") + b"\0"
        with self.lock:
            lib, _ = self._load()
            try:
                if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    raise ValueError(f"unknown espeak-ng voice {voice!r}")
                # Setting the voice resets the parameters, so they come after it.
                for name, value in params.items():
                    lib.espeak_SetParameter(_PARAM_IDS[name], value, 0)
                lib.espeak_ng_SetRandSeed(seed)
                self._chunks = []
                err = lib.espeak_Synth(
                    encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
                )
                if err != 0:
                    raise RuntimeError(f"espeak_Synth failed with code {err} for {text!r}")
                chunks, self._chunks = self._chunks, []
            finally:
                self._unload(lib)
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


_RESAMPLE_LOCK = threading.Lock()


class Synthesizer:
    """English text-to-speech with espeak-ng, as float32 mono at 16 kHz.

    The same arguments always give the same samples (see `_Espeak`). Thread-safe.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self) -> None:
        import torchaudio

        self._espeak = _Espeak.shared()
        # The transform computes its filter once; building it per call costs more than the
        # synthesis itself.
        self._resample = torchaudio.transforms.Resample(self._espeak.native_rate, SAMPLE_RATE)

    def synthesize(
        self,
        text: str,
        voice: str = "en-us",
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        volume: int = 100,
        wordgap: int = 0,
        *,
        seed: int = 0,
    ) -> np.ndarray:
        """Speak `text`: `voice` is an espeak-ng name such as "en-us+f3", `rate` in words per
        minute (80-450), `pitch` and `pitch_range` 0-100, `volume` 0-200, `wordgap` in units
        of 10 ms; `seed` drives espeak's breath-noise generator."""
        import torch

        if not text.strip():
            raise ValueError("cannot synthesise empty text")
        params = {
            "rate": rate,
            "pitch": pitch,
            "pitch_range": pitch_range,
            "volume": volume,
            "wordgap": wordgap,
        }
        for name, value in params.items():
            low, high = PARAM_LIMITS[name]
            if not low <= value <= high:
                raise ValueError(f"{name}={value} outside espeak-ng's range [{low}, {high}]")
        params = {name: int(round(value)) for name, value in params.items()}
        native = self._espeak.synth(text, voice, params, seed)
        # One short clip is too little work to share between threads: on a busy machine the
        # thread pool's synchronisation costs 20x the work itself.
        with _RESAMPLE_LOCK:  # the thread count is process-wide: one caller at a time
            n_threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                with torch.no_grad():
                    wave = self._resample(torch.from_numpy(native.astype(np.float32) / 32768.0))
            finally:
                torch.set_num_threads(n_threads)
        return wave.numpy()
