"""SentencePiece subwords (BPE or unigram) in ESPnet's token-list layout.

sentencepiece does the work; this file only maps its pieces to ids, one of two ways:

- a model trained here (`train`): `unk_id=0` and no bos/eos, so ids are shifted by one
  so that `<blank>` can be 0: its `<unk>` (0) becomes our 1, its piece k our k + 1, and
  `<sos/eos>` is appended after its last piece;
- a given token list (`tokens=`), e.g. an ESPnet experiment's: asr.sh trains with
  sentencepiece's defaults (`<unk>` 0, `<s>` 1, `</s>` 2) and lists `<blank>`, `<unk>`,
  the pieces after `</s>`, `<sos/eos>`. Pieces then map to ids by their text, as ESPnet's
  `TokenIDConverter` does (a piece not in the list is `<unk>`).

`MultitaskSentencePieceTokenizer` is a model trained here with Whisper's special tokens
(speechlm/tokenizers/multitask.py) in place of `<sos/eos>`.
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
from speechlm.tokenizers.multitask import MultitaskVocabulary, multitask_special_tokens

MODEL_TYPES = ("bpe", "unigram")


class SentencePieceTokenizer(Tokenizer):
    """Wraps a trained sentencepiece model.

    Args:
        model: the serialized model (`bpe.model` file contents, `serialized_model_proto()`).
        model_type: "bpe" or "unigram", as it was trained (names the file in `save`;
            `sentencepiece_model_type(model)` reads it from the model).
        tokens: the full token list, pieces mapped by their text (module docstring);
            None: every piece of the model, ids shifted by one.
        special_tokens: role -> token of `tokens`, for a list not in ESPnet's layout.
    """

    def __init__(self, model: bytes, model_type: str, tokens: Sequence[str] | None = None,
                 special_tokens: dict[str, str] | None = None):
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
        self._model = bytes(model)
        self._model_type = model_type
        self._processor = spm.SentencePieceProcessor(model_proto=self._model)
        self._by_text = tokens is not None
        if self._by_text:
            super().__init__(tokens, special_tokens)
            unk = self._processor.unk_id()
            specials = set(self._specials.values())
            foreign = [t for t in self._tokens if t not in specials and self._processor.piece_to_id(t) == unk]
            if foreign:  # a token list and a model from different trainings
                raise ValueError(f"{len(foreign)} tokens of the token list are not pieces of the "
                                 f"sentencepiece model, e.g. {foreign[:5]}")
            return
        if special_tokens is not None:
            raise ValueError("special_tokens needs the token list (tokens=) it names tokens of")
        if self._processor.unk_id() != 0:
            raise ValueError(
                f"sentencepiece model has unk_id={self._processor.unk_id()}; the id shift "
                "(ours = sentencepiece's + 1) needs unk_id=0 (or pass the token list as `tokens`)"
            )
        pieces = [self._processor.id_to_piece(i) for i in range(self._processor.get_piece_size())]
        super().__init__(*self._shifted_layout(pieces))

    def _shifted_layout(self, pieces: list[str]) -> tuple[list[str], dict[str, str] | None]:
        """Token list and roles of a model trained here (sentencepiece's pieces, <unk> first):
        ESPnet's `[<blank>, *pieces, <sos/eos>]`."""
        return [BLANK, *pieces, SOS_EOS], None

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
        return cls(train_model(lines, vocab_size, model_type, user_defined_symbols, character_coverage,
                               hard_vocab_limit, num_threads), model_type)

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
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        if self._by_text:
            return [[self.token_to_id(p) for p in pieces] for pieces in self._processor.encode(list(texts), out_type=str)]
        return [[i + 1 for i in ids] for ids in self._processor.encode(list(texts))]

    def decode(self, ids: Iterable[int]) -> str:
        if self._by_text:
            return self._processor.decode_pieces([self._tokens[i] for i in self._content_ids(ids)])
        return self._processor.decode([i - 1 for i in self._content_ids(ids)])

    def to_dict(self) -> dict[str, Any]:
        d = {"_target_": self._target(), "model": self._model, "model_type": self._model_type}
        return {**d, "tokens": self.tokens, **self._specials_dict()} if self._by_text else d

    def save(self, directory: str | os.PathLike) -> Path:
        """As `Tokenizer.save`, plus the model as `bpe.model` / `unigram.model`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / _model_file_name(self._model_type), self._model)
        return super().save(directory)

    @classmethod
    def load(cls, directory: Path, config: dict[str, Any]) -> SentencePieceTokenizer:
        path = directory / _model_file_name(config["model_type"])
        try:
            return cls.from_dict({**config, "model": path.read_bytes()})
        except RuntimeError as e:  # sentencepiece cannot parse it (it is read as a protobuf, never run)
            raise ValueError(f"{path}: not a sentencepiece model ({' '.join(str(e).split())[:200]})") from None


class MultitaskSentencePieceTokenizer(MultitaskVocabulary, SentencePieceTokenizer):
    """A sentencepiece model trained here with Whisper's special tokens instead of <sos/eos>:

        [<blank>, <unk>, pieces..., <|endoftext|>, <|startoftranscript|>, <|en|>, ...,
         <|translate|>, <|transcribe|>, <|startoflm|>, <|startofprev|>, <|nospeech|>,
         <|notimestamps|>, <|0.00|> ... <|30.00|>, <|sc|>]

    ids of pieces shifted by one as in `SentencePieceTokenizer`; the roles and helpers of
    `MultitaskVocabulary` (blank and unk too: a CTC head can share the vocabulary).

    Args:
        model, model_type: as `SentencePieceTokenizer` (a model with unk_id=0).
        languages: language codes, in the order of their tokens.
    """

    def __init__(self, model: bytes, model_type: str, languages: Sequence[str]):
        self._languages = [str(code) for code in languages]
        super().__init__(model, model_type)

    def _shifted_layout(self, pieces: list[str]) -> tuple[list[str], dict[str, str] | None]:
        tail, roles = multitask_special_tokens(self._languages, speaker_change=True)
        return [BLANK, *pieces, *tail], {"blank": BLANK, "unk": UNK, **roles}

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
        *,
        languages: Sequence[str],
    ) -> MultitaskSentencePieceTokenizer:
        """`SentencePieceTokenizer.train`, then the multitask special tokens of `languages`
        (vocab_size + 1 + len(languages) + 1510 tokens in all)."""
        tail, _ = multitask_special_tokens(languages, speaker_change=True)
        model = train_model(lines, vocab_size, model_type, user_defined_symbols, character_coverage,
                            hard_vocab_limit, num_threads, reserved_tokens=tail)
        return cls(model, model_type, languages)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`, every special (blank, timestamps, ...) skipped, but a speaker
        change written " <sc> "."""
        return self._by_speaker(ids, lambda part: self._processor.decode([i - 1 for i in self._text_ids(part)]))

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "languages": list(self._languages)}


def train_model(
    lines: Iterable[str],
    vocab_size: int,
    model_type: str = "bpe",
    user_defined_symbols: Sequence[str] = (),
    character_coverage: float = 1.0,
    hard_vocab_limit: bool = True,
    num_threads: int = 1,
    reserved_tokens: Sequence[str] = (),
) -> bytes:
    """The serialized sentencepiece model of `SentencePieceTokenizer.train` (its arguments;
    `reserved_tokens`: more tokens a user-defined symbol may not be)."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    symbols = [str(s) for s in user_defined_symbols]
    reserved = {*SPECIAL_TOKENS, *reserved_tokens}
    reserved = [s for s in symbols if s in reserved]
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
    return model.getvalue()


def sentencepiece_model_type(model: bytes) -> str:
    """"bpe", "unigram", "word" or "char": how a serialized model was trained."""
    from sentencepiece import (
        sentencepiece_model_pb2 as pb2,  # needs protobuf (tensorboard's dependency)
    )

    proto = pb2.ModelProto()
    proto.ParseFromString(bytes(model))
    return pb2.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type).lower()


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
