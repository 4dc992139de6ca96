"""The sentence banks the demo's speakers read, one per emotion class.

Short sentences (no digits, no number words: ASR writes those in varied forms) typical of each
class. Neutral wording is also spoken with emotional prosody, and emotional wording sometimes
flatly, so neither words nor voice alone decide the class. They live in `data/sentences.tsv`
(columns `class` and `sentence`, one row per sentence, banks in file order), shipped with the
package.
"""

from __future__ import annotations

from importlib import resources

SENTENCES_FILE = "sentences.tsv"


def load_sentences() -> dict[str, tuple[str, ...]]:
    """{class letter: its sentences}, classes and sentences in the order of the data file."""
    text = (resources.files("medusa.demo") / "data" / SENTENCES_FILE).read_text(encoding="utf-8")
    header, *rows = text.splitlines()
    if header.split("\t") != ["class", "sentence"]:
        raise ValueError(f"{SENTENCES_FILE}: unexpected header {header!r}")
    banks: dict[str, list[str]] = {}
    for number, row in enumerate(rows, start=2):
        letter, tab, sentence = row.partition("\t")
        if not tab or not letter or not sentence.strip() or "\t" in sentence:
            raise ValueError(f"{SENTENCES_FILE}:{number}: expected `class<TAB>sentence`: {row!r}")
        banks.setdefault(letter, []).append(sentence)
    return {letter: tuple(bank) for letter, bank in banks.items()}


SENTENCES: dict[str, tuple[str, ...]] = load_sentences()
