"""CharTokenizer: ESPnet-style characters, `<space>`, whole non-linguistic symbols."""

import pytest
import torch
from fixtures import TEXT_CORPUS as CORPUS

from speechlm.tokenizers import CharTokenizer
from speechlm.tokenizers.base import normalize_whitespace

SYMBOLS = ["[noise]", "<laugh>"]


@pytest.fixture(scope="module")
def tok():
    return CharTokenizer.train(CORPUS, non_linguistic_symbols=SYMBOLS)


@pytest.mark.parametrize("text", CORPUS + ["  one   seven\tthree  ", "[noise][noise] <laugh>"])
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == normalize_whitespace(text)


def test_special_ids(tok):
    assert tok.tokens[tok.blank_id] == "<blank>" and tok.blank_id == 0
    assert tok.tokens[tok.unk_id] == "<unk>" and tok.unk_id == 1
    assert tok.sos_id == tok.eos_id == tok.vocab_size - 1 == len(tok.tokens) - 1
    assert tok.tokens[-1] == "<sos/eos>"


def test_vocabulary_is_sorted_and_independent_of_line_order(tok):
    real = tok.tokens[2:-1]
    assert real == sorted(real)
    assert CharTokenizer.train(reversed(CORPUS), SYMBOLS).tokens == tok.tokens
    assert {"<space>", *SYMBOLS} <= set(real)


def test_vocabulary_of_tiny_corpus():
    tok = CharTokenizer.train(["b a", "[noise] c"], ["[noise]"])
    assert tok.tokens == ["<blank>", "<unk>", "<space>", "[noise]", "a", "b", "c", "<sos/eos>"]


def test_symbols_stay_whole_and_space_is_a_token(tok):
    assert tok.tokenize("[noise] hi <laugh>") == [
        "[noise]", "<space>", "h", "i", "<space>", "<laugh>",
    ]


def test_longest_symbol_wins():
    tok = CharTokenizer.train(["x"], ["<la", "<laugh>"])
    assert tok.tokenize("<laugh><la") == ["<laugh>", "<la"]


def test_unseen_character_is_unk(tok):
    ids = tok.encode("zé")
    assert ids == [tok.token_to_id("z"), tok.unk_id]
    assert tok.decode(ids) == "z<unk>"


def test_encode_never_gives_blank_or_eos(tok):
    for text in CORPUS + ["<blank> <sos/eos> ☃"]:
        assert all(tok.blank_id < i < tok.eos_id for i in tok.encode(text))


def test_decode_skips_blank_and_eos(tok):
    a, b = tok.token_to_id("a"), tok.token_to_id("b")
    assert tok.decode([tok.sos_id, tok.blank_id, a, tok.blank_id, b, tok.eos_id]) == "ab"
    assert tok.decode(torch.tensor([a, 0, b])) == "ab"
    with pytest.raises(IndexError):
        tok.decode([tok.vocab_size])


def test_batch(tok):
    assert tok.encode_batch(CORPUS) == [tok.encode(t) for t in CORPUS]
    assert tok.decode_batch(tok.encode_batch(CORPUS)) == CORPUS


@pytest.mark.parametrize("bad", ["<unk>", "<space>", "<sos/eos>", "", "a b"])
def test_bad_symbols_rejected(bad):
    with pytest.raises(ValueError):
        CharTokenizer.train(["a"], [bad])
