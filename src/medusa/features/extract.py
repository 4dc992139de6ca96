"""Feature stage (docs/method.md, section 3): one backbone over one audio partition's clips (or
one shard of them), per-frame layer embeddings into an HDF5 store, written in blocks so memory
stays bounded; text backbones read the partition's ASR transcripts. The backbone itself, its
kinds and layer views: ``medusa.features.backbone``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from medusa.asr.transcripts import transcript_texts
from medusa.core.audio import SAMPLE_RATE, load_audio
from medusa.core.store import FeatureWriter, shard_ids
from medusa.corpus.audio_index import clip_paths
from medusa.features.backbone import Backbone, FeatureSetConfig

log = logging.getLogger(__name__)
# Clips are extracted in blocks of this many batches of consecutive ids: sorted by length inside
# a block, written in id order. Memory stays bounded, and since shards are made of whole blocks
# (store.shard_ids) every clip meets the same batch neighbours however the partition is sharded.
BATCHES_PER_BLOCK = 32


def extract_feature_set(
    feature_set_name: str,
    feature_set_cfg: dict,
    index_path: str | os.PathLike,
    out_path: str | os.PathLike,
    asr_path: str | os.PathLike | None = None,
    shard: int = 0,
    n_shards: int = 1,
    device: torch.device | str = "cpu",
    progress: bool = True,
    local_copy: str | os.PathLike | None = None,
    audio_root: str | os.PathLike = "",
) -> int:
    """Extract one feature set for one audio partition (shard) into an HDF5 store.

    `index_path`: the partition's clip table (``medusa.corpus.audio_index.write_audio_index``),
    whose paths are relative to `audio_root` (the corpus folder, data.root).
    `local_copy`: the fetched folder of a hub backbone (see ``Backbone``).

    Utterances are written in id order (see BATCHES_PER_BLOCK). Returns the number written.
    """
    cfg = FeatureSetConfig.from_dict(feature_set_cfg, feature_set_name)
    # The shard's clips, and what the backbone reads of each: its audio or its transcript.
    paths = dict(clip_paths(index_path, audio_root))
    part = Path(index_path).stem
    block = cfg.batch_size * BATCHES_PER_BLOCK
    ids = shard_ids(paths, shard, n_shards, block)
    texts = _transcripts_of(ids, asr_path, feature_set_name) if cfg.kind == "text" else {}
    log.info(
        "features %s: %d clips of partition %r (shard %d/%d), %s on %s",
        feature_set_name,
        len(ids),
        part,
        shard,
        n_shards,
        local_copy or cfg.backbone,
        device,
    )

    backbone = Backbone(cfg, device, local_copy)
    attrs = {**backbone.attrs, "feature_set": feature_set_name}
    started = time.perf_counter()
    bar = tqdm(total=len(ids), desc=f"{feature_set_name} {part}", unit="clip", disable=not progress)
    with FeatureWriter(out_path, backbone.dim, attrs) as writer:
        frames = _encode_blocks(backbone, writer, ids, block, paths, texts, bar.update)
    bar.close()
    seconds = time.perf_counter() - started
    log.info(
        "features %s: wrote %d clips, %d frames (dim %d) to %s in %.1f s (%.1f clips/s)",
        feature_set_name,
        len(ids),
        frames,
        backbone.dim,
        out_path,
        seconds,
        len(ids) / max(seconds, 1e-9),
    )
    return len(ids)


def _transcripts_of(
    ids: Sequence[str], asr_path: str | os.PathLike | None, feature_set_name: str
) -> dict[str, str]:
    """The ASR transcript of every clip of `ids` (a text feature set's inputs)."""
    if asr_path is None:
        raise ValueError(f"feature set {feature_set_name!r} (text) needs the ASR transcripts")
    texts = transcript_texts(asr_path)
    missing = [u for u in ids if u not in texts]
    if missing:
        raise ValueError(
            f"{asr_path}: no transcript for {len(missing)} clip(s), e.g. {missing[:5]}"
        )
    return texts


def _encode_blocks(
    backbone: Backbone,
    writer: FeatureWriter,
    ids: Sequence[str],
    block: int,
    paths: dict[str, str],
    texts: dict[str, str],
    on_batch: Callable[[int], None],
) -> int:
    """Encode and write `ids` block by block of consecutive ids: read each clip's audio (or
    transcript), encode the block in batches sorted by length, write it in id order. Returns
    the number of frames written."""
    frames = 0
    for start in range(0, len(ids), block):
        chunk = ids[start : start + block]
        if backbone.cfg.kind == "text":
            inputs = [texts[u] for u in chunk]
        else:
            inputs = [load_audio(paths[u], SAMPLE_RATE) for u in chunk]
        for utt_id, out in zip(chunk, backbone.encode(inputs, on_batch=on_batch), strict=True):
            writer.add(utt_id, out)
            frames += len(out)
    return frames
