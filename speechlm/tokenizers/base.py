"""The interface every tokenizer shares, its special tokens, and saving/loading.

A tokenizer names its special tokens by role (`special_tokens`: role -> token), and models
read their ids by role (`special_ids`: blank, unk, sos, eos, pad, and any other named
special such as a language or task token); nothing assumes where they sit. The default
roles are ESPnet's `token_list` layout, what the ASR recipes use (so ESPnet users recognise
it)::

    id 0            <blank>      blank: CTC blank; never produced by `encode`
    id 1            <unk>        unk: anything not in the vocabulary
    ids 2 .. V-2    the real tokens
    id V-1          <sos/eos>    sos and eos: start and end of sentence share one id

A token list laid out otherwise (an LLM's, Whisper's) gives its own `special_tokens`, e.g.
{"unk": "<unk>", "sos": "<s>", "eos": "</s>", "pad": "<pad>"} (no blank: no CTC head).
A vocabulary that spells any text (byte-level BPE, `requires_unk = False`) may have no unk.

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
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import hydra.utils
import yaml

from speechlm.atomic import atomic_write_bytes

BLANK = "<blank>"
UNK = "<unk>"
SOS_EOS = "<sos/eos>"
SPECIAL_TOKENS = (BLANK, UNK, SOS_EOS)
# role -> token of the ESPnet layout (the default)
ESPNET_SPECIALS = {"blank": BLANK, "unk": UNK, "sos": SOS_EOS, "eos": SOS_EOS}
# roles whose token `encode` never produces from text (a transcript that spells one out
# gets `unk` instead) and `decode` leaves out
CONTROL_ROLES = ("blank", "sos", "eos", "pad")

TOKENS_FILE = "tokens.txt"
CONFIG_FILE = "tokenizer.yaml"
_IMPORT_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+\Z")


def normalize_whitespace(text: str) -> str:
    """Collapse runs of whitespace to one space and strip the ends."""
    return " ".join(text.split())


def with_special_tokens(real_tokens: Iterable[str]) -> list[str]:
    """`[<blank>, <unk>, *real_tokens, <sos/eos>]`: the full ESPnet token list."""
    return [BLANK, UNK, *real_tokens, SOS_EOS]


class Tokenizer(ABC):
    """Text <-> ids over a fixed token list with named special tokens (module docstring).

    Subclasses implement `tokenize`, `encode`, `decode` and `to_dict`; the constructor
    arguments of a subclass are exactly the keys of its `to_dict()` minus `_target_`
    (`special_tokens` is written only when it is not the ESPnet layout).
    """

    # False for a vocabulary that can spell every text (byte-level BPE): then it may have no
    # 'unk' token, and `token_to_id` raises KeyError for a token it does not know.
    requires_unk: ClassVar[bool] = True

    def __init__(self, tokens: Sequence[str], special_tokens: dict[str, str] | None = None):
        tokens = [str(t) for t in tokens]  # also turns an OmegaConf ListConfig into a list
        specials = dict(ESPNET_SPECIALS if special_tokens is None else special_tokens)
        if special_tokens is None and (len(tokens) < 3 or tokens[0] != BLANK or tokens[1] != UNK
                                       or tokens[-1] != SOS_EOS):
            raise ValueError(
                f"a token list must start with {BLANK!r}, {UNK!r} and end with {SOS_EOS!r} (ESPnet's layout), "
                f"or name its special tokens (special_tokens=); got {tokens[:2]} ... {tokens[-1:]}"
            )
        token_to_id = {t: i for i, t in enumerate(tokens)}
        if len(token_to_id) != len(tokens):
            dups = sorted(t for t, n in Counter(tokens).items() if n > 1)
            raise ValueError(f"duplicate tokens in token list: {dups}")
        bad = [t for t in tokens if t.split() != [t]]  # empty, or holds whitespace
        if bad:  # tokens.txt holds one token per line, so a token cannot contain whitespace
            raise ValueError(f"tokens must be non-empty and contain no whitespace: {bad!r}")
        missing = {role: t for role, t in specials.items() if t not in token_to_id}
        if missing:
            raise ValueError(f"special tokens not in the token list: {missing}")
        if self.requires_unk and "unk" not in specials:
            raise ValueError("special_tokens needs an 'unk' token (what unknown pieces become)")
        self._tokens = tokens
        self._token_to_id = token_to_id
        self._specials = {str(role): str(t) for role, t in specials.items()}
        self._control_ids = {token_to_id[t] for role, t in self._specials.items() if role in CONTROL_ROLES}
        self._unk = token_to_id.get(self._specials.get("unk"))  # None: no unk token

    # --- the token list -------------------------------------------------------------------

    @property
    def tokens(self) -> list[str]:
        """The full token list, index = id (a copy: the tokenizer is immutable)."""
        return list(self._tokens)

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def special_tokens(self) -> dict[str, str]:
        """role -> token (a copy)."""
        return dict(self._specials)

    @property
    def special_ids(self) -> dict[str, int]:
        """role -> id: what a model config reads (`${special_ids.sos}`)."""
        return {role: self._token_to_id[t] for role, t in self._specials.items()}

    def _role_id(self, role: str) -> int:
        if role not in self._specials:
            raise KeyError(f"{type(self).__name__} has no {role!r} token (its special tokens: {self._specials})")
        return self._token_to_id[self._specials[role]]

    @property
    def blank_id(self) -> int:
        return self._role_id("blank")

    @property
    def unk_id(self) -> int:
        return self._role_id("unk")

    @property
    def sos_id(self) -> int:
        return self._role_id("sos")

    @property
    def eos_id(self) -> int:
        return self._role_id("eos")

    def _specials_dict(self) -> dict[str, Any]:
        """{"special_tokens": ...} for `to_dict`, empty for the ESPnet layout (so that the
        recipes' tokenizers and checkpoints stay as they were)."""
        return {} if self._specials == ESPNET_SPECIALS else {"special_tokens": dict(self._specials)}

    def token_to_id(self, token: str) -> int:
        """Id of `token`; `unk_id` if it is unknown or a control token (blank, sos, eos,
        pad: a transcript that spells "<blank>" or "<sos/eos>" out must not put a CTC blank
        or an end of sentence in the ids). Without an unk token: KeyError instead."""
        token_id = self._token_to_id.get(token)
        if token_id is None or token_id in self._control_ids:
            if self._unk is None:
                what = "is a control token" if token_id is not None else "is not in the vocabulary"
                raise KeyError(f"{token!r} {what}, and {type(self).__name__} has no 'unk' token to map it to")
            return self._unk
        return token_id

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
        """Text of `ids`; control ids (blank, sos, eos, pad) are skipped."""

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def decode_batch(self, batch: Iterable[Iterable[int]]) -> list[str]:
        return [self.decode(ids) for ids in batch]

    def _content_ids(self, ids: Iterable[int]) -> list[int]:
        """`ids` as Python ints without control ids; accepts lists and 1-D tensors."""
        if hasattr(ids, "tolist"):  # torch / numpy: one conversion instead of one per element
            ids = ids.tolist()
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self._tokens):
                raise IndexError(f"token id {i} out of range for vocab_size {len(self._tokens)}")
            if i not in self._control_ids:
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


