"""Tokenizers name their special tokens by role: the ESPnet layout by default (ids and
serialised form as before), any other layout (an LLM's) by `special_tokens`."""
from __future__ import annotations

import pytest

from speechlm.tokenizers import CharTokenizer, WordTokenizer, tokenizer_from_dict
from speechlm.tokenizers.base import load_tokenizer

LLM_STYLE = ["<pad>", "<s>", "</s>", "<unk>", "a", "b", "c", "<space>"]
ROLES = {"pad": "<pad>", "sos": "<s>", "eos": "</s>", "unk": "<unk>"}


def test_espnet_layout_is_the_default_and_serialises_as_before():
    tok = WordTokenizer.train(["one two", "two three"])
    assert tok.special_ids == {"blank": 0, "unk": 1, "sos": tok.vocab_size - 1, "eos": tok.vocab_size - 1}
    assert (tok.blank_id, tok.unk_id, tok.sos_id, tok.eos_id) == (0, 1, tok.vocab_size - 1, tok.vocab_size - 1)
    assert tok.to_dict() == {"_target_": "speechlm.tokenizers.word.WordTokenizer", "tokens": tok.tokens}


def test_another_layout_by_role(tmp_path):
    tok = CharTokenizer(LLM_STYLE, special_tokens=ROLES)
    assert tok.special_ids == {"pad": 0, "sos": 1, "eos": 2, "unk": 3}
    assert (tok.sos_id, tok.eos_id, tok.unk_id) == (1, 2, 3)
    with pytest.raises(KeyError, match="no 'blank' token"):
        tok.blank_id  # noqa: B018 - a model that needs a CTC blank cannot use this one
    assert tok.encode("ab ca") == [4, 5, 7, 6, 4]
    assert tok.encode("<s>a") == [3, 3, 3, 4]  # spelled-out specials are characters here
    assert tok.decode([1, 4, 0, 5, 2]) == "ab"  # sos, pad and eos left out
    again = tokenizer_from_dict(tok.to_dict())
    assert again.special_ids == tok.special_ids and again.tokens == tok.tokens
    loaded = load_tokenizer(tok.save(tmp_path / "tok"))
    assert loaded.special_ids == tok.special_ids


def test_control_tokens_in_text_become_unk():
    tok = WordTokenizer(LLM_STYLE, special_tokens=ROLES)
    assert tok.encode("a </s> b <pad> <unk>") == [4, 3, 5, 3, 3]


def test_bad_special_tokens_are_refused():
    with pytest.raises(ValueError, match="not in the token list"):
        WordTokenizer(LLM_STYLE, special_tokens={**ROLES, "blank": "<blank>"})
    with pytest.raises(ValueError, match="needs an 'unk'"):
        WordTokenizer(LLM_STYLE, special_tokens={"sos": "<s>"})
    with pytest.raises(ValueError, match="ESPnet's layout"):
        WordTokenizer(LLM_STYLE)
