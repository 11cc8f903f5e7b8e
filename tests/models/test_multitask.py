"""The multitask model with an OWSM-style pairing: an E-Branchformer encoder, the multitask
decoder and an auxiliary CTC head, over our own sentencepiece vocabulary with Whisper's
special-token scheme; it learns a few utterances and the Whisper search decodes them."""
from __future__ import annotations

import pytest
import torch

from speechlm.data.collate import collate_audio
from speechlm.data.transforms import MultitaskTargets
from speechlm.decoders.multitask import MultitaskDecoder
from speechlm.encoders.e_branchformer import EBranchformerEncoder
from speechlm.features.fbank import Fbank
from speechlm.models.multitask import MultitaskModel
from speechlm.search.whisper import WhisperSearch
from speechlm.tokenizers.sentencepiece import MultitaskSentencePieceTokenizer

TEXTS = [("en", "one two three"), ("de", "eins zwei drei"), ("en", "four five"), ("de", "vier fünf")]


def test_owsm_style_model_learns_and_decodes():
    torch.manual_seed(0)
    tok = MultitaskSentencePieceTokenizer.train([t for _, t in TEXTS] * 20, vocab_size=30, model_type="unigram",
                                                hard_vocab_limit=False, languages=["en", "de"])
    ids = tok.special_ids
    encoder = EBranchformerEncoder(80, output_size=32, attention_heads=2, cgmlp_linear_units=64, linear_units=64,
                                   num_blocks=2, input_layer="conv2d")
    model = MultitaskModel(tok.vocab_size, encoder, MultitaskDecoder(tok.vocab_size, 32, 2, 1), frontend=Fbank(),
                           ctc_weight=0.3, blank_id=ids["blank"])
    targets = MultitaskTargets(tokenizer=tok, ctc=True)
    # each "utterance" a distinct noise, so the encoder output tells them apart
    items = [targets({"id": f"u{k}", "audio": torch.randn(12000 + 2000 * k) * 0.1, "text": text, "lang": lang})
             for k, (lang, text) in enumerate(TEXTS)]
    batch = collate_audio(items)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(120):
        out = model(batch)
        first = first or out["loss"].item()
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    assert {"loss_att", "loss_ctc", "acc"} <= set(out)
    assert out["loss"].item() < 0.2 * first
    model.eval()
    with torch.no_grad():
        enc = model.encode(batch["audio"], batch["audio_lens"])
        results = WhisperSearch(tok, beam_size=3).decode(model, enc)
    assert [r.language for r in results] == [lang for lang, _ in TEXTS]  # detected
    assert [r.text for r in results] == [text for _, text in TEXTS]
    # OWSM's joint CTC/attention decoding after the same initial tokens: the same texts; and the
    # CTC head's scores are really used, in the decoder's token space: with two tokens' CTC
    # outputs swapped (a planted fault), Whisper's decoding is unchanged but the joint one is not
    langs = [lang for lang, _ in TEXTS]
    with torch.no_grad():
        joint = WhisperSearch(tok, beam_size=3, ctc_weight=0.3).decode(model, enc, languages=langs)
        assert [r.text for r in joint] == [text for _, text in TEXTS]
        a, b = results[0].tokens[0], results[2].tokens[0]  # the first tokens of "one ..." and "four ..."
        assert a != b
        for p in (model.ctc.ctc_lo.weight, model.ctc.ctc_lo.bias):
            p[[a, b]] = p[[b, a]].clone()
        assert [r.text for r in WhisperSearch(tok, beam_size=3).decode(model, enc)] == [t for _, t in TEXTS]
        joint = WhisperSearch(tok, beam_size=3, ctc_weight=0.9).decode(model, enc, languages=langs)
        assert joint[0].text != TEXTS[0][1] and joint[2].text != TEXTS[2][1]


def test_joint_ctc_decoding_options_are_checked():
    tok = MultitaskSentencePieceTokenizer.train([t for _, t in TEXTS] * 20, vocab_size=30, model_type="unigram",
                                                hard_vocab_limit=False, languages=["en", "de"])
    with pytest.raises(ValueError, match="transcribe without timestamps"):
        WhisperSearch(tok, task="translate", ctc_weight=0.3)
    with pytest.raises(ValueError, match="transcribe without timestamps"):
        WhisperSearch(tok, timestamps=True, ctc_weight=0.3)
    encoder = EBranchformerEncoder(80, output_size=16, attention_heads=2, cgmlp_linear_units=32, linear_units=32,
                                   num_blocks=1, input_layer="conv2d")
    model = MultitaskModel(tok.vocab_size, encoder, MultitaskDecoder(tok.vocab_size, 16, 2, 1), frontend=Fbank()).eval()
    with torch.no_grad():
        enc = model.encode(torch.randn(1, 8000), torch.tensor([8000]))
        with pytest.raises(ValueError, match="needs a model with a CTC head"):
            WhisperSearch(tok, language="en", ctc_weight=0.3).decode(model, enc)
