"""`WhisperTokenizer` against openai-whisper's own tokenizer (the peer), id for id."""

import io
import pickle

import hydra.utils
import pytest
import torch
from whisper import tokenizer as whisper_tokenizer

from speechlm.tokenizers import WhisperTokenizer, load_tokenizer, tokenizer_from_dict
from speechlm.tokenizers.multitask import WHISPER_LANGUAGES, multitask_special_tokens
from speechlm.tokenizers.whisper import (
    EMPTY_TOKEN,
    bytes_to_unicode,
    whisper_vocab_file,
)

TEXTS = [
    "Hello, world! It's 3:45 pm -- isn't it?",
    " leading space and  double  spaces\tand a tab\nand a newline",
    "Guten Tag! Größe, Übung, Straße: 1.234,56 €.",
    "C'est l'été à Paris ; « bonjour » — d'accord ?",
    "¿Dónde está el baño? ¡Mañana, señor!",
    "Perché è così? Così è (se vi pare).",
    "我们今天去北京，好吗？2024年。",
    "東京は晴れです。カタカナとひらがな！",
    "Привет, как дела? Ёлка — 100%.",
    "مرحبا بالعالم! كيف حالك؟ ١٢٣",
    "emoji 🎉🚀👍🏽 and ♪♪ music ♪ [DAVID] (laughs) <<ok>>",
    "numbers 0 7 42 1000000 3.14159 -17 1e10 #hashtag @user",
    "",
]
SPECIAL_ROLES = {  # our role -> whisper.tokenizer.Tokenizer attribute
    "sot": "sot", "eot": "eot", "sos": "sot", "eos": "eot", "translate": "translate",
    "transcribe": "transcribe", "sot_lm": "sot_lm", "sot_prev": "sot_prev", "no_speech": "no_speech",
    "no_timestamps": "no_timestamps", "timestamp_begin": "timestamp_begin",
}
# (encoding, num_languages) -> whisper.tokenizer.get_tokenizer's arguments
VARIANTS = {("multilingual", 99): (True, 99), ("multilingual", 100): (True, 100), ("gpt2", 99): (False, 99)}


@pytest.fixture(scope="module", params=list(VARIANTS), ids=lambda v: f"{v[0]}-{v[1]}")
def pair(request):
    encoding, num_languages = request.param
    multilingual, n = VARIANTS[request.param]
    return WhisperTokenizer(encoding, num_languages), whisper_tokenizer.get_tokenizer(multilingual, num_languages=n)


def test_encode_decode_are_whispers(pair):
    ours, theirs = pair
    assert ours.vocab_size == theirs.encoding.n_vocab
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == theirs.encode(text), text
        assert ours.decode(ids) == theirs.decode(ids) == text
        assert ours.decode(torch.tensor(ids, dtype=torch.long)) == text
    assert ours.encode_batch(TEXTS) == [theirs.encode(t) for t in TEXTS]
    # a token cut in the middle of a UTF-8 character decodes as whisper's does (U+FFFD)
    broken = ours.encode("🎉")[:1]
    assert ours.decode(broken) == theirs.decode(broken)


def test_special_ids_are_whispers(pair):
    ours, theirs = pair
    ids = ours.special_ids
    for role, attribute in SPECIAL_ROLES.items():
        assert ids[role] == getattr(theirs, attribute), role
    assert ours.timestamp_id(0.0) == theirs.timestamp_begin
    assert ours.timestamp_id(30.0) == theirs.special_tokens["<|30.00|>"] == ours.vocab_size - 1
    assert ours.timestamp_id(1.08) == theirs.special_tokens["<|1.08|>"]
    for token, token_id in theirs.special_tokens.items():
        assert ours.id_to_token(token_id) == token
    codes = WHISPER_LANGUAGES[: theirs.num_languages]
    assert ours.languages == list(codes) == list(whisper_tokenizer.LANGUAGES)[: theirs.num_languages]
    for code in codes:
        assert ids[f"lang_{code}"] == ours.language_id(code) == theirs.to_language_token(code)
    assert "speaker_change" not in ids and "blank" not in ids and "unk" not in ids


def test_sot_sequences_are_whispers(pair):
    ours, theirs = pair
    for language in ("en", "de", "fr", "es", "it", "zh", "ja", "ru", "ar", None):
        for task in ("transcribe", "translate", None):
            expected = whisper_tokenizer.Tokenizer(theirs.encoding, theirs.num_languages, language, task).sot_sequence
            assert ours.sot_sequence(language, task) == list(expected), (language, task)
    with pytest.raises(ValueError, match="task must be one of"):
        ours.sot_sequence("en", "summarize")
    with pytest.raises(KeyError, match="no language token <|xx|>"):
        ours.sot_sequence("xx", "transcribe")


def test_non_speech_ids_are_whispers(pair):
    ours, theirs = pair
    assert ours.non_speech_ids() == list(theirs.non_speech_tokens)


def test_decode_with_timestamps_is_whispers(pair):
    ours, theirs = pair
    text = ours.encode(" Hello there.") + ours.encode(" 你好")
    ids = [*ours.sot_sequence("en", "transcribe"), ours.timestamp_id(0.0), *text[:3], ours.timestamp_id(1.0),
           ours.timestamp_id(1.0), *text[3:], ours.timestamp_id(2.5), ours.special_ids["eot"]]
    rendered = ours.decode_with_timestamps(ids)
    assert rendered == theirs.decode_with_timestamps(ids)
    assert "<|1.00|>" in rendered and "<|2.50|>" in rendered and rendered.startswith("<|startoftranscript|>")
    assert ours.decode(ids) == " Hello there. 你好"  # every special skipped
    with pytest.raises(IndexError, match="out of range"):
        ours.decode_with_timestamps([ours.vocab_size])


