"""SentencePieceTokenizer: parity with sentencepiece itself (ids + 1, same pieces), and with
ESPnet for a given token list."""

import pytest
import sentencepiece as spm
from fixtures import TEXT_CORPUS as CORPUS

from speechlm.tokenizers import SentencePieceTokenizer
from speechlm.tokenizers.sentencepiece import sentencepiece_model_type

SYMBOLS = ["[noise]", "<laugh>"]
VOCAB_SIZE = 40  # this corpus needs >= 38 and allows <= 55 (unigram) / 220 (bpe)


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def tok(request):
    return SentencePieceTokenizer.train(CORPUS, VOCAB_SIZE, request.param, SYMBOLS)


@pytest.fixture(scope="module")
def peer(tok):
    """A plain sentencepiece processor on the same model bytes."""
    return spm.SentencePieceProcessor(model_proto=tok.to_dict()["model"])


@pytest.mark.parametrize("text", CORPUS)
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_special_ids(tok):
    assert tok.vocab_size == VOCAB_SIZE + 2
    assert tok.tokens[:2] == ["<blank>", "<unk>"] and tok.tokens[-1] == "<sos/eos>"
    assert tok.sos_id == tok.eos_id == tok.vocab_size - 1
    # user-defined symbols come right after <unk>, in the order given
    assert tok.tokens[2:4] == SYMBOLS


@pytest.mark.parametrize("text", CORPUS + ["unseen wörds 42 [noise]"])
def test_ids_are_sentencepiece_ids_plus_one(tok, peer, text):
    assert tok.encode(text) == [i + 1 for i in peer.encode(text)]
    assert tok.tokenize(text) == peer.encode(text, out_type=str)
    assert tok.encode_batch([text, text]) == [tok.encode(text)] * 2


def test_token_list_is_sentencepiece_pieces(tok, peer):
    assert tok.tokens[1:-1] == [peer.id_to_piece(i) for i in range(peer.get_piece_size())]


def test_same_as_file_based_training(tok, tmp_path):
    """Training in memory gives the model `spm_train`-style training from a file gives."""
    (tmp_path / "text").write_text("".join(line + "\n" for line in CORPUS))
    spm.SentencePieceTrainer.train(
        input=str(tmp_path / "text"), model_prefix=str(tmp_path / "m"),
        vocab_size=VOCAB_SIZE, model_type=tok.model_type, character_coverage=1.0,
        user_defined_symbols=SYMBOLS, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
        input_sentence_size=100_000_000, num_threads=1, minloglevel=2,
    )  # fmt: skip
    peer = spm.SentencePieceProcessor(model_file=str(tmp_path / "m.model"))
    assert tok.tokens[1:-1] == [peer.id_to_piece(i) for i in range(peer.get_piece_size())]
    for text in CORPUS:
        assert tok.encode(text) == [i + 1 for i in peer.encode(text)]


def test_model_type_matches_the_model(tok):
    model_pb2 = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
    proto = model_pb2.ModelProto()
    proto.ParseFromString(tok.to_dict()["model"])
    assert model_pb2.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type).lower() == (
        tok.model_type
    )
    assert sentencepiece_model_type(tok.to_dict()["model"]) == tok.model_type


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_espnet_token_list_maps_pieces_as_espnet(model_type, tmp_path):
    """A model trained as ESPnet's asr.sh trains it (sentencepiece's defaults: <unk> 0,
    <s> 1, </s> 2) with asr.sh's token_list: ESPnet's ids and text, as its
    SentencepiecesTokenizer + TokenIDConverter give them."""
    import io

    from espnet2.text.sentencepiece_tokenizer import SentencepiecesTokenizer
    from espnet2.text.token_id_converter import TokenIDConverter

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=45,
                                   model_type=model_type, minloglevel=2)
    (tmp_path / "bpe.model").write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    tokens = ["<blank>", "<unk>", *[sp.id_to_piece(i) for i in range(3, 45)], "<sos/eos>"]
    tok = SentencePieceTokenizer(model.getvalue(), sentencepiece_model_type(model.getvalue()), tokens)
    assert tok.model_type == model_type and tok.tokens == tokens
    peer, converter = SentencepiecesTokenizer(tmp_path / "bpe.model"), TokenIDConverter(tokens)
    for text in CORPUS + ["unseen wörds 42 [noise]"]:
        ids = converter.tokens2ids(peer.text2tokens(text))
        assert tok.encode(text) == ids and tok.tokenize(text) == peer.text2tokens(text)
        assert tok.decode(ids) == peer.tokens2text(converter.ids2tokens(ids))
    with pytest.raises(ValueError, match="1 tokens of the token list are not pieces"):
        SentencePieceTokenizer(model.getvalue(), model_type, [*tokens[:-1], "zzz", "<sos/eos>"])


def test_training_is_deterministic(tok):
    again = SentencePieceTokenizer.train(CORPUS, VOCAB_SIZE, tok.model_type, SYMBOLS)
    assert again.to_dict() == tok.to_dict()


def test_unseen_character_is_unk(tok):
    ids = tok.encode("é")
    assert tok.unk_id in ids
    assert "<unk>" in tok.decode(ids)


def test_decode_skips_blank_and_eos(tok):
    ids = tok.encode("one seven three")
    noisy = [tok.sos_id, tok.blank_id, *ids[:1], tok.blank_id, *ids[1:], tok.eos_id]
    assert tok.decode(noisy) == "one seven three"


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_vocab_size_errors_are_plain(model_type):
    with pytest.raises(ValueError, match=r"vocab_size=1000 is too large .* at most \d+"):
        SentencePieceTokenizer.train(CORPUS, 1000, model_type, SYMBOLS)
    with pytest.raises(ValueError, match=r"vocab_size=5 is too small .* at least 38"):
        SentencePieceTokenizer.train(CORPUS, 5, model_type, SYMBOLS)
    with pytest.raises(ValueError, match="no text"):
        SentencePieceTokenizer.train([], 40, model_type)


def test_soft_vocab_limit_allows_fewer_pieces():
    tok = SentencePieceTokenizer.train(CORPUS, 1000, "unigram", hard_vocab_limit=False)
    assert tok.vocab_size < 1000 + 2
    assert tok.decode(tok.encode(CORPUS[0])) == CORPUS[0]


def test_rejects_models_whose_unk_is_not_zero():
    import io

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=45,
        bos_id=0, unk_id=1, eos_id=-1, minloglevel=2,
    )  # fmt: skip
    with pytest.raises(ValueError, match="unk_id=1"):
        SentencePieceTokenizer(model.getvalue(), "unigram")


def test_reserved_user_defined_symbols_rejected():
    with pytest.raises(ValueError, match="reserved"):
        SentencePieceTokenizer.train(CORPUS, VOCAB_SIZE, "bpe", ["<sos/eos>"])
