"""The embedded demo corpus: synthetic emotional speech in the MSP-Podcast challenge layout.

Speech comes from espeak-ng (GPL-3.0-or-later, bundled by the `espeakng-loader` wheel) called
through its C API with ctypes. Emotion is carried both by the words (a bank of sentences per
class) and by prosody (rate, pitch, pitch range, loudness, pauses), with per-speaker offsets
and sentences of neutral wording spoken emotionally, so the classes are learnable without
being trivially separable. Simulated annotators then vote as MSP-Podcast raters do, which
yields realistic disagreement, `X` (no agreement) and `O` (Other) consensus rows.

    out_dir/Audios/<FileName>.wav              16 kHz mono 16-bit PCM, Test3 clips included
    out_dir/Labels/labels_consensus.csv        FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set
    out_dir/Labels/labels_detailed.csv         FileName,EmoDetail (one row per annotator)
    out_dir/demo_truth.csv                     what was really spoken (for the ASR word error rate)
"""

from __future__ import annotations

import atexit
import csv
import ctypes
import os
import shutil
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from medusa.atomic import atomic_directory
from medusa.emotions import CLASS_LETTERS, CLASS_NAMES, NAME_TO_LETTER

SAMPLE_RATE = 16000

# --------------------------------------------------------------------------------------------
# espeak-ng through ctypes
# --------------------------------------------------------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_IDS = {"rate": 1, "volume": 2, "pitch": 3, "pitch_range": 4, "wordgap": 7}
_PARAM_LIMITS = {
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
            low, high = _PARAM_LIMITS[name]
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


# --------------------------------------------------------------------------------------------
# What the speakers say, and how
# --------------------------------------------------------------------------------------------

# Short sentences (no digits, no number words: ASR writes those in varied forms) typical of
# each class. Neutral wording is also spoken with emotional prosody, and emotional wording
# sometimes flatly, so neither words nor voice alone decide the class.
SENTENCES: dict[str, tuple[str, ...]] = {
    "A": (
        "Get out of my office right now!",
        "I am sick and tired of your excuses!",
        "How dare you talk to me like that!",
        "Stop lying to me, I know what you did!",
        "This is absolutely unacceptable!",
        "You broke it again, and I am furious!",
        "Do not ever touch my things again!",
        "I told you to leave me alone!",
        "You ruined everything we worked for!",
        "That was a stupid thing to do!",
        "I am done with your nonsense!",
        "Why would you do something so reckless?",
        "Give me back my keys immediately!",
        "Nobody treats my family that way!",
        "You never listen to a word I say!",
        "Stop wasting my time!",
    ),
    "S": (
        "I miss her so much.",
        "Nothing feels right since he left.",
        "I just feel so alone these days.",
        "We had to say goodbye to our old dog.",
        "I wish things had turned out differently.",
        "It hurts to think about what we lost.",
        "I cried all night after the funeral.",
        "Nobody came to my birthday party.",
        "I really thought he would come back.",
        "Everything reminds me of my grandmother.",
        "I feel empty and tired all the time.",
        "The house is so quiet without the children.",
        "I never got to say goodbye.",
        "They told us they could not help.",
        "It was the saddest day of my life.",
        "She looked so lonely standing there.",
    ),
    "H": (
        "This is the best day of my life!",
        "I am so happy for you both!",
        "We won the championship, I can hardly believe it!",
        "I love spending summer at the beach.",
        "What a wonderful party, thank you!",
        "I got the job, I am thrilled!",
        "The kids laughed all afternoon in the garden.",
        "Everything is finally going our way!",
        "I feel fantastic this morning!",
        "Our new baby is healthy and beautiful.",
        "That concert was absolutely amazing!",
        "I am so glad you could make it!",
        "We are getting married in the spring!",
        "This cake is delicious, you are a genius!",
        "I passed the exam with flying colors!",
        "What a lovely sunny day for a picnic!",
    ),
    "U": (
        "Wait, you did what?",
        "I can't believe you are actually here!",
        "No way, is that really true?",
        "Oh wow, I did not see that coming!",
        "You bought a house? Since when?",
        "Really? She said yes?",
        "What on earth just happened?",
        "I never expected to see you here!",
        "Are you serious right now?",
        "Whoa, look at the size of that thing!",
        "He is your brother? I had no idea!",
        "Oh my goodness, where did this come from?",
        "You finished it all by yourself?",
        "Wait, the meeting was today?",
        "That is impossible, how did you do it?",
        "I did not know you could sing!",
    ),
    "F": (
        "Did you hear that noise downstairs?",
        "Please don't leave me here alone.",
        "I think someone is following us.",
        "I am terrified of what might happen next.",
        "Something is moving in the dark.",
        "Lock the door, hurry, they are coming!",
        "What if the doctor finds something bad?",
        "I am scared to walk home tonight.",
        "The bridge is shaking, I want to get off!",
        "Please, I don't want to go in there.",
        "My hands are shaking, I can't breathe.",
        "Somebody is standing outside the window.",
        "What if we never find our way out?",
        "The storm is getting worse, we need to hide.",
        "I have a terrible feeling about this place.",
        "I heard footsteps behind me again.",
    ),
    "D": (
        "Ugh, that smells absolutely disgusting.",
        "There is mold all over the bread.",
        "I think I am going to be sick.",
        "Get that slimy thing away from me.",
        "The bathroom was filthy and sticky.",
        "Gross, there is hair in my soup.",
        "That milk has gone completely sour.",
        "I can't stand the sight of rotten meat.",
        "The kitchen was crawling with bugs.",
        "Yuck, don't put that in your mouth.",
        "What a revolting thing to say.",
        "His behavior made my stomach turn.",
        "The garbage has been rotting for weeks.",
        "The floor is covered in grease.",
        "That is the nastiest thing I have ever tasted.",
        "The whole room reeks of old smoke.",
    ),
    "C": (
        "Oh please, as if you would know.",
        "That is cute, but it is not real work.",
        "I expected nothing more from people like him.",
        "Honestly, your opinion hardly matters here.",
        "Sure, because you are the expert on everything.",
        "He thinks he is so clever, how pathetic.",
        "Nice try, but nobody believes you.",
        "Some people just never learn, do they?",
        "Is that really the best you can do?",
        "They call that a plan? How amusing.",
        "I wouldn't waste my breath on them.",
        "Whatever, you always get it wrong anyway.",
        "How typical of you to blame someone else.",
        "What a joke of a performance.",
        "Spare me the lecture, I have heard it before.",
        "Only an amateur would make that mistake.",
    ),
    "N": (
        "The meeting starts after lunch on Tuesday.",
        "I usually take the bus to work.",
        "The report is on the table by the window.",
        "We need to buy milk and bread later.",
        "The library closes early on weekends.",
        "She moved to a new apartment last month.",
        "Please send me the file when you can.",
        "The train was on time this morning.",
        "I think it might rain later today.",
        "He works at the hospital downtown.",
        "The weather has been mild this week.",
        "Let me check my calendar first.",
        "The store is around the corner from here.",
        "We talked about the project schedule.",
        "I had soup and salad for dinner.",
        "The package should arrive on Friday.",
        "Turn left at the end of the street.",
        "They are painting the house next door.",
        "My brother lives near the coast.",
        "The presentation covers the main results.",
        "I need to charge my phone.",
        "The garden needs watering in the evening.",
        "We will discuss it at the next meeting.",
        "The coffee machine is in the kitchen.",
        "I read the article on the way home.",
        "The office is on the top floor.",
        "Our neighbors have a small brown cat.",
        "The road was repaired last summer.",
        "I will call you back in a while.",
        "The museum is closed on Mondays.",
        "He usually walks the dog in the morning.",
        "We ordered new chairs for the classroom.",
        "The bank is across from the post office.",
        "The schedule changed a little this week.",
        "I left my umbrella in the car.",
        "The flight lands in the afternoon.",
    ),
}

# Prosody of neutral speech, and each class's shift from it (scaled per clip by how strongly
# the speaker acts). Sad: low, slow, flat, quiet; angry: loud, fast, wide range; etc.
NEUTRAL_PROSODY = {
    "rate": 170.0,
    "pitch": 50.0,
    "pitch_range": 50.0,
    "volume": 100.0,
    "wordgap": 0.0,
}
PROSODY_SHIFT: dict[str, dict[str, float]] = {
    "A": {"rate": 25, "pitch": -5, "pitch_range": 35, "volume": 70, "wordgap": 0},
    "S": {"rate": -45, "pitch": -25, "pitch_range": -35, "volume": -35, "wordgap": 3},
    "H": {"rate": 20, "pitch": 22, "pitch_range": 40, "volume": 20, "wordgap": 0},
    "U": {"rate": 5, "pitch": 30, "pitch_range": 50, "volume": 30, "wordgap": 0},
    "F": {"rate": 45, "pitch": 25, "pitch_range": -30, "volume": -20, "wordgap": 1},
    "D": {"rate": -25, "pitch": -15, "pitch_range": 15, "volume": 10, "wordgap": 2},
    "C": {"rate": -30, "pitch": -20, "pitch_range": -20, "volume": -5, "wordgap": 2},
    "N": {"rate": 0, "pitch": 0, "pitch_range": 0, "volume": 0, "wordgap": 0},
}
# Per-clip random variation of the prosody (standard deviations).
PROSODY_JITTER = {"rate": 8.0, "pitch": 5.0, "pitch_range": 8.0, "volume": 8.0, "wordgap": 0.0}

# Share of each class among labelled clips (MSP-like: Neutral first, Happy next, Fear rarest).
CLASS_SHARE = {
    "N": 0.36, "H": 0.21, "A": 0.10, "S": 0.10, "U": 0.06, "C": 0.06, "D": 0.055, "F": 0.055,
}  # fmt: skip
TRAIN_SHARE = 0.72  # Train vs Development clips, as in the challenge release (84k / 32k)

# espeak-ng voices of the synthetic speakers: (language+variant, gender).
VOICES: tuple[tuple[str, str], ...] = (
    ("en-us+f1", "Female"), ("en+m1", "Male"), ("en-us+m3", "Male"), ("en+f2", "Female"),
    ("en-us+f3", "Female"), ("en+m2", "Male"), ("en-us+m4", "Male"), ("en+f4", "Female"),
    ("en-us+f5", "Female"), ("en+m6", "Male"), ("en-us+m7", "Male"), ("en+f3", "Female"),
    ("en-us+linda", "Female"), ("en+m8", "Male"), ("en-us+john", "Male"), ("en+belinda", "Female"),
    ("en-us+steph", "Female"), ("en+paul", "Male"), ("en-us+robert", "Male"), ("en+anika", "Female"),
)  # fmt: skip

# Clip timing (seconds).
MIN_DURATION, MAX_DURATION = 0.8, 4.0
LEAD_SILENCE = (0.05, 0.2)
TAIL_SILENCE = (0.1, 0.25)
SPEECH_GAIN = 0.7

# --------------------------------------------------------------------------------------------
# How the simulated annotators vote
# --------------------------------------------------------------------------------------------

LETTER_TO_NAME = dict(zip(CLASS_LETTERS, CLASS_NAMES, strict=True))
# Which classes a rater confuses a clip with (relative weights).
CONFUSIONS: dict[str, dict[str, float]] = {
    "A": {"D": 1.0, "C": 1.0, "N": 1.0, "U": 0.5, "F": 0.3},
    "S": {"N": 2.0, "F": 0.8, "C": 0.4, "D": 0.3},
    "H": {"U": 1.2, "N": 2.0, "C": 0.3},
    "U": {"H": 1.5, "F": 0.8, "N": 1.2, "A": 0.3},
    "F": {"S": 1.0, "U": 1.0, "N": 0.8, "A": 0.4},
    "D": {"C": 1.5, "A": 1.0, "N": 0.8, "S": 0.4},
    "C": {"D": 1.2, "A": 0.8, "N": 1.5, "H": 0.2},
    "N": {"S": 1.0, "H": 1.0, "C": 0.6, "U": 0.4, "A": 0.2},
}
SECONDARIES: dict[str, tuple[str, ...]] = {
    "A": ("Angry", "Frustrated", "Annoyed", "Disgust", "Contempt"),
    "S": ("Sad", "Disappointed", "Depressed", "Concerned", "Fear"),
    "H": ("Happy", "Amused", "Excited", "Surprise"),
    "U": ("Surprise", "Confused", "Excited", "Amused", "Fear"),
    "F": ("Fear", "Concerned", "Confused", "Sad"),
    "D": ("Disgust", "Annoyed", "Frustrated", "Contempt", "Angry"),
    "C": ("Contempt", "Annoyed", "Amused", "Disgust", "Frustrated"),
    "N": ("Neutral", "Concerned", "Confused", "Amused"),
}
# Free text typed by raters who chose Other (misspellings and spaces included, as in MSP).
OTHER_TEXTS = (
    "Curious", "curious", "Bored", "sarcastic", "Confused", "Concerned", "Amused", "nervous",
    "Frustrated", "Disapointed", "calm", "tired", "Interested", "Annoyed", "very tired",
    "Hopeful", "Relieved", "worried", "Excited/hopeful", "Pensive",
)  # fmt: skip
# Mean (act, val, dom) ratings of each class on the 1-7 scales.
CLASS_ATTRIBUTES: dict[str, tuple[float, float, float]] = {
    "A": (6.0, 2.0, 5.8),
    "S": (2.3, 2.0, 2.6),
    "H": (5.0, 6.0, 4.8),
    "U": (5.6, 4.7, 4.2),
    "F": (5.2, 2.3, 2.4),
    "D": (4.2, 2.3, 4.5),
    "C": (3.6, 2.8, 5.3),
    "N": (3.8, 4.0, 4.0),
}
N_WORKERS = 40
ANNOTATORS_PER_CLIP = (5, 7)
ALL_OTHER_SHARE = 0.02  # clips on which every rater picks Other: no 8-class vote at all

CONSENSUS_COLUMNS = (
    "FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set",
)  # fmt: skip
DETAILED_COLUMNS = ("FileName", "EmoDetail")
TRUTH_COLUMNS = ("FileName", "Split", "Speaker", "Voice", "IntendedClass", "TextClass", "Text")
PROBLEM_KINDS = (
    "stereo", "wrong_rate", "too_short", "empty", "unreadable", "missing_audio", "bad_label",
)  # fmt: skip


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an espeak voice plus personal prosody offsets."""

    spkr_id: int
    known: bool  # False: its clips carry SpkrID `Unknown`
    voice: str
    gender: str
    podcast: int  # first number in its file names
    pitch_offset: float
    rate_factor: float
    range_offset: float
    volume_offset: float
    expressiveness: float  # how strongly the speaker acts emotions (scales the class shift)
    noise_dbfs: float  # level of the recording's background noise


@dataclass
class Clip:
    """One utterance of the corpus, before and after annotation."""

    file_name: str
    split: str  # Train | Development | Test3
    speaker: Speaker
    letter: str  # intended class
    text_letter: str  # class whose sentence bank the words come from
    text: str
    intensity: float
    prosody: dict[str, float]
    seed: int
    duration: float = 0.0
    votes: list[str] | None = None  # EmoDetail strings
    emo_class: str = ""
    attributes: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Worker:
    """A simulated MSP rater with personal habits."""

    worker_id: int
    other_rate: float
    neutral_lean: float
    bias: tuple[float, float, float]


# --------------------------------------------------------------------------------------------
# Corpus plan: speakers, clips, words and prosody
# --------------------------------------------------------------------------------------------


def _class_counts(n: int, shares: dict[str, float], minimum: int) -> dict[str, int]:
    """Split n clips over the classes by share, each at least `minimum`; the rounding error
    and the clips lent to small classes are taken from the largest class."""
    counts = {c: max(minimum, round(share * n)) for c, share in shares.items()}
    largest = max(shares, key=shares.get)
    counts[largest] += n - sum(counts.values())
    return counts


def _make_speakers(n_speakers: int, rng: np.random.Generator) -> list[Speaker]:
    voices = [VOICES[i] for i in rng.permutation(len(VOICES))[:n_speakers]]
    ids = rng.choice(np.arange(1, 2000), size=n_speakers, replace=False)
    podcasts = rng.choice(np.arange(1, 10000), size=n_speakers, replace=False)
    return [
        Speaker(
            spkr_id=int(ids[i]),
            known=True,
            voice=voice,
            gender=gender,
            podcast=int(podcasts[i]),
            pitch_offset=float(rng.uniform(-12, 12)),
            rate_factor=float(rng.uniform(0.9, 1.1)),
            range_offset=float(rng.uniform(-10, 10)),
            volume_offset=float(rng.uniform(-15, 15)),
            expressiveness=float(rng.uniform(0.45, 1.0)),
            noise_dbfs=float(rng.uniform(-62, -48)),
        )
        for i, (voice, gender) in enumerate(voices)
    ]


def _allocate_speakers(speakers: list[Speaker], with_test: bool) -> dict[str, list[Speaker]]:
    """Disjoint speaker sets per split; the last Train speaker's identity is `Unknown`."""
    n_test = (2 if len(speakers) >= 10 else 1) if with_test else 0
    rest = len(speakers) - n_test
    n_dev = max(2, round(0.3 * rest))
    train = speakers[: rest - n_dev]
    train[-1] = replace(train[-1], known=False)
    return {
        "Train": train,
        "Development": speakers[rest - n_dev : rest],
        "Test3": speakers[rest:],
    }


def _assign_speakers(n: int, speakers: list[Speaker], rng: np.random.Generator) -> list[Speaker]:
    """Speaker of each of n clips: every speaker at least once, uneven shares (like podcasts);
    the unknown-identity speaker only a few clips."""
    known = [s for s in speakers if s.known]
    unknown = [s for s in speakers if not s.known]
    chosen = unknown * max(1, round(0.03 * n))
    if n >= len(chosen) + len(known):
        chosen += known
    weights = rng.dirichlet(np.full(len(known), 3.0))
    chosen += [known[i] for i in rng.choice(len(known), size=n - len(chosen), p=weights)]
    return [chosen[i] for i in rng.permutation(len(chosen))]


class _Deck:
    """Draws sentences of a bank in shuffled order, reshuffling when used up (few repeats)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.piles: dict[str, list[str]] = {}

    def draw(self, letter: str) -> str:
        pile = self.piles.get(letter)
        if not pile:
            bank = SENTENCES[letter]
            pile = [bank[i] for i in self.rng.permutation(len(bank))]
            self.piles[letter] = pile
        return pile.pop()


def _words_and_prosody(
    letter: str, speaker: Speaker, deck: _Deck, rng: np.random.Generator
) -> tuple[str, str, float, dict[str, float]]:
    """Sentence (and the class of its wording), acting intensity and espeak prosody of a clip."""
    if letter == "N":
        # Now and then emotional words are spoken flatly.
        text_letter = rng.choice(CLASS_LETTERS[:-1]) if rng.random() < 0.1 else "N"
    else:
        text_letter = "N" if rng.random() < 0.25 else letter
    text_letter = str(text_letter)
    intensity = float(np.clip(speaker.expressiveness + rng.normal(0, 0.15), 0.2, 1.2))
    shift = PROSODY_SHIFT[letter]
    prosody = {
        name: base + intensity * shift[name] + rng.normal(0, PROSODY_JITTER[name])
        for name, base in NEUTRAL_PROSODY.items()
    }
    prosody["rate"] *= speaker.rate_factor
    prosody["pitch"] += speaker.pitch_offset
    prosody["pitch_range"] += speaker.range_offset
    prosody["volume"] += speaker.volume_offset
    prosody = {name: float(np.clip(value, *_PARAM_LIMITS[name])) for name, value in prosody.items()}
    return deck.draw(text_letter), text_letter, intensity, prosody


def _plan_clips(n_labelled: int, n_test: int, n_speakers: int, seed: int) -> list[Clip]:
    """Who says what, how, in which split and under which file name (no audio yet)."""
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]
    rng_speakers, rng_layout, rng_words, rng_names = rngs
    splits = _allocate_speakers(_make_speakers(n_speakers, rng_speakers), with_test=n_test > 0)
    n_train = round(TRAIN_SHARE * n_labelled)
    sizes = {"Train": n_train, "Development": n_labelled - n_train}
    deck = _Deck(rng_words)
    clips: list[Clip] = []
    for split, n in [*sizes.items(), ("Test3", n_test)]:
        if n == 0:
            continue
        if split == "Test3":  # Test3 is balanced over the 8 classes, as in the challenge
            order = [CLASS_LETTERS[i % 8] for i in rng_layout.permutation(n)]
        else:
            # Small classes get a floor so that the default corpus has every class in Train.
            counts = _class_counts(n, CLASS_SHARE, minimum=min(14, n // 15))
            letters = [c for c, k in counts.items() for _ in range(k)]
            order = [letters[i] for i in rng_layout.permutation(n)]
        speakers = _assign_speakers(n, splits[split], rng_layout)
        for letter, speaker in zip(order, speakers, strict=True):
            text, text_letter, intensity, prosody = _words_and_prosody(
                letter, speaker, deck, rng_words
            )
            clips.append(
                Clip(
                    file_name="",
                    split=split,
                    speaker=speaker,
                    letter=letter,
                    text_letter=text_letter,
                    text=text,
                    intensity=intensity,
                    prosody=prosody,
                    seed=int(rng_layout.integers(2**31)),
                )
            )
    _name_clips(clips, rng_names)
    return clips


def _name_clips(clips: list[Clip], rng: np.random.Generator) -> None:
    """MSP-PODCAST_<podcast>_<segment>[_<part>].wav, segments increasing within a podcast;
    Test3 clips are MSP-PODCAST_test3_<n>.wav."""
    segment: Counter[int] = Counter()
    n_test = 0
    for clip in clips:
        if clip.split == "Test3":
            n_test += 1
            clip.file_name = f"MSP-PODCAST_test3_{n_test:04d}.wav"
            continue
        podcast = clip.speaker.podcast
        segment[podcast] += int(rng.integers(1, 4))  # segments between ours were not kept
        name = f"MSP-PODCAST_{podcast:04d}_{segment[podcast]:04d}"
        if rng.random() < 0.05:  # some releases split a segment and add a third number
            name += f"_{int(rng.integers(1, 3)):04d}"
        clip.file_name = name + ".wav"


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------


def _trim(speech: np.ndarray, threshold: float = 1e-3, margin: int = 320) -> np.ndarray:
    """Drop espeak's leading/trailing silence, keeping `margin` samples (20 ms) around speech."""
    loud = np.flatnonzero(np.abs(speech) > threshold)
    if loud.size == 0:
        return speech
    return speech[max(0, loud[0] - margin) : loud[-1] + margin]


def _render(clip: Clip, synth: Synthesizer) -> np.ndarray:
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


def _to_pcm16(audio: np.ndarray) -> np.ndarray:
    return np.round(np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)


# --------------------------------------------------------------------------------------------
# Annotation
# --------------------------------------------------------------------------------------------


def _make_workers(rng: np.random.Generator) -> list[Worker]:
    ids = rng.choice(np.arange(1, 100000), size=N_WORKERS, replace=False)
    return [
        Worker(
            worker_id=int(i),
            other_rate=float(rng.uniform(0.0, 0.06)),
            neutral_lean=float(rng.uniform(0.0, 1.0)),
            bias=tuple(float(b) for b in rng.normal(0, 0.35, size=3)),
        )
        for i in ids
    ]


def format_emo_detail(
    worker_id: int, primary: str, secondaries: list[str], ratings: tuple[int, int, int]
) -> str:
    """One rater's MSP-Podcast EmoDetail string, e.g.
    `WORKER00012345; Happy; Amused,Excited; A:5; V:6; D:4;`."""
    act, val, dom = ratings
    return f"WORKER{worker_id:08d}; {primary}; {','.join(secondaries)}; A:{act}; V:{val}; D:{dom};"


def consensus_letter(primaries: list[str]) -> str:
    """Plurality of primary votes (all `Other-*` count as O); a tie for the top gives X."""
    counts = Counter("O" if p.startswith("Other") else NAME_TO_LETTER[p] for p in primaries)
    top = max(counts.values())
    winners = [letter for letter, count in counts.items() if count == top]
    return winners[0] if len(winners) == 1 else "X"


def _vote(
    clip: Clip, clarity: float, worker: Worker, all_other: bool, rng: np.random.Generator
) -> str:
    """A rater's primary choice: a class letter, or O for Other."""
    p_other = 1.0 if all_other else 0.03 + worker.other_rate
    if rng.random() < p_other:
        return "O"
    if rng.random() < clarity:
        return clip.letter
    weights = dict(CONFUSIONS[clip.letter])
    if clip.text_letter != clip.letter:  # the words pull towards their own class
        weights[clip.text_letter] = weights.get(clip.text_letter, 0.0) + 2.0
    if clip.letter != "N":  # some raters call anything mild Neutral
        weights["N"] = weights.get("N", 0.0) + 2.0 * worker.neutral_lean
    letters = list(weights)
    p = np.array([weights[c] for c in letters])
    return letters[int(rng.choice(len(letters), p=p / p.sum()))]


def _annotate(clip: Clip, workers: list[Worker], all_other: bool, rng: np.random.Generator):
    """Simulated MSP ratings of one clip: EmoDetail rows, consensus class and attributes."""
    if clip.letter == "N":
        clarity = rng.beta(7, 2) - (0.15 if clip.text_letter != "N" else 0.0)
    else:
        clarity = rng.beta(7, 2.2) * (0.8 + 0.2 * min(clip.intensity, 1.0))
        clarity -= 0.15 if clip.text_letter != clip.letter else 0.0
    # The clip's perceived attributes: class-typical, weaker when acted weakly.
    neutral = np.array(CLASS_ATTRIBUTES["N"])
    target = np.array(CLASS_ATTRIBUTES[clip.letter])
    strength = 1.0 if clip.letter == "N" else min(clip.intensity, 1.0)
    latent = neutral + strength * (target - neutral) + rng.normal(0, 0.45, size=3)
    n_raters = int(rng.integers(ANNOTATORS_PER_CLIP[0], ANNOTATORS_PER_CLIP[1] + 1))
    details, primaries, ratings_all = [], [], []
    for w in rng.choice(len(workers), size=n_raters, replace=False):
        worker = workers[int(w)]
        choice = _vote(clip, clarity, worker, all_other, rng)
        if choice == "O":
            primary = "Other-" + str(rng.choice(OTHER_TEXTS))
            centre = latent + worker.bias
        else:
            primary = LETTER_TO_NAME[choice]
            # Raters who heard another emotion rate it partly as that emotion.
            centre = 0.7 * (latent + worker.bias) + 0.3 * np.array(CLASS_ATTRIBUTES[choice])
        ratings = np.clip(np.round(centre + rng.normal(0, 0.7, size=3)), 1, 7).astype(int)
        pool = SECONDARIES[clip.letter if choice == "O" else choice]
        k = int(rng.choice(4, p=[0.3, 0.35, 0.25, 0.1]))
        secondaries = [str(s) for s in rng.choice(pool, size=min(k, len(pool)), replace=False)]
        if rng.random() < 0.03:
            secondaries.append("Other-" + str(rng.choice(OTHER_TEXTS)))
        details.append(format_emo_detail(worker.worker_id, primary, secondaries, tuple(ratings)))
        primaries.append(primary)
        ratings_all.append(ratings)
    clip.votes = details
    clip.emo_class = consensus_letter(primaries)
    mean = np.mean(ratings_all, axis=0)
    clip.attributes = (float(mean[0]), float(mean[1]), float(mean[2]))


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _write_csv(path: Path, header, rows, quoting=csv.QUOTE_MINIMAL) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, quoting=quoting, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _consensus_row(clip: Clip) -> list:
    act, val, dom = (round(a, 6) for a in clip.attributes)
    spkr = clip.speaker.spkr_id if clip.speaker.known else "Unknown"
    return [clip.file_name, clip.emo_class, act, val, dom, spkr, clip.speaker.gender, clip.split]


def _inject_problems(root: Path, labelled: list[Clip], seed: int) -> dict[str, str]:
    """Break a few Train clips on purpose, one per kind of bad input the data step must
    report (each file is otherwise a normal clip). Returns {FileName: problem kind}."""
    rng = np.random.default_rng([seed, 7])
    train = [c for c in labelled if c.split == "Train"]
    if len(train) < len(PROBLEM_KINDS):
        raise ValueError(f"need at least {len(PROBLEM_KINDS)} Train clips to inject problems")
    victims = [train[i] for i in rng.choice(len(train), size=len(PROBLEM_KINDS), replace=False)]
    audios = root / "Audios"
    problems = {}
    for kind, clip in zip(PROBLEM_KINDS, victims, strict=True):
        path = audios / clip.file_name
        problems[clip.file_name] = kind
        if kind in ("stereo", "wrong_rate", "too_short"):
            audio, _ = sf.read(path, dtype="int16")
            if kind == "stereo":  # second channel slightly quieter, as from a real mixer
                audio = np.stack([audio, (audio * 0.8).astype(np.int16)], axis=1)
                sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
            elif kind == "wrong_rate":
                import torch
                import torchaudio

                wave = torch.from_numpy(audio.astype(np.float32) / 32768.0)
                wave = torchaudio.functional.resample(wave, SAMPLE_RATE, 44100).numpy()
                sf.write(path, _to_pcm16(wave), 44100, subtype="PCM_16")
            else:
                sf.write(path, audio[: int(0.25 * SAMPLE_RATE)], SAMPLE_RATE, subtype="PCM_16")
        elif kind == "empty":
            sf.write(path, np.zeros(0, dtype=np.int16), SAMPLE_RATE, subtype="PCM_16")
        elif kind == "unreadable":
            path.write_bytes(b"this is not a RIFF/WAVE file\n")
        elif kind == "missing_audio":
            path.unlink()
        elif kind == "bad_label":
            clip.emo_class = "Z"  # outside the MSP vocabulary
    return problems


def generate_corpus(
    out_dir: str | os.PathLike,
    n_labelled: int = 300,
    n_test: int = 40,
    seed: int = 0,
    n_speakers: int = 16,
    inject_problems: bool = False,
) -> dict:
    """Write a synthetic corpus in the MSP-Podcast challenge layout to `out_dir`.

    `n_labelled` clips go to Train/Development (speaker-disjoint, about 72/28), `n_test`
    unlabelled clips to Test3; `n_speakers` espeak voices in all (Train gets one whose SpkrID
    is `Unknown`). The same arguments give the same bytes. With `inject_problems`, a few
    Train clips are broken on purpose (see PROBLEM_KINDS); otherwise the corpus is clean.
    The folder appears complete or not at all (built next to it, then renamed).
    Returns a summary: counts per split and class, speakers, seconds of audio, problems.
    """
    if n_labelled < 16:
        raise ValueError(f"n_labelled={n_labelled} must be at least 16")
    if n_test < 0:
        raise ValueError(f"n_test={n_test} must be >= 0")
    if not 8 <= n_speakers <= len(VOICES):
        raise ValueError(f"n_speakers={n_speakers} must be within [8, {len(VOICES)}]")
    out_dir = Path(out_dir)
    clips = _plan_clips(n_labelled, n_test, n_speakers, seed)
    labelled = [c for c in clips if c.split != "Test3"]

    rng_annotation = np.random.default_rng([seed, 5])
    workers = _make_workers(rng_annotation)
    n_all_other = max(1, round(ALL_OTHER_SHARE * n_labelled))
    all_other = set(rng_annotation.choice(len(labelled), size=n_all_other, replace=False))
    for i, clip in enumerate(labelled):
        _annotate(clip, workers, i in all_other, rng_annotation)

    with atomic_directory(out_dir) as tmp:
        (tmp / "Audios").mkdir()
        (tmp / "Labels").mkdir()
        synth = Synthesizer()
        for clip in clips:
            audio = _render(clip, synth)
            clip.duration = len(audio) / SAMPLE_RATE
            sf.write(tmp / "Audios" / clip.file_name, _to_pcm16(audio), SAMPLE_RATE, "PCM_16")
        problems = _inject_problems(tmp, labelled, seed) if inject_problems else {}

        labelled_sorted = sorted(labelled, key=lambda c: c.file_name)
        _write_csv(
            tmp / "Labels" / "labels_consensus.csv",
            CONSENSUS_COLUMNS,
            [_consensus_row(c) for c in labelled_sorted],
        )
        _write_csv(
            tmp / "Labels" / "labels_detailed.csv",
            DETAILED_COLUMNS,
            [[c.file_name, d] for c in labelled_sorted for d in c.votes],
            quoting=csv.QUOTE_ALL,
        )
        _write_csv(
            tmp / "demo_truth.csv",
            TRUTH_COLUMNS,
            [
                [c.file_name, c.split, c.speaker.spkr_id, c.speaker.voice, c.letter]
                + [c.text_letter, c.text]
                for c in sorted(clips, key=lambda c: c.file_name)
            ],
        )

    def by_class(subset, attr):
        counts = Counter(getattr(c, attr) for c in subset)
        return {k: counts[k] for k in sorted(counts)}

    split_names = ("Train", "Development", "Test3")
    per_split = {s: [c for c in clips if c.split == s] for s in split_names}
    return {
        "out_dir": str(out_dir),
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "n_files": len(clips) - sum(kind == "missing_audio" for kind in problems.values()),
        "n_labelled": len(labelled),
        "n_test": n_test,
        "n_annotations": sum(len(c.votes) for c in labelled),
        "seconds_of_audio": round(sum(c.duration for c in clips), 2),
        "splits": {s: len(per_split[s]) for s in split_names},
        "consensus": {s: by_class(per_split[s], "emo_class") for s in split_names[:2]},
        "intended": {s: by_class(per_split[s], "letter") for s in split_names},
        "speakers": {
            s: sorted(
                {c.speaker.spkr_id if c.speaker.known else "Unknown" for c in per_split[s]}, key=str
            )
            for s in split_names
        },
        "problems": problems,
    }
