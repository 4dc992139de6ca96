"""The emotion vocabulary: the class set a run learns and predicts, shared by every stage.

The default is MSP-Podcast's 8 primary emotions; the config's ``classes:`` (letter: name, in
order) replaces it for another corpus (``ClassSet.from_config``). The order is the order of soft
targets, logits and posteriors everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# The 8 consensus classes in the order used for soft targets, logits and posteriors.
CLASS_LETTERS = ("A", "S", "H", "U", "F", "D", "C", "N")
CLASS_NAMES = ("Angry", "Sad", "Happy", "Surprise", "Fear", "Disgust", "Contempt", "Neutral")
NAME_TO_LETTER = dict(zip(CLASS_NAMES, CLASS_LETTERS, strict=True))
LETTER_TO_INDEX = {letter: i for i, letter in enumerate(CLASS_LETTERS)}
NUM_CLASSES = len(CLASS_LETTERS)

# Consensus codes that are never a class: Other, and no agreement (a tie of the votes).
AMBIGUOUS_LETTERS = ("O", "X")
ALL_CONSENSUS_LETTERS = CLASS_LETTERS + AMBIGUOUS_LETTERS

# Emotional attributes (multitask targets), each a mean rating in [1, 7].
ATTRIBUTES = ("act", "val", "dom")
ATTRIBUTE_RANGE = (1.0, 7.0)

# A class code: a letter, then up to 7 letters or digits (it names a column in every table).
CLASS_CODE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,7}")
# Column names a class code may not take (the manifest's and the prediction tables' own).
RESERVED_CODES = frozenset(
    {"id", "path", "subset", "speaker", "gender", "emo", "file", *ATTRIBUTES}
)


class ClassSetError(ValueError):
    """A class set that cannot be used; the message names the config key."""


@dataclass(frozen=True)
class ClassSet:
    """Class codes ("letters") and names, in the order of targets, logits and posteriors."""

    letters: tuple[str, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        problems = []
        if len(self.letters) != len(self.names):
            problems.append(f"{len(self.letters)} codes but {len(self.names)} names")
        if len(self.letters) < 2:
            problems.append("at least 2 classes are needed")
        for code in self.letters:
            if not CLASS_CODE.fullmatch(code) or code.lower() in RESERVED_CODES:
                problems.append(
                    f"code {code!r} is not a letter followed by up to 7 letters/digits, "
                    f"or is reserved ({', '.join(sorted(RESERVED_CODES))})"
                )
            if code in AMBIGUOUS_LETTERS:
                problems.append(f"code {code!r} is reserved (O: Other, X: no agreement)")
        for kind, values in (("code", self.letters), ("name", [n.lower() for n in self.names])):
            repeated = sorted({v for v in values if list(values).count(v) > 1})
            if repeated:
                problems.append(f"{kind}(s) {repeated} appear twice")
        if problems:
            raise ClassSetError("classes: " + "; ".join(problems))

    @classmethod
    def from_config(
        cls, classes: Sequence[Mapping[str, str]] | Mapping[str, str] | None
    ) -> ClassSet:
        """The class set of the config's ``classes:`` (a list of one-entry ``code: name``
        mappings, in order; a list, so that a config merged on top replaces it whole), or of
        one ``code: name`` mapping; None: MSP-Podcast's."""
        if classes is None:
            return MSP_PODCAST_CLASSES
        pairs = list(classes.items()) if isinstance(classes, Mapping) else []
        for i, entry in enumerate([] if isinstance(classes, Mapping) else classes):
            if not isinstance(entry, Mapping) or len(entry) != 1:
                raise ClassSetError(f"classes[{i}]: expected one `code: name` entry, got {entry!r}")
            pairs += list(entry.items())
        return cls(tuple(str(k) for k, _ in pairs), tuple(str(v) for _, v in pairs))

    def to_config(self) -> list[dict[str, str]]:
        """The config's form of the class set (what ``from_config`` reads)."""
        return [{code: name} for code, name in zip(self.letters, self.names, strict=True)]

    @classmethod
    def from_letters(cls, letters) -> ClassSet:
        """A class set known only by its codes (a posteriors file or a manifest records those):
        MSP-Podcast's names for its own codes, the code itself as the name otherwise."""
        letters = tuple(letters)
        if letters == CLASS_LETTERS:
            return MSP_PODCAST_CLASSES
        return cls(letters, letters)

    def __len__(self) -> int:
        return len(self.letters)

    def index(self, letter: str) -> int:
        return self.letters.index(letter)

    def letter_of(self, label: str) -> str | None:
        """The code of a label given as a code (exact) or a name (any case); None outside."""
        text = str(label).strip()
        if text in self.letters:
            return text
        for letter, name in zip(self.letters, self.names, strict=True):
            if text.lower() == name.lower():
                return letter
        return None


MSP_PODCAST_CLASSES = ClassSet(CLASS_LETTERS, CLASS_NAMES)
