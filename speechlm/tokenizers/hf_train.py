"""Train a Hugging Face `tokenizers` vocabulary (sentencepiece-style: Metaspace pieces, byte
fallback) with named special tokens and a chat template, as an `HFTokenizer`."""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence

import tokenizers
from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers

from speechlm.tokenizers.hf import HFTokenizer

# train_hf_tokenizer's default roles (a LLaMA-style vocabulary with ChatML turn tokens)
DEFAULT_SPECIAL_TOKENS = {"unk": "<unk>", "sos": "<s>", "eos": "</s>", "pad": "<pad>", "audio": "<|audio|>",
                          "start_of_turn": "<|im_start|>", "end_of_turn": "<|im_end|>"}
MODELS = ("bpe", "wordlevel")
METASPACE = {"replacement": "\u2581", "prepend_scheme": "always", "split": True}
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))  # sentencepiece's byte-fallback pieces


def train_hf_tokenizer(lines: Iterable[str], vocab_size: int, special_tokens: Mapping[str, str],
                       chat_template: str | None = None, model: str = "bpe") -> HFTokenizer:
    """Train a sentencepiece-style vocabulary with `tokenizers`.

    Every word is "▁word" wherever it stands (a `Metaspace` pre-tokenizer with prepend_scheme
    "always": after a special token too), so a prompt and an answer encoded separately give
    the ids of the two joined by a space, and a chat turn "<|im_start|>assistant three" the
    generation prompt's ids + encode("three").

    Args:
        lines: the text, one sentence (or chat-formatted line) each; the special tokens
            spelled out in it are not learned from.
        vocab_size: the whole vocabulary: the special tokens (ids 0 .. in the order of
            `special_tokens`, one id per distinct token), for "bpe" sentencepiece's 256
            byte-fallback tokens <0x00> .. <0xFF> (any text encodes without unk), and the
            learned pieces (every character of the text, then merges; a small text may
            give fewer).
        special_tokens: role -> token, e.g. DEFAULT_SPECIAL_TOKENS.
        chat_template: e.g. CHATML_INLINE.
        model: "bpe", or "wordlevel" (whole words, unknown ones -> the unk role's token).
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    roles = {str(r): str(t) for r, t in special_tokens.items()}
    specials = list(dict.fromkeys(roles.values()))
    if any(not t for t in specials):
        raise ValueError(f"special tokens must be non-empty: {roles}")
    unk = roles.get("unk")
    n_bytes = len(BYTE_TOKENS) if model == "bpe" else 0
    if vocab_size <= len(specials) + n_bytes:
        raise ValueError(f"vocab_size={vocab_size} leaves no room for learned tokens after the {len(specials)} "
                         f"special tokens{f' and the {n_bytes} byte tokens' if n_bytes else ''}")
    added = [AddedToken(t, special=True, normalized=False) for t in specials]
    if model == "bpe":
        backend = tokenizers.Tokenizer(models.BPE(unk_token=unk, byte_fallback=True))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size - n_bytes, special_tokens=added, show_progress=False)
    else:
        if unk is None:
            raise ValueError("a wordlevel vocabulary needs an 'unk' role (what unknown words become)")
        backend = tokenizers.Tokenizer(models.WordLevel(unk_token=unk))
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=added, show_progress=False)
    backend.pre_tokenizer = pre_tokenizers.Metaspace(**METASPACE)
    backend.train_from_iterator(_without_specials(lines, specials), trainer)

    description = json.loads(backend.to_str())
    learned = sorted(description["model"]["vocab"].items(), key=lambda item: item[1])
    if [t for t, _ in learned[:len(specials)]] != specials:  # the trainer puts them first
        raise RuntimeError(f"tokenizers' trainer did not give the special tokens ids 0 .. {len(specials) - 1}")
    order = [*specials, *BYTE_TOKENS[:n_bytes], *(t for t, _ in learned[len(specials):])]
    description["model"]["vocab"] = {t: i for i, t in enumerate(dict.fromkeys(order))}
    backend = tokenizers.Tokenizer.from_str(json.dumps(description))
    metaspace = decoders.Metaspace(**METASPACE)
    backend.decoder = decoders.Sequence([decoders.ByteFallback(), metaspace]) if n_bytes else metaspace
    return HFTokenizer(backend.to_str(), roles, chat_template)


def _without_specials(lines: Iterable[str], specials: Sequence[str]) -> Iterator[str]:
    """The text between the special tokens of each line (they are whole tokens, not text to
    learn pieces from), each part a sentence of its own, as the pre-tokenizer sees it."""
    pattern = re.compile("|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True)))
    for line in lines:
        for part in pattern.split(line):
            if part:
                yield part
