"""Hugging Face tokenizer files (`tokenizer.json`) as a `Tokenizer`: the vocabulary of a
LLaMA/Qwen2-family LM that a speech-LLM talks to, with its chat template.

The `tokenizers` library (Hugging Face's Rust tokenizers) does all the work; ids equal
transformers' (`AutoTokenizer` over the same files, the pipeline of their tokenizer.json;
transformers 5's model-specific classes, e.g. Qwen2Tokenizer, rebuild that pipeline from
its vocabulary and merges, normally to the same)::

    encode(text)     tokenizer.encode(text, add_special_tokens=False)
    decode(ids)      tokenizer.decode(ids, skip_special_tokens=True)
    render_chat(m)   tokenizer.apply_chat_template(m, tokenize=False)
    apply_chat_template(m)  tokenizer.apply_chat_template(m, tokenize=True)

Unlike the ESPnet-layout tokenizers, `encode` matches special tokens spelled out in the
text as transformers does: "<|im_start|>user" gives the id of <|im_start|>, then the
user's. Chat-formatted LM training lines rely on it; text that may contain such strings
by accident must be cleaned first.

Special tokens are named by role (`special_tokens`), e.g. {"unk": "<unk>", "sos": "<s>",
"eos": "</s>", "pad": "<pad>", "audio": "<|audio|>", "start_of_turn": "<|im_start|>",
"end_of_turn": "<|im_end|>"}. Every role token is a special token of the tokenizer, as
transformers makes its bos/eos/unk/pad and additional special tokens: matched whole in
text, skipped by `decode` (with every other special token).

`tokens` is the vocabulary in id order, added tokens included (ids must be 0 .. V-1). A
token that cannot be a line of tokens.txt (empty, or holding whitespace such as "\\n" or
"  "), or that starts with ESCAPE_MARK, is listed under a reversible name: ESCAPE_MARK
followed by the token with backslash escapes (`token_name`; `token_from_name` reverses
it): "\\n\\n" -> "␛\\n\\n", " " -> "␛\\s", "\\t" -> "␛\\t", other whitespace "␛\\u3000",
a backslash "\\\\", the empty token "␛". Only `tokens`, `id_to_token`, `token_to_id` and
`tokenize` use these names; text goes through the real tokenizer.

On disk (`save` / `load_tokenizer`): tokens.txt, tokenizer.yaml (roles, chat template) and
tokenizer.json beside them. `save_pretrained` writes transformers' files (tokenizer.json,
tokenizer_config.json, special_tokens_map.json), so one directory can hold both.
`speechlm.tokenizers.hf_train.train_hf_tokenizer` trains a sentencepiece-style BPE vocabulary
for an LM trained here; chat templates render through `speechlm.tokenizers.chat_template`.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tokenizers
import yaml
from tokenizers import AddedToken

from speechlm.atomic import atomic_write_bytes
from speechlm.tokenizers.base import CONFIG_FILE, TOKENS_FILE, Tokenizer
from speechlm.tokenizers.chat_template import compile_chat_template

TOKENIZER_JSON = "tokenizer.json"
HF_CONFIG_FILE = "tokenizer_config.json"
HF_SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
HF_CHAT_TEMPLATE_FILE = "chat_template.jinja"
HF_SENTENCEPIECE_FILE = "tokenizer.model"
# transformers' named special tokens -> our roles
HF_ROLES = {"bos_token": "sos", "eos_token": "eos", "unk_token": "unk", "pad_token": "pad"}
# the other named special tokens transformers makes special (not roles here)
HF_OTHER_NAMED = ("sep_token", "cls_token", "mask_token")
# tokenizer_config.json key under which `save_pretrained` keeps every role (transformers
# keeps it as an unused init argument), so that `from_pretrained` gets all roles back
ROLES_KEY = "speechlm_special_tokens"

ESCAPE_MARK = "\u241b"  # ␛ SYMBOL FOR ESCAPE: starts the name of a token that needs one
_ESCAPES = {"\\": "\\\\", " ": "\\s", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", "s": " ", "n": "\n", "t": "\t", "r": "\r"}
_ESCAPE_SEQUENCE = re.compile(r"\\(?:u([0-9A-F]{4})|(.))", re.S)



def token_name(token: str) -> str:
    """The name of `token` in `tokens` / tokens.txt (module docstring): itself, unless it is
    empty, holds whitespace or starts with ESCAPE_MARK."""
    if token and token.split() == [token] and not token.startswith(ESCAPE_MARK):
        return token
    body = "".join(_ESCAPES.get(c, f"\\u{ord(c):04X}" if c.isspace() else c) for c in token)
    return ESCAPE_MARK + body


def token_from_name(name: str) -> str:
    """The token `token_name` gave `name` (the inverse of `token_name`)."""
    if not name.startswith(ESCAPE_MARK):
        return name

    def unescape(match: re.Match) -> str:
        if match.group(1) is not None:
            return chr(int(match.group(1), 16))
        if match.group(2) not in _UNESCAPES:
            raise ValueError(f"{name!r}: unknown escape \\{match.group(2)}")
        return _UNESCAPES[match.group(2)]

    return _ESCAPE_SEQUENCE.sub(unescape, name[len(ESCAPE_MARK):])


class HFTokenizer(Tokenizer):
    """A `tokenizer.json` with named special tokens and an optional chat template.

    Args:
        tokenizer_json: the text of a `tokenizer.json` (`tokenizers.Tokenizer.to_str()`).
        special_tokens: role -> token; each must be in the vocabulary (it is made a special
            token, as transformers does with its named special tokens).
        chat_template: a jinja2 chat template (transformers' `chat_template`), or None.
    """

    requires_unk = False  # byte-level / byte-fallback BPE spells every text

    def __init__(self, tokenizer_json: str, special_tokens: Mapping[str, str], chat_template: str | None = None):
        self._json = str(tokenizer_json)
        self._roles = {str(role): str(token) for role, token in dict(special_tokens).items()}
        self._chat_template = None if chat_template is None else str(chat_template)
        try:
            backend = tokenizers.Tokenizer.from_str(self._json)
        except Exception as e:  # noqa: BLE001 - the Rust side raises plain Exception
            raise ValueError(f"not a tokenizer.json: {' '.join(str(e).split())[:300]}") from None
        vocab = backend.get_vocab(with_added_tokens=True)
        missing = {role: token for role, token in self._roles.items() if token not in vocab}
        if missing:
            raise ValueError(f"special tokens not in the vocabulary: {missing} (a role names a token of "
                             "tokenizer.json: its vocabulary or added_tokens)")
        # transformers makes its named special tokens special added tokens when it loads;
        # tokens that already are added tokens keep their settings (as in transformers).
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                    for t in dict.fromkeys(self._roles.values())])
        backend.no_truncation()  # transformers' encode(text) neither truncates nor pads
        backend.no_padding()
        self._backend = backend
        raw_tokens = dense_vocabulary(backend.get_vocab(with_added_tokens=True))
        super().__init__([token_name(t) for t in raw_tokens],
                         {role: token_name(t) for role, t in self._roles.items()})
        self._template = None if self._chat_template is None else compile_chat_template(self._chat_template)

    @property
    def backend_tokenizer(self) -> tokenizers.Tokenizer:
        """The `tokenizers.Tokenizer` doing the work (do not modify it)."""
        return self._backend

    @property
    def chat_template(self) -> str | None:
        return self._chat_template

    # --- text <-> ids ---------------------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        """The names (`tokens`) of `encode(text)`'s ids."""
        return [self._tokens[i] for i in self.encode(text)]

    def encode(self, text: str) -> list[int]:
        """transformers' `encode(text, add_special_tokens=False)`: no bos/eos added, but special
        tokens written in the text are matched (module docstring)."""
        return self._backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        """transformers' `decode(ids, skip_special_tokens=True)`: every special token (role
        tokens included) is left out."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < len(self._tokens)]
        if bad:
            raise IndexError(f"token id {bad[0]} out of range for vocab_size {len(self._tokens)}")
        return self._backend.decode(ids, skip_special_tokens=True)

    # --- chat -----------------------------------------------------------------------------

    def render_chat(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False,
                    **kwargs: Any) -> str:
        """The chat template rendered as transformers' `apply_chat_template(..., tokenize=False)`
        does: variables `messages` (keys whose value is None dropped), `add_generation_prompt`,
        `tools` and `documents` (None), `bos_token` / `eos_token` / `unk_token` / `pad_token`
        (roles sos, eos, unk, pad, where present), then `kwargs`."""
        if self._template is None:
            raise ValueError("this tokenizer has no chat template: give one (chat_template=, e.g. "
                             "speechlm.tokenizers.chat_template.CHATML) or read a model directory that has one")
        chat = []
        for message in messages:
            if not isinstance(message, Mapping):
                raise TypeError(f"a chat message is a dict (role, content), got {message!r}")
            chat.append({key: value for key, value in message.items() if value is not None})
        variables = {hf_name: self._roles[role] for hf_name, role in HF_ROLES.items() if role in self._roles}
        variables.update(kwargs)
        variables.setdefault("tools", None)
        variables.setdefault("documents", None)
        return self._template.render(messages=chat, add_generation_prompt=add_generation_prompt, **variables)

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False,
                            **kwargs: Any) -> list[int]:
        """Ids of `render_chat(...)`: transformers' `apply_chat_template(..., tokenize=True)`
        (which encodes the rendered text with add_special_tokens=False)."""
        return self.encode(self.render_chat(messages, add_generation_prompt, **kwargs))

    # --- serialisation --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"_target_": self._target(), "tokenizer_json": self._json, "special_tokens": dict(self._roles),
                "chat_template": self._chat_template}

    def __reduce__(self):
        # pickled (e.g. into DataLoader workers) as its description: the compiled template
        # cannot be pickled
        return (_from_dict, (self.to_dict(),))

    def save(self, directory: str | os.PathLike) -> Path:
        """tokens.txt and tokenizer.yaml (as `Tokenizer.save`), tokenizer.json beside them."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / TOKENIZER_JSON, self._json.encode("utf-8"))
        atomic_write_bytes(directory / TOKENS_FILE, "".join(t + "\n" for t in self._tokens).encode("utf-8"))
        config = {k: v for k, v in self.to_dict().items() if k != "tokenizer_json"}
        # yaml last: a directory with a tokenizer.yaml is complete.
        text = yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
        atomic_write_bytes(directory / CONFIG_FILE, text.encode("utf-8"))
        return directory

    @classmethod
    def load(cls, directory: Path, config: dict[str, Any]) -> HFTokenizer:
        path = Path(directory) / TOKENIZER_JSON
        return cls.from_dict({**config, "tokenizer_json": path.read_text(encoding="utf-8")})

    # --- transformers' files --------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, special_tokens: Mapping[str, str] | None = None,
                        chat_template: str | None = None) -> HFTokenizer:
        """Read a Hugging Face tokenizer directory (a model's, or `save_pretrained`'s).

        tokenizer.json, and tokenizer_config.json / special_tokens_map.json for the roles:
        bos_token -> sos, eos_token -> eos, unk_token -> unk, pad_token -> pad (the config
        wins where both name one; `save_pretrained`'s directories also list every other
        role). `special_tokens` adds or replaces roles (e.g. {"audio": "<|audio|>"}). The
        chat template: `chat_template`, else chat_template.jinja, else the config's
        (its "default" one if it has several). The other tokens transformers makes special
        (sep/cls/mask, additional special tokens) are made special in the stored
        tokenizer.json too, so that ids stay equal to transformers'.

        A directory with only a sentencepiece tokenizer.model (old LLaMA) is converted with
        transformers, if it is installed.
        """
        directory = Path(directory)
        config = _read_json_object(directory / HF_CONFIG_FILE)
        token_map = _read_json_object(directory / HF_SPECIAL_TOKENS_MAP_FILE)
        if (directory / TOKENIZER_JSON).is_file():
            text = (directory / TOKENIZER_JSON).read_text(encoding="utf-8")
        elif (directory / HF_SENTENCEPIECE_FILE).is_file():
            text = _convert_sentencepiece(directory)
        else:
            raise FileNotFoundError(f"{directory}: no {TOKENIZER_JSON} (nor a sentencepiece {HF_SENTENCEPIECE_FILE})")

        named = {}  # transformers' name -> token
        for source in (token_map, config):  # the config's win
            for key, value in source.items():
                if key.endswith("_token"):  # bos_token, ..., model-specific ones (image_token)
                    token = _token_content(value)
                    if token is None:  # null: none (a flag such as add_bos_token: not a token)
                        named.pop(key, None)
                    else:
                        named[key] = token
        roles = {role: named[hf_name] for hf_name, role in HF_ROLES.items() if hf_name in named}
        roles.update({str(r): str(t) for r, t in (config.get(ROLES_KEY) or {}).items()})
        roles.update({str(r): str(t) for r, t in (special_tokens or {}).items()})

        # what else transformers makes special: its other named tokens, model-specific
        # *_token entries and the additional/extra special tokens
        extra = [t for k, t in named.items() if k not in HF_ROLES]
        for source in (config, token_map):
            for key in ("additional_special_tokens", "extra_special_tokens"):
                values = source.get(key) or []
                values = values.values() if isinstance(values, Mapping) else values
                extra += [t for t in map(_token_content, values) if t is not None]
        text = _with_special_tokens(text, [t for t in dict.fromkeys(extra) if t not in roles.values()])

        if chat_template is None and (directory / HF_CHAT_TEMPLATE_FILE).is_file():
            chat_template = (directory / HF_CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
        if chat_template is None:
            chat_template = _default_template(config.get("chat_template"))
        if config.get("clean_up_tokenization_spaces") and json.loads(text)["model"].get("type") != "BPE":
            warnings.warn(f"{directory / HF_CONFIG_FILE} sets clean_up_tokenization_spaces, which HFTokenizer.decode "
                          "does not apply: decoded text may keep spaces before punctuation that transformers "
                          "removes", stacklevel=2)
        if config.get("split_special_tokens"):
            warnings.warn(f"{directory / HF_CONFIG_FILE} sets split_special_tokens (special tokens in text encoded "
                          "as text); HFTokenizer.encode matches them as tokens", stacklevel=2)
        return cls(text, roles, chat_template)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json, which
        `transformers.AutoTokenizer.from_pretrained(directory)` reads as a
        PreTrainedTokenizerFast with the same ids, bos/eos/unk/pad tokens and chat template
        (the other role tokens as additional special tokens). The chat template goes into
        tokenizer_config.json; a chat_template.jinja left in `directory`, which transformers
        would read instead, is removed."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / HF_CHAT_TEMPLATE_FILE).unlink(missing_ok=True)
        named = {hf_name: self._roles[role] for hf_name, role in HF_ROLES.items() if role in self._roles}
        additional = [t for t in dict.fromkeys(self._roles.values()) if t not in named.values()]
        token_map = {**named, "additional_special_tokens": additional}
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **token_map,
            "clean_up_tokenization_spaces": False,
            ROLES_KEY: dict(self._roles),
        }
        if self._chat_template is not None:
            config["chat_template"] = self._chat_template
        atomic_write_bytes(directory / TOKENIZER_JSON, self._json.encode("utf-8"))
        atomic_write_bytes(directory / HF_SPECIAL_TOKENS_MAP_FILE, _json_bytes(token_map))
        atomic_write_bytes(directory / HF_CONFIG_FILE, _json_bytes(config))
        return directory

    def __repr__(self) -> str:
        template = "none" if self._chat_template is None else f"{len(self._chat_template)} chars"
        return f"HFTokenizer(vocab_size={self.vocab_size}, roles={sorted(self._roles)}, chat_template={template})"


