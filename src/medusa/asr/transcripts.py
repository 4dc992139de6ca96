"""The ASR stage's transcript files: JSONL, one clip per line, sorted by id.

The first line says which ASR produced the file (``{"asr": {"model", "revision", "language"}}``,
the revision being the checkpoint's sha256); each further line is a clip's
``{"id", "text", "avg_logprob", "no_speech_prob"}``. Reading them needs neither torch nor
whisper, so the text feature jobs do not import either.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

from medusa.core.atomic import atomic_write_text

RECORD_FIELDS = ("id", "text", "avg_logprob", "no_speech_prob")


def write_transcripts(
    records: Sequence[dict], out_path: str | os.PathLike, provenance: Mapping | None
) -> None:
    """Write the provenance line and the records sorted by id, atomically."""
    lines = [] if provenance is None else [json.dumps({"asr": dict(provenance)}, sort_keys=True)]
    lines += [
        json.dumps({k: r[k] for k in RECORD_FIELDS}, ensure_ascii=False)
        for r in sorted(records, key=lambda r: r["id"])
    ]
    atomic_write_text(out_path, "".join(line + "\n" for line in lines))


def read_transcripts(path: str | os.PathLike) -> dict[str, dict]:
    """Records keyed by id (the provenance line left out); errors name the file and line."""
    return _read(path)[1]


def read_provenance(path: str | os.PathLike) -> dict | None:
    """The file's ``asr`` provenance line, or None for a file written without one."""
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    record = _provenance_line(first)
    return None if record is None else record["asr"]


def transcript_texts(path: str | os.PathLike) -> dict[str, str]:
    """Transcript text by id."""
    return {utt_id: record["text"] for utt_id, record in read_transcripts(path).items()}


def _read(path: str | os.PathLike) -> tuple[dict | None, dict[str, dict]]:
    provenance, records = None, {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                if line_no == 1 and (header := _provenance_line(line)) is not None:
                    provenance = header["asr"]
                    continue
                record = json.loads(line)
                utt_id, text = record["id"], record["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{line_no}: not a transcript record ({err})") from err
            if not isinstance(text, str):
                raise ValueError(f"{path}:{line_no}: text of {utt_id!r} is not a string")
            if utt_id in records:
                raise ValueError(f"{path}:{line_no}: id {utt_id!r} appears twice")
            records[utt_id] = record
    return provenance, records


def _provenance_line(line: str) -> dict | None:
    """The parsed line when it is a provenance line (``{"asr": {...}}``), else None."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and set(record) == {"asr"} else None


def merge_transcripts(
    shard_paths: Sequence[str | os.PathLike], out_path: str | os.PathLike
) -> None:
    """Merge shard files into one sorted by id; an id in two shards, or shards made by
    different ASR models, is an error."""
    merged: dict[str, dict] = {}
    provenances = []
    for path in shard_paths:
        provenance, records = _read(path)
        provenances.append(provenance)
        if provenance != provenances[0]:
            raise ValueError(
                f"{path}: made by ASR {provenance}, but {shard_paths[0]} by {provenances[0]}"
            )
        for utt_id, record in records.items():
            if utt_id in merged:
                raise ValueError(f"{path}: id {utt_id!r} also appears in another shard")
            merged[utt_id] = record
    write_transcripts(list(merged.values()), out_path, provenances[0] if provenances else None)
