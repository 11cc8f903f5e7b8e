"""SentencePiece subwords (BPE or unigram) in ESPnet's token-list layout.

sentencepiece does the work; this file only shifts ids by one so that `<blank>` can be 0:
sentencepiece is trained with `unk_id=0` and no bos/eos, so its `<unk>` (0) becomes our 1,
its piece k becomes our k + 1, and `<sos/eos>` is appended after its last piece.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm

from speechlm.atomic import atomic_write_bytes

from speechlm.tokenizers.base import (
    BLANK,
    SOS_EOS,
    SPECIAL_TOKENS,
    UNK,
    Tokenizer,
)

MODEL_TYPES = ("bpe", "unigram")


class SentencePieceTokenizer(Tokenizer):
    """Wraps a trained sentencepiece model.

    Args:
        model: the serialized model (`bpe.model` file contents, `serialized_model_proto()`).
        model_type: "bpe" or "unigram", as it was trained (names the file in `save`).
    """

    def __init__(self, model: bytes, model_type: str):
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
        self._model = bytes(model)
        self._model_type = model_type
        self._processor = spm.SentencePieceProcessor(model_proto=self._model)
        if self._processor.unk_id() != 0:
            raise ValueError(
                f"sentencepiece model has unk_id={self._processor.unk_id()}; the id shift "
                "(ours = sentencepiece's + 1) needs unk_id=0, as ESPnet trains it"
            )
        pieces = [self._processor.id_to_piece(i) for i in range(self._processor.get_piece_size())]
        super().__init__([BLANK, *pieces, SOS_EOS])

    @classmethod
    def train(
        cls,
        lines: Iterable[str],
        vocab_size: int,
        model_type: str = "bpe",
        user_defined_symbols: Sequence[str] = (),
        character_coverage: float = 1.0,
        hard_vocab_limit: bool = True,
        num_threads: int = 1,
    ) -> SentencePieceTokenizer:
        """Train in memory (no files) with ESPnet's settings.

        Args:
            lines: transcripts, one sentence each (no utterance ids).
            vocab_size: sentencepiece's vocabulary size, `<unk>` and user-defined symbols
                included (ESPnet's `nbpe`); the tokenizer's `vocab_size` is this + 2
                (`<blank>`, `<sos/eos>`).
            user_defined_symbols: strings never split, e.g. non-linguistic `[noise]`.
            hard_vocab_limit: False lets a small text give fewer than `vocab_size` pieces
                instead of an error.
            num_threads: 1 by default so the same text gives a byte-identical model.
        """
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
        symbols = [str(s) for s in user_defined_symbols]
        reserved = [s for s in symbols if s in SPECIAL_TOKENS]
        if reserved:
            raise ValueError(f"{reserved} are reserved and cannot be user-defined symbols")
        spm.set_random_generator_seed(0)  # fixed seed: reproducible wherever spm samples
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines),
                model_writer=model,
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=character_coverage,
                hard_vocab_limit=hard_vocab_limit,
                user_defined_symbols=symbols,
                unk_id=0,
                bos_id=-1,
                eos_id=-1,
                pad_id=-1,
                unk_piece=UNK,
                unk_surface=UNK,  # decode an unknown as "<unk>", like the char/word tokenizers
                # ESPnet's value: larger than any corpus, so every sentence is used and
                # sentencepiece never samples a subset.
                input_sentence_size=100_000_000,
                num_threads=num_threads,
                minloglevel=1,  # its INFO log is hundreds of lines per training
            )
        except RuntimeError as e:
            explained = _explain_training_error(e, vocab_size)
            if explained is None:
                raise
            raise explained from e
        return cls(model.getvalue(), model_type)

    @property
    def model_type(self) -> str:
        return self._model_type

    @property
    def processor(self) -> spm.SentencePieceProcessor:
        """The sentencepiece processor (its ids are ours - 1), e.g. for sampling."""
        return self._processor

    def tokenize(self, text: str) -> list[str]:
        return self._processor.encode(text, out_type=str)

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i in self._processor.encode(text)]

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [[i + 1 for i in ids] for ids in self._processor.encode(list(texts))]

    def decode(self, ids: Iterable[int]) -> str:
        return self._processor.decode([i - 1 for i in self._content_ids(ids)])

    def to_dict(self) -> dict[str, Any]:
        return {"_target_": self._target(), "model": self._model, "model_type": self._model_type}

    def save(self, directory: str | os.PathLike) -> Path:
        """As `Tokenizer.save`, plus the model as `bpe.model` / `unigram.model`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / _model_file_name(self._model_type), self._model)
        return super().save(directory)

    @classmethod
    def load(cls, directory: Path, config: dict[str, Any]) -> SentencePieceTokenizer:
        model = (directory / _model_file_name(config["model_type"])).read_bytes()
        return cls.from_dict({**config, "model": model})


def _model_file_name(model_type: str) -> str:
    return f"{model_type}.model"


def _explain_training_error(error: RuntimeError, vocab_size: int) -> ValueError | None:
    """sentencepiece reports a bad vocab_size as an internal check failure; say it plainly."""
    message = str(error)
    if too_high := re.search(r"Vocabulary size too high .*<= (\d+)", message):
        most = too_high.group(1)
        return ValueError(
            f"vocab_size={vocab_size} is too large for this text: sentencepiece can make at "
            f"most {most} pieces from it (<unk> and user-defined symbols included). Use "
            f"vocab_size <= {most}, more text, or hard_vocab_limit=False."
        )
    if too_low := re.search(r"smaller than required_chars\. \d+ vs (\d+)", message):
        least = too_low.group(1)
        return ValueError(
            f"vocab_size={vocab_size} is too small for this text: it needs at least {least} "
            "(every distinct character, <unk> and the user-defined symbols)."
        )
    if "sentences_.empty()" in message:
        return ValueError("no text to train sentencepiece on (all lines empty)")
    return None
