"""OpenAI Whisper's tokenizer: tiktoken over the vocabulary files of the installed
openai-whisper package, ids identical to `whisper.tokenizer.get_tokenizer`.

    encoding="multilingual"   multilingual models: 50257 byte-level BPE tokens (eot = 50257)
    encoding="gpt2"           English-only models (*.en): GPT-2's 50256 tokens (eot = 50256)

followed by Whisper's special tokens (`multitask_special_tokens`: eot, sot, num_languages
language tokens, tasks, ..., 1501 timestamps) and, with `speaker_change=True`, <|sc|>.

The vocabulary is read once per process (`load_encoding`), from `whisper/assets/` found
without importing whisper (whose package imports its torch model code). `tokens` are the
byte tokens written as GPT-2's byte-to-unicode strings ("Ġhello" for b" hello"; the
multilingual vocabulary's one empty token as EMPTY_TOKEN), so `tokens.txt` has one readable
token per line; `to_dict` holds only the four options.
"""

from __future__ import annotations

import base64
import importlib.util
from collections.abc import Iterable
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from speechlm.tokenizers.base import Tokenizer
from speechlm.tokenizers.multitask import (
    WHISPER_LANGUAGES,
    MultitaskVocabulary,
    int_ids,
    multitask_special_tokens,
)

ENCODINGS = ("multilingual", "gpt2")
# whisper/tokenizer.py's pre-tokenisation pattern (GPT-2's)
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
INSTALL_HINT = "pip install speechlm[whisper]"
# The multilingual vocabulary's rank 50256 is the empty byte string (where GPT-2 has
# <|endoftext|>); BPE never produces it, and tokens.txt needs a non-empty name for it.
EMPTY_TOKEN = "<|empty|>"


class WhisperTokenizer(MultitaskVocabulary, Tokenizer):
    """Whisper's vocabulary (module docstring) with the multitask helpers.

    Args:
        encoding: "multilingual" or "gpt2" (English-only models).
        num_languages: language tokens, the first of WHISPER_LANGUAGES (99; large-v3: 100).
        speaker_change: append <|sc|> after <|30.00|> (vocab_size + 1).
        vocab_file: a `.tiktoken` file to read instead of the installed package's.
    """

    requires_unk = False  # byte-level: every text has an encoding
    byte_level = True

    def __init__(self, encoding: str = "multilingual", num_languages: int = 99, speaker_change: bool = False,
                 vocab_file: str | None = None):
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        if not 1 <= num_languages <= len(WHISPER_LANGUAGES):
            raise ValueError(f"num_languages must be in 1 .. {len(WHISPER_LANGUAGES)}, got {num_languages}")
        self._encoding_name = encoding
        self._num_languages = int(num_languages)
        self._speaker_change = bool(speaker_change)
        self._vocab_file = None if vocab_file is None else str(vocab_file)
        path = self._vocab_file or str(whisper_vocab_file(encoding))
        self._encoding, tokens, roles = load_encoding(path, self._num_languages, self._speaker_change)
        super().__init__(tokens, roles)
        self._eot = self._role_id("eot")

    @property
    def encoding(self):
        """The `tiktoken.Encoding` (shared by every tokenizer of these options in the process)."""
        return self._encoding

    def tokenize(self, text: str) -> list[str]:
        return [self._tokens[i] for i in self.encode(text)]

    def encode(self, text: str) -> list[int]:
        """Whisper's `encode(text)`; text that spells a special token out ("<|en|>") is
        encoded as plain text (where whisper's raises)."""
        return self._encoding.encode_ordinary(text)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`, every special (timestamps too) skipped, but a speaker change
        written " <sc> "; broken UTF-8 as U+FFFD."""
        return self._by_speaker(ids, lambda part: self._encoding.decode(
            [i for i in self._content_ids(part) if i < self._eot]))

    def decode_with_timestamps(self, ids: Iterable[int]) -> str:
        """Whisper's `decode_with_timestamps`: every special rendered ("<|1.00|>")."""
        return self._encoding.decode(int_ids(ids, self.vocab_size))

    def to_dict(self) -> dict[str, Any]:
        return {"_target_": self._target(), "encoding": self._encoding_name, "num_languages": self._num_languages,
                "speaker_change": self._speaker_change, "vocab_file": self._vocab_file}

    def __reduce__(self):
        # Pickled (e.g. into DataLoader workers) as its options; the vocabulary is re-read
        # once per process instead of being copied.
        return (_from_options, (self.to_dict(),))

    def __repr__(self) -> str:
        return (f"WhisperTokenizer(encoding={self._encoding_name!r}, num_languages={self._num_languages}, "
                f"speaker_change={self._speaker_change}, vocab_size={self.vocab_size})")


def _from_options(d: dict[str, Any]) -> WhisperTokenizer:
    return WhisperTokenizer.from_dict(d)


def whisper_vocab_file(encoding: str) -> Path:
    """`<installed whisper>/assets/<encoding>.tiktoken`, found without importing whisper."""
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"Whisper's vocabulary comes with the openai-whisper package: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / f"{encoding}.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is openai-whisper installed completely? ({INSTALL_HINT})")
    return path


@cache
def load_encoding(vocab_file: str, num_languages: int, speaker_change: bool):
    """(tiktoken.Encoding, token strings, role -> special token) of a `.tiktoken` file,
    built once per process and options (whisper.tokenizer.get_encoding's construction)."""
    try:
        import tiktoken
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(f"WhisperTokenizer needs tiktoken: {INSTALL_HINT}") from e
    ranks = {}
    with open(vocab_file, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{vocab_file}: ranks are not 0 .. {len(ranks) - 1}")
    specials, roles = multitask_special_tokens(WHISPER_LANGUAGES[:num_languages], speaker_change)
    encoding = tiktoken.Encoding(
        name=f"{Path(vocab_file).name}:{num_languages}{':sc' if speaker_change else ''}",
        explicit_n_vocab=len(ranks) + len(specials),
        pat_str=PATTERN,
        mergeable_ranks=ranks,
        special_tokens={token: len(ranks) + i for i, token in enumerate(specials)},
    )
    to_unicode = bytes_to_unicode()
    text_tokens = [""] * len(ranks)
    for token, rank in ranks.items():
        text_tokens[rank] = "".join(to_unicode[b] for b in token) or EMPTY_TOKEN
    return encoding, (*text_tokens, *specials), roles


@lru_cache(maxsize=1)
def bytes_to_unicode() -> tuple[str, ...]:
    """GPT-2's byte -> printable character map (openai/gpt-2 encoder.py): printable Latin-1
    bytes stand for themselves, the others (space, control bytes) for 256 + n."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return tuple(table[b] for b in range(256))
