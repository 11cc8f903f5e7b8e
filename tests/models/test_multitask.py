"""The multitask model with an OWSM-style pairing: an E-Branchformer encoder, the multitask
decoder and an auxiliary CTC head, over our own sentencepiece vocabulary with Whisper's
special-token scheme; it learns a few utterances and the Whisper search decodes them."""
from __future__ import annotations

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
