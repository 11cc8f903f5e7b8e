"""WordTokenizer: frequency-ordered words, `<unk>` for the rest."""

import pytest
from fixtures import TEXT_CORPUS as CORPUS

from speechlm.tokenizers import WordTokenizer
from speechlm.tokenizers.base import normalize_whitespace


@pytest.fixture(scope="module")
def tok():
    return WordTokenizer.train(CORPUS)


@pytest.mark.parametrize("text", CORPUS + ["  one   seven\tthree  "])
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == normalize_whitespace(text)


def test_special_ids(tok):
    assert tok.tokens[:2] == ["<blank>", "<unk>"] and tok.tokens[-1] == "<sos/eos>"
    assert (tok.blank_id, tok.unk_id) == (0, 1)
    assert tok.sos_id == tok.eos_id == tok.vocab_size - 1


def test_order_is_frequency_then_alphabetical():
    tok = WordTokenizer.train(["b a c", "c a", "d"])
    assert tok.tokens == ["<blank>", "<unk>", "a", "c", "b", "d", "<sos/eos>"]


def test_min_count_and_max_vocab():
    lines = ["a a a b b c", "d"]
    assert WordTokenizer.train(lines, min_count=2).tokens[2:-1] == ["a", "b"]
    assert WordTokenizer.train(lines, max_vocab=3).tokens[2:-1] == ["a", "b", "c"]
    assert WordTokenizer.train(lines, max_vocab=0).vocab_size == 3


def test_unseen_word_is_unk(tok):
    ids = tok.encode("one zebra three")
    assert ids == [tok.token_to_id("one"), tok.unk_id, tok.token_to_id("three")]
    assert tok.decode(ids) == "one <unk> three"


def test_special_token_text_never_becomes_blank_or_eos():
    tok = WordTokenizer.train(["a <blank> <sos/eos> <unk>"])
    assert tok.tokens == ["<blank>", "<unk>", "a", "<sos/eos>"]
    assert tok.encode("<blank> a <sos/eos>") == [tok.unk_id, 2, tok.unk_id]


def test_decode_skips_blank_and_eos(tok):
    one = tok.token_to_id("one")
    assert tok.decode([0, one, 0, 0, one, tok.eos_id]) == "one one"
