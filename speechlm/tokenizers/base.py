"""The interface every tokenizer shares, ESPnet's token-list conventions, and saving/loading.

Token list (ESPnet's `token_list`, so ESPnet users recognise it)::

    id 0            <blank>      CTC blank; never produced by `encode`
    id 1            <unk>        anything not in the vocabulary
    ids 2 .. V-2    the real tokens
    id V-1          <sos/eos>    start and end of sentence share one id, as in ESPnet

A tokenizer is fully described by a plain dict of primitive types (`to_dict`), with the
class's import path under `_target_`. Checkpoints embed that dict and are read back with
`torch.load(weights_only=True)`, which refuses arbitrary objects; `tokenizer_from_dict` or
`hydra.utils.instantiate` rebuild the tokenizer from it (no registry of names).

On disk (`save` / `load_tokenizer`) a tokenizer is a directory::

    tokens.txt       the token list, one token per line (ESPnet format, for people and tools)
    tokenizer.yaml   the dict without its `bytes` values (those go to files next to it,
                     e.g. sentencepiece's `bpe.model`)
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import hydra.utils
import yaml

from speechlm.atomic import atomic_write_bytes

BLANK = "<blank>"
UNK = "<unk>"
SOS_EOS = "<sos/eos>"
SPECIAL_TOKENS = (BLANK, UNK, SOS_EOS)

TOKENS_FILE = "tokens.txt"
CONFIG_FILE = "tokenizer.yaml"


def normalize_whitespace(text: str) -> str:
    """Collapse runs of whitespace to one space and strip the ends."""
    return " ".join(text.split())


def with_special_tokens(real_tokens: Iterable[str]) -> list[str]:
    """`[<blank>, <unk>, *real_tokens, <sos/eos>]`: the full ESPnet token list."""
    return [BLANK, UNK, *real_tokens, SOS_EOS]


class Tokenizer(ABC):
    """Text <-> ids over a fixed token list laid out as in the module docstring.

    Subclasses implement `tokenize`, `encode`, `decode` and `to_dict`; the constructor
    arguments of a subclass are exactly the keys of its `to_dict()` minus `_target_`.
    """

    def __init__(self, tokens: Sequence[str]):
        tokens = [str(t) for t in tokens]  # also turns an OmegaConf ListConfig into a list
        if len(tokens) < 3 or tokens[0] != BLANK or tokens[1] != UNK or tokens[-1] != SOS_EOS:
            raise ValueError(
                f"a token list must start with {BLANK!r}, {UNK!r} and end with {SOS_EOS!r}; "
                f"got {tokens[:2]} ... {tokens[-1:]}"
            )
        token_to_id = {t: i for i, t in enumerate(tokens)}
        if len(token_to_id) != len(tokens):
            dups = sorted(t for t, n in Counter(tokens).items() if n > 1)
            raise ValueError(f"duplicate tokens in token list: {dups}")
        bad = [t for t in tokens if t == "" or any(c.isspace() for c in t)]
        if bad:  # tokens.txt holds one token per line, so a token cannot contain whitespace
            raise ValueError(f"tokens must be non-empty and contain no whitespace: {bad!r}")
        self._tokens = tokens
        self._token_to_id = token_to_id

    # --- the token list -------------------------------------------------------------------

    @property
    def tokens(self) -> list[str]:
        """The full token list, index = id (a copy: the tokenizer is immutable)."""
        return list(self._tokens)

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def blank_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def sos_id(self) -> int:
        return len(self._tokens) - 1

    @property
    def eos_id(self) -> int:
        return len(self._tokens) - 1

    def token_to_id(self, token: str) -> int:
        """Id of `token`; `unk_id` if it is unknown or is "<blank>"/"<sos/eos>" (a transcript
        that spells those out must not put a CTC blank or an end of sentence in the ids)."""
        token_id = self._token_to_id.get(token, self.unk_id)
        return self.unk_id if token_id in (self.blank_id, self.eos_id) else token_id

    def id_to_token(self, token_id: int) -> str:
        return self._tokens[token_id]

    # --- text <-> ids ---------------------------------------------------------------------

    @abstractmethod
    def tokenize(self, text: str) -> list[str]:
        """The pieces `encode` would map to ids (for inspection; unknown pieces kept as-is)."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids of `text`; never contains blank or sos/eos, unknown pieces become `unk_id`."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; blank and sos/eos ids are skipped."""

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def decode_batch(self, batch: Iterable[Iterable[int]]) -> list[str]:
        return [self.decode(ids) for ids in batch]

    def _content_ids(self, ids: Iterable[int]) -> list[int]:
        """`ids` as Python ints without blank and sos/eos; accepts lists and 1-D tensors."""
        if hasattr(ids, "tolist"):  # torch / numpy: one conversion instead of one per element
            ids = ids.tolist()
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self._tokens):
                raise IndexError(f"token id {i} out of range for vocab_size {len(self._tokens)}")
            if i != self.blank_id and i != self.eos_id:
                out.append(i)
        return out

    # --- serialisation --------------------------------------------------------------------

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Primitive-typed description: `_target_` (import path) + constructor arguments."""

    def _target(self) -> str:
        cls = type(self)
        return f"{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tokenizer:
        return cls(**{k: v for k, v in d.items() if k != "_target_"})

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `tokens.txt` and `tokenizer.yaml` into `directory` (created if missing).

        `bytes` values are left out of the yaml; a subclass that has them writes them to
        their own files (see `SentencePieceTokenizer.save`) and reads them in `load`.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in self.to_dict().items() if not isinstance(v, bytes)}
        atomic_write_bytes(directory / TOKENS_FILE, "".join(t + "\n" for t in self._tokens).encode())
        # yaml last: a directory with a tokenizer.yaml is complete.
        text = yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
        atomic_write_bytes(directory / CONFIG_FILE, text.encode())
        return directory

    @classmethod
    def load(cls, directory: Path, config: dict[str, Any]) -> Tokenizer:
        """Rebuild from `config` (tokenizer.yaml); subclasses add back their side files."""
        return cls.from_dict(config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from `Tokenizer.to_dict()` output (e.g. out of a checkpoint)."""
    cls = hydra.utils.get_class(d["_target_"])
    if not (isinstance(cls, type) and issubclass(cls, Tokenizer)):
        raise TypeError(f"{d['_target_']} is not a Tokenizer")
    return cls.from_dict(d)


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """Read a directory written by `Tokenizer.save`."""
    directory = Path(directory)
    config = yaml.safe_load((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    cls = hydra.utils.get_class(config["_target_"])
    if not (isinstance(cls, type) and issubclass(cls, Tokenizer)):
        raise TypeError(f"{directory / CONFIG_FILE}: {config['_target_']} is not a Tokenizer")
    tokenizer = cls.load(directory, config)
    # tokens.txt is for people and ESPnet tools; a hand edit there would silently disagree.
    listed = (directory / TOKENS_FILE).read_text(encoding="utf-8").splitlines()
    if listed != tokenizer.tokens:
        raise ValueError(
            f"{directory / TOKENS_FILE} does not match {directory / CONFIG_FILE} "
            f"({len(listed)} vs {tokenizer.vocab_size} tokens)"
        )
    return tokenizer