def _from_dict(d: dict[str, Any]) -> HFTokenizer:
    return HFTokenizer.from_dict(d)


def dense_vocabulary(vocab: Mapping[str, int]) -> list[str]:
    """The tokens of a token -> id map in id order; the ids must be 0 .. V-1, each once."""
    by_id: dict[int, list[str]] = {}
    for token, i in vocab.items():
        by_id.setdefault(int(i), []).append(token)
    shared = {i: tokens for i, tokens in by_id.items() if len(tokens) > 1}
    if shared:
        i = min(shared)
        raise ValueError(f"token ids must be 0 .. V-1, one token each: id {i} has {len(shared[i])} tokens "
                         f"{shared[i][:5]} ({len(shared)} such ids)")
    top = max(by_id, default=-1)
    if len(by_id) != top + 1:
        gaps, start = [], None
        for i in range(top + 2):
            if i not in by_id and start is None:
                start = i
            elif i in by_id and start is not None:
                gaps.append(f"{start}" if start == i - 1 else f"{start}..{i - 1}")
                start = None
        raise ValueError(f"token ids must be dense, 0 .. V-1: {len(by_id)} tokens with ids up to {top}, "
                         f"no token for id(s) {', '.join(gaps[:10])}{' ...' if len(gaps) > 10 else ''}")
    return [by_id[i][0] for i in range(top + 1)]