def test_tokens_are_gpt2_byte_strings(pair):
    ours, theirs = pair
    to_unicode = bytes_to_unicode()
    assert len(set(to_unicode)) == 256 and not any(c.isspace() for c in to_unicode)
    tokens = ours.tokens
    eot = ours.special_ids["eot"]
    for i in (0, 11, 220, 198, 1000, 50255, eot - 1):
        expected = "".join(to_unicode[b] for b in theirs.encoding.decode_single_token_bytes(i))
        assert tokens[i] == (expected or EMPTY_TOKEN)
    assert ours.tokenize(" Hello world") == ["ĠHello", "Ġworld"]
    assert [ours.token_to_id(t) for t in ours.tokenize(TEXTS[2])] == ours.encode(TEXTS[2])
    assert ours.token_to_id("<|de|>") == theirs.to_language_token("de")


def test_no_unk_token_raises_key_error():
    tok = WhisperTokenizer()
    with pytest.raises(KeyError, match="not in the vocabulary, and WhisperTokenizer has no 'unk'"):
        tok.token_to_id("not a token")
    with pytest.raises(KeyError, match="is a control token"):
        tok.token_to_id("<|endoftext|>")
    with pytest.raises(KeyError, match="no 'unk' token"):
        _ = tok.unk_id


def test_spelled_out_specials_are_plain_text():
    tok = WhisperTokenizer()
    theirs = whisper_tokenizer.get_tokenizer(True)
    text = "a <|endoftext|> b <|en|> <|0.00|>"
    assert tok.encode(text) == theirs.encoding.encode(text, disallowed_special=())
    assert max(tok.encode(text)) < tok.special_ids["eot"]
    assert tok.decode(tok.encode(text)) == text


def test_speaker_change_variant():
    plain, sc = WhisperTokenizer(), WhisperTokenizer(speaker_change=True)
    assert sc.vocab_size == plain.vocab_size + 1
    assert sc.tokens[:-1] == plain.tokens and sc.tokens[-1] == "<|sc|>"
    assert sc.special_ids == {**plain.special_ids, "speaker_change": plain.vocab_size}
    assert sc.encode_batch(TEXTS) == plain.encode_batch(TEXTS)
    ids = [plain.timestamp_id(0.0), *sc.encode(" hi"), sc.special_ids["speaker_change"], *sc.encode(" yo")]
    assert sc.decode(ids) == "hi <sc> yo"  # a speaker change is content (SOT): written " <sc> "
    assert sc.decode_with_timestamps(ids) == "<|0.00|> hi<|sc|> yo"


def test_special_tail_is_whispers_for_any_language_count():
    for n in (99, 100):
        encoding = whisper_tokenizer.get_encoding("multilingual", num_languages=n)
        expected = sorted(encoding.special_tokens_set, key=encoding.encode_single_token)
        tokens, roles = multitask_special_tokens(WHISPER_LANGUAGES[:n])
        assert tokens == expected
        assert set(roles.values()) <= set(tokens)
    tokens, roles = multitask_special_tokens(["en", "sw"], speaker_change=True)
    assert tokens[:6] == ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|sw|>", "<|translate|>", "<|transcribe|>"]
    assert len(tokens) == 2 + 2 + 6 + 1501 + 1 and tokens[-2:] == ["<|30.00|>", "<|sc|>"]
    with pytest.raises(ValueError, match="distinct codes"):
        multitask_special_tokens(["en", "en"])
    for clash in ("translate", "0.00", "sc", "endoftext"):
        with pytest.raises(ValueError, match="name other special tokens"):
            multitask_special_tokens(["en", clash], speaker_change=True)


@pytest.mark.parametrize("options", [{}, {"encoding": "gpt2"}, {"num_languages": 100, "speaker_change": True}])
def test_serialisation_round_trips(options, tmp_path):
    tok = WhisperTokenizer(**options)
    d = tok.to_dict()
    assert d == {"_target_": "speechlm.tokenizers.whisper.WhisperTokenizer", "encoding": "multilingual",
                 "num_languages": 99, "speaker_change": False, "vocab_file": None, **options}
    buffer = io.BytesIO()
    torch.save({"tokenizer": d}, buffer)
    buffer.seek(0)
    copies = [tokenizer_from_dict(d), hydra.utils.instantiate(d), pickle.loads(pickle.dumps(tok)),
              tokenizer_from_dict(torch.load(buffer, weights_only=True)["tokenizer"])]
    tok.save(tmp_path / "tok")
    assert (tmp_path / "tok" / "tokens.txt").read_text(encoding="utf-8").splitlines() == tok.tokens
    copies.append(load_tokenizer(tmp_path / "tok"))
    assert len(pickle.dumps(tok)) < 1000  # the options, not the vocabulary
    for copy in copies:
        assert type(copy) is WhisperTokenizer and copy.to_dict() == d
        assert copy.tokens == tok.tokens and copy.special_ids == tok.special_ids
        assert copy.encode_batch(TEXTS) == tok.encode_batch(TEXTS)


def test_vocab_file_option_and_missing_package(monkeypatch, tmp_path):
    path = whisper_vocab_file("gpt2")
    assert path.name == "gpt2.tiktoken"
    explicit = WhisperTokenizer("gpt2", vocab_file=str(path))
    assert explicit.encode_batch(TEXTS) == WhisperTokenizer("gpt2").encode_batch(TEXTS)
    assert explicit.to_dict()["vocab_file"] == str(path)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install speechlm\[whisper\]"):
        WhisperTokenizer()
    with pytest.raises(ValueError, match="encoding must be one of"):
        WhisperTokenizer("cl100k")
    with pytest.raises(ValueError, match="num_languages"):
        WhisperTokenizer(num_languages=101, vocab_file=str(path))
