"""Sentencepiece vocabularies with Whisper's special tokens (`MultitaskSentencePieceTokenizer`)."""

import io

import hydra.utils
import pytest
import torch
from fixtures import TEXT_CORPUS

from speechlm.bin.train_tokenizer import main as train_tokenizer
from speechlm.tokenizers import (
    BLANK,
    UNK,
    MultitaskSentencePieceTokenizer,
    SentencePieceTokenizer,
    load_tokenizer,
    tokenizer_from_dict,
)
from speechlm.tokenizers.multitask import multitask_special_tokens

CORPUS = TEXT_CORPUS + ["guten tag, wie geht's?", "c'est l'été (vraiment) #oui", "[laughs] ♪ la la ♪"]
LANGUAGES = ["en", "de", "fr"]
VOCAB = 60


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def tok(request):
    return MultitaskSentencePieceTokenizer.train(CORPUS, VOCAB, request.param, ["[noise]"], languages=LANGUAGES)


def test_layout(tok):
    plain = SentencePieceTokenizer.train(CORPUS, VOCAB, tok.model_type, ["[noise]"])
    tail, roles = multitask_special_tokens(LANGUAGES, speaker_change=True)
    assert tok.to_dict()["model"] == plain.to_dict()["model"]  # the same training
    assert tok.tokens == [*plain.tokens[:-1], *tail]  # <sos/eos> replaced by the tail
    assert tok.tokens[:2] == [BLANK, UNK] and tok.tokens[-1] == "<|sc|>"
    assert tok.vocab_size == VOCAB + 1 + len(LANGUAGES) + 1510  # <blank>, specials
    eot = VOCAB + 1
    ids = tok.special_ids
    assert ids == {"blank": 0, "unk": 1, **{role: tok.tokens.index(t) for role, t in roles.items()}}
    assert (ids["eot"], ids["eos"], ids["sot"], ids["sos"]) == (eot, eot, eot + 1, eot + 1)
    assert ids["lang_fr"] == eot + 4 and ids["timestamp_begin"] == eot + 11 and ids["speaker_change"] == tok.vocab_size - 1
    assert tok.encode_batch(CORPUS) == plain.encode_batch(CORPUS)  # pieces keep their ids


def test_multitask_helpers(tok):
    ids = tok.special_ids
    assert tok.languages == LANGUAGES
    assert tok.sot_sequence("de", "translate") == [ids["sot"], ids["lang_de"], ids["translate"]]
    assert tok.sot_sequence() == [ids["sot"]]
    assert tok.timestamp_id(0.0) == ids["timestamp_begin"] and tok.timestamp_id(30.0) == ids["speaker_change"] - 1
    assert tok.timestamp_id(1.234) == ids["timestamp_begin"] + 62
    with pytest.raises(ValueError, match="outside"):
        tok.timestamp_id(30.02)
    with pytest.raises(KeyError, match="languages: en de fr"):
        tok.language_id("zh")


def test_decode_skips_every_special(tok):
    text = "hello, world! it's a test."
    content = tok.encode(text)
    assert tok.decode(content) == text
    ids = [*tok.sot_sequence("en", "transcribe"), tok.timestamp_id(0.0), 0, *content[:4], tok.timestamp_id(0.5),
           tok.special_ids["speaker_change"], *content[4:], tok.timestamp_id(1.0), tok.special_ids["eot"]]
    # the speaker change is content (serialized output training): written " <sc> "
    change = ids.index(tok.special_ids["speaker_change"])
    assert tok.decode(ids) == tok.decode(ids[:change]).strip() + " <sc> " + tok.decode(ids[change + 1:]).strip()
    ids.pop(change)
    assert tok.decode(ids) == text
    assert tok.decode(torch.tensor(ids)) == text
    ids.insert(change, tok.special_ids["speaker_change"])
    rendered = tok.decode_with_timestamps(ids)
    assert rendered.startswith("<|startoftranscript|><|en|><|transcribe|><|0.00|>")
    assert rendered.endswith("<|1.00|><|endoftext|>") and "<|0.50|><|sc|>" in rendered
    # a transcript that spells special tokens out gets pieces (or unk), never their ids
    assert max(tok.encode("<|en|> <|0.00|> <sos/eos>")) < tok.special_ids["eot"]


def test_non_speech_ids(tok):
    suppressed = tok.non_speech_ids()
    assert suppressed == sorted(set(suppressed))
    pieces = {tok.id_to_token(i) for i in suppressed}
    assert {"(", ")", "#", "♪", "[", "]"} <= pieces  # symbols of CORPUS, each a piece of its own
    assert not pieces & {"▁", "-", "'", ",", "?", "!", "."}  # word boundaries and punctuation are speech
    assert all(0 < i < tok.special_ids["eot"] for i in suppressed) and tok.unk_id not in suppressed


def test_serialisation_round_trips(tok, tmp_path):
    d = tok.to_dict()
    assert set(d) == {"_target_", "model", "model_type", "languages"} and d["languages"] == LANGUAGES
    buffer = io.BytesIO()
    torch.save({"tokenizer": d}, buffer)
    buffer.seek(0)
    tok.save(tmp_path / "tok")
    assert {p.name for p in (tmp_path / "tok").iterdir()} == {"tokens.txt", "tokenizer.yaml", f"{tok.model_type}.model"}
    copies = [tokenizer_from_dict(d), hydra.utils.instantiate(d), load_tokenizer(tmp_path / "tok"),
              tokenizer_from_dict(torch.load(buffer, weights_only=True)["tokenizer"])]
    for copy in copies:
        assert type(copy) is MultitaskSentencePieceTokenizer and copy.to_dict() == d
        assert copy.tokens == tok.tokens and copy.special_ids == tok.special_ids
        assert copy.encode_batch(CORPUS) == tok.encode_batch(CORPUS)


def test_reserved_symbols_are_refused():
    with pytest.raises(ValueError, match="reserved"):
        MultitaskSentencePieceTokenizer.train(CORPUS, VOCAB, user_defined_symbols=["<|en|>"], languages=LANGUAGES)
    with pytest.raises(ValueError, match="distinct codes"):
        MultitaskSentencePieceTokenizer.train(CORPUS, VOCAB, languages=["en", "en"])


def test_train_tokenizer_option(tmp_path, capsys):
    text = tmp_path / "text"
    text.write_text("".join(f"utt{i} {line}\n" for i, line in enumerate(CORPUS)), encoding="utf-8")
    out = tmp_path / "tok"
    argv = ["--text", str(text), "--type", "bpe", "--vocab-size", str(VOCAB), "--out", str(out)]
    assert train_tokenizer([*argv, "--multitask-languages", "en, de,fr"]) == 0
    tok = load_tokenizer(out)
    assert type(tok) is MultitaskSentencePieceTokenizer and tok.languages == LANGUAGES
    assert f"vocab_size {tok.vocab_size}" in capsys.readouterr().out
    assert train_tokenizer(argv) == 0  # without the option: ESPnet's layout, as before
    plain = load_tokenizer(out)
    assert type(plain) is SentencePieceTokenizer and plain.tokens[-1] == "<sos/eos>"
    with pytest.raises(SystemExit):
        train_tokenizer(["--text", str(text), "--type", "char", "--out", str(out), "--multitask-languages", "en"])
    assert "for --type bpe/unigram" in capsys.readouterr().err
