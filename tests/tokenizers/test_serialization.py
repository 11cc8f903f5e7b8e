"""Every tokenizer survives to_dict / torch.load(weights_only=True) / hydra / save+load."""

import io

import hydra.utils
import pytest
import torch
from fixtures import TEXT_CORPUS

from speechlm.tokenizers import (
    CharTokenizer,
    SentencePieceTokenizer,
    WordTokenizer,
    load_tokenizer,
    tokenizer_from_dict,
)

CORPUS = TEXT_CORPUS + [
    # words YAML would turn into bools, nulls or numbers if written unquoted
    "no yes null 1 true ~ # : '",
]
SYMBOLS = ["[noise]", "<laugh>"]
PROBES = CORPUS + ["unseen wörds zebra"]

BUILDERS = {
    "char": lambda: CharTokenizer.train(CORPUS, SYMBOLS),
    "word": lambda: WordTokenizer.train(CORPUS),
    "bpe": lambda: SentencePieceTokenizer.train(CORPUS, 45, "bpe", SYMBOLS),
    "unigram": lambda: SentencePieceTokenizer.train(CORPUS, 45, "unigram", SYMBOLS),
    "bpe_token_list": lambda: with_own_token_list(SentencePieceTokenizer.train(CORPUS, 45, "bpe", SYMBOLS)),
}


def with_own_token_list(tok):
    """The same model with its pieces listed in another order (mapped by text, not id)."""
    tokens = tok.tokens
    return SentencePieceTokenizer(tok.to_dict()["model"], tok.model_type, [*tokens[:2], *tokens[-2:1:-1], tokens[-1]])


@pytest.fixture(scope="module", params=list(BUILDERS))
def tok(request):
    return BUILDERS[request.param]()


def assert_same(a, b):
    assert type(a) is type(b)
    assert a.to_dict() == b.to_dict()
    assert a.tokens == b.tokens
    assert a.encode_batch(PROBES) == b.encode_batch(PROBES)
    assert [a.tokenize(t) for t in PROBES] == [b.tokenize(t) for t in PROBES]


def assert_primitive(value):
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str)
            assert_primitive(v)
    elif isinstance(value, list):
        for v in value:
            assert_primitive(v)
    else:
        assert type(value) in (str, int, float, bool, bytes), type(value)


def test_dict_is_primitive_and_names_the_class(tok):
    d = tok.to_dict()
    assert_primitive(d)
    assert d["_target_"] == f"{type(tok).__module__}.{type(tok).__name__}"


def test_dict_round_trip(tok):
    assert_same(tokenizer_from_dict(tok.to_dict()), tok)


def test_hydra_instantiate_round_trip(tok):
    assert_same(hydra.utils.instantiate(tok.to_dict()), tok)


def test_checkpoint_round_trip_with_weights_only(tok):
    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(2)}, "tokenizer": tok.to_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    assert_same(tokenizer_from_dict(checkpoint["tokenizer"]), tok)


def test_save_load_directory(tok, tmp_path):
    out = tmp_path / "tok"
    tok.save(out)
    tok.save(out)  # overwriting an existing directory is fine
    expected = {"tokens.txt", "tokenizer.yaml"}
    if isinstance(tok, SentencePieceTokenizer):
        expected.add(f"{tok.model_type}.model")
        assert (out / f"{tok.model_type}.model").read_bytes() == tok.to_dict()["model"]
    assert {p.name for p in out.iterdir()} == expected  # no temp files left behind
    assert (out / "tokens.txt").read_text(encoding="utf-8").splitlines() == tok.tokens
    assert "!!binary" not in (out / "tokenizer.yaml").read_text(encoding="utf-8")
    assert_same(load_tokenizer(out), tok)


def test_load_notices_an_edited_token_list(tok, tmp_path):
    tok.save(tmp_path)
    tokens = tok.tokens
    tokens[2], tokens[3] = tokens[3], tokens[2]
    (tmp_path / "tokens.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    with pytest.raises(ValueError, match="does not match"):
        load_tokenizer(tmp_path)


def test_from_dict_refuses_non_tokenizers():
    with pytest.raises(TypeError):
        tokenizer_from_dict({"_target_": "collections.OrderedDict"})


def test_token_list_layout_is_checked():
    with pytest.raises(ValueError, match="must start with"):
        WordTokenizer(["<unk>", "<blank>", "a", "<sos/eos>"])
    with pytest.raises(ValueError, match="duplicate"):
        WordTokenizer(["<blank>", "<unk>", "a", "a", "<sos/eos>"])
