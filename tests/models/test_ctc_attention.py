"""CTCAttentionModel on its own: the Hydra config builds it, the loss falls when a tiny model
overfits a few utterances, and CTC greedy decoding then returns the targets."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from speechlm.decoders.transformer import TransformerDecoder
from speechlm.encoders.conformer import ConformerEncoder
from speechlm.models.build import build_model
from speechlm.models.ctc_attention import CTCAttentionModel

CONF = Path(__file__).resolve().parents[2] / "conf"
FEAT_DIM, V, D = 20, 9, 64
TINY_ENCODER = dict(output_size=D, attention_heads=4, linear_units=128, num_blocks=2, macaron_style=True,
                    input_layer="conv2d", dropout_rate=0.0, positional_dropout_rate=0.0, attention_dropout_rate=0.0)
TINY_DECODER = dict(attention_heads=4, linear_units=128, num_blocks=2, dropout_rate=0.0,
                    positional_dropout_rate=0.0)


def tiny_model(**kw) -> CTCAttentionModel:
    torch.manual_seed(0)
    return CTCAttentionModel(V, ConformerEncoder(FEAT_DIM, **TINY_ENCODER), TransformerDecoder(V, D, **TINY_DECODER), **kw)


def toy_batch():
    """4 utterances: each token id k in 2..7 is a 6-frame block of a fixed random pattern."""
    g = torch.Generator().manual_seed(0)
    patterns = torch.randn(V, FEAT_DIM, generator=g) * 2
    seqs = [[2, 3, 4], [5, 6, 7, 2, 3], [4, 4, 6], [7, 5]]
    feats = [torch.cat([patterns[k].expand(6, -1) for k in s]) + 0.1 * torch.randn(6 * len(s), FEAT_DIM, generator=g)
             for s in seqs]
    audio_lens = torch.tensor([len(f) for f in feats])
    audio = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    token_lens = torch.tensor([len(s) for s in seqs])
    tokens = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs], batch_first=True, padding_value=-1)
    return {"audio": audio, "audio_lens": audio_lens, "tokens": tokens, "token_lens": token_lens}, seqs


def ctc_greedy(model, batch) -> list[list[int]]:
    enc, enc_lens, _ = model.encode(batch["audio"], batch["audio_lens"])
    best = model.ctc.argmax(enc)
    out = []
    for row, n in zip(best.tolist(), enc_lens.tolist()):
        hyp, prev = [], None
        for t in row[:n]:
            if t != prev and t != model.blank_id:
                hyp.append(t)
            prev = t
        out.append(hyp)
    return out


def test_loss_falls_and_ctc_greedy_recovers_the_targets():
    model = tiny_model()
    batch, seqs = toy_batch()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    first = None
    for step in range(100):
        out = model(batch)
        assert set(out) == {"loss", "loss_ctc", "loss_att", "acc"}
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = float(out["loss"].detach()) if first is None else first
    assert float(out["loss"]) < 0.1 * first
    model.eval()  # judged without dropout: the last training step's accuracy is noisy
    with torch.no_grad():
        assert float(model(batch)["acc"]) == 1.0
        assert ctc_greedy(model, batch) == seqs


def test_interctc_stats_and_ctc_only():
    batch, _ = toy_batch()
    model = tiny_model(interctc_weight=0.5, interctc_layer_idx=[1])
    out = model(batch)
    assert {"loss_interctc", "loss_interctc_layer1"} <= set(out)
    ctc_only = CTCAttentionModel(V, ConformerEncoder(FEAT_DIM, **TINY_ENCODER), None, ctc_weight=1.0)
    out = ctc_only(batch)
    assert set(out) == {"loss", "loss_ctc"} and out["loss"].requires_grad
    with pytest.raises(ValueError, match="decoder"):
        CTCAttentionModel(V, ConformerEncoder(FEAT_DIM, **TINY_ENCODER), None, ctc_weight=0.5)


def test_model_config_composes_with_encoder_and_decoder_groups():
    cfg = OmegaConf.create({
        "vocab_size": V,
        "special_ids": {"blank": 0, "unk": 1, "sos": V - 1, "eos": V - 1},
        "encoder": OmegaConf.load(CONF / "encoder" / "conformer.yaml"),
        "decoder": OmegaConf.load(CONF / "decoder" / "transformer.yaml"),
        "model": OmegaConf.load(CONF / "model" / "ctc_attention.yaml"),
    })
    cfg.encoder.update(input_size=FEAT_DIM, output_size=D, num_blocks=1, linear_units=64)
    cfg.decoder.update(num_blocks=1, linear_units=64)
    assert cfg.model.ctc_weight == 0.3 and cfg.model.lsm_weight == 0.1
    model = build_model(cfg.model, initialize=False).eval()
    assert isinstance(model, CTCAttentionModel) and model.decoder.embed.num_embeddings == V
    assert (model.blank_id, model.sos, model.eos) == (0, V - 1, V - 1)
    batch, _ = toy_batch()
    with torch.no_grad():
        out = model(batch)
    assert torch.isfinite(out["loss"])


def test_waveform_pipeline_trains_and_augments_only_in_training():
    """frontend (fbank) -> normalize (global CMVN) -> SpecAugment -> encoder, from a collated
    waveform batch; SpecAugment changes the loss in training mode only."""
    from speechlm.data.collate import collate_audio
    from speechlm.features import Fbank, GlobalCMVN, SpecAugment

    g = torch.Generator().manual_seed(0)
    items = [{"id": f"u{i}", "audio": 0.1 * torch.randn(n, generator=g), "tokens": toks}
             for i, (n, toks) in enumerate([(8000, [2, 3, 4]), (5600, [5, 6]), (3200, [7])])]
    batch = collate_audio(items)
    torch.manual_seed(0)
    model = CTCAttentionModel(
        V, ConformerEncoder(FEAT_DIM, **TINY_ENCODER), TransformerDecoder(V, D, **TINY_DECODER),
        frontend=Fbank(n_mels=FEAT_DIM), normalize=GlobalCMVN(torch.full((FEAT_DIM,), -5.0), torch.full((FEAT_DIM,), 2.0)),
        specaug=SpecAugment(freq_mask_width=5, time_warp_window=0),
    )
    model.eval()
    with torch.no_grad():
        a, b = model(batch)["loss"], model(batch)["loss"]
    assert a == b  # eval: deterministic, no augmentation
    model.train()
    out = model(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["loss"] != a
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_decoder_memory_mask_may_be_none():
    model = tiny_model().eval()
    mem = torch.randn(2, 7, D)
    tok = torch.full((2,), V - 1)
    with torch.no_grad():
        a, state = model.decoder.step(tok, model.decoder.init_state(memory=mem))
        b, _ = model.decoder.step(tok, model.decoder.init_state(memory=mem, memory_mask=torch.ones(2, 1, 7, dtype=torch.bool)))
        c, _ = model.decoder.step(tok, state)
    torch.testing.assert_close(a, b)
    assert c.shape == (2, V)