def _tokenizer_class(d: Any, where: str) -> type[Tokenizer]:
    """The class a tokenizer dict names; only a `Tokenizer` subclass is accepted (the dict
    comes from a file: a checkpoint or tokenizer.yaml), and only its `from_dict`/`load` run."""
    if not isinstance(d, Mapping) or not isinstance(d.get("_target_"), str):
        raise ValueError(f"{where}: not a tokenizer description (a mapping with a `_target_` class path)")
    target = d["_target_"]
    try:
        cls = hydra.utils.get_class(target) if _IMPORT_PATH.match(target) else None
    except Exception as e:  # noqa: BLE001 - not importable, not a class, refused by Hydra
        raise TypeError(f"{where}: {target!r} is not a Tokenizer class ({e})") from None
    if not (isinstance(cls, type) and issubclass(cls, Tokenizer)):
        raise TypeError(f"{where}: {target!r} is not a Tokenizer")
    return cls


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from `Tokenizer.to_dict()` output (e.g. out of a checkpoint)."""
    return _tokenizer_class(d, "tokenizer").from_dict(d)


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """Read a directory written by `Tokenizer.save` (`yaml.safe_load`: no Python tags)."""
    directory = Path(directory)
    try:
        config = yaml.safe_load((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{directory / CONFIG_FILE}: not a tokenizer config: {e}") from None
    cls = _tokenizer_class(config, str(directory / CONFIG_FILE))
    tokenizer = cls.load(directory, config)
    # tokens.txt is for people and ESPnet tools; a hand edit there would silently disagree.
    listed = (directory / TOKENS_FILE).read_text(encoding="utf-8").splitlines()
    if listed != tokenizer.tokens:
        raise ValueError(
            f"{directory / TOKENS_FILE} does not match {directory / CONFIG_FILE} "
            f"({len(listed)} vs {tokenizer.vocab_size} tokens)"
        )
    return tokenizer