# --- reading transformers' files -----------------------------------------------------------


def _read_json_object(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not JSON: {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: not a JSON object")
    return value


def _token_content(value: Any) -> str | None:
    """A token as transformers' files write it: a string or an AddedToken dict {"content": ...}."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _default_template(value: Any) -> str | None:
    """tokenizer_config.json's chat_template: a string, or [{"name", "template"}] (the "default")."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        templates = {t.get("name"): t.get("template") for t in value if isinstance(t, Mapping)}
        return templates.get("default")
    raise ValueError(f"chat_template must be a string or a list of named templates, got {type(value).__name__}")


def _with_special_tokens(tokenizer_json: str, tokens: Sequence[str]) -> str:
    """`tokenizer_json` with `tokens` as special added tokens (unchanged if they all are)."""
    backend = tokenizers.Tokenizer.from_str(tokenizer_json)
    special = {t.content for t in backend.get_added_tokens_decoder().values() if t.special}
    todo = [t for t in tokens if t not in special]
    if not todo:
        return tokenizer_json
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in todo])
    return backend.to_str()


def _convert_sentencepiece(directory: Path) -> str:
    """tokenizer.json text of a directory with only a sentencepiece tokenizer.model, by
    transformers' conversion (transformers is not a dependency: only this needs it)."""
    hint = (f"{directory} has a sentencepiece {HF_SENTENCEPIECE_FILE} but no {TOKENIZER_JSON}: save it with "
            f"{TOKENIZER_JSON} once (transformers: AutoTokenizer.from_pretrained(dir).save_pretrained(dir))")
    try:
        import transformers
    except ImportError:
        raise ValueError(f"{hint}, or install transformers to convert it here") from None
    converted = transformers.AutoTokenizer.from_pretrained(str(directory))
    backend = getattr(converted, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{hint}: transformers could not convert it to a fast tokenizer")
    return backend.to_str()


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
