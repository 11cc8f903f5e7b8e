"""A whole ESPnet hybrid CTC/attention model against ours built from its converted weights:
the same loss, CTC loss, attention loss and accuracy on the same padded batch (eval mode),
for the recipe's weights and for the CTC-only, attention-only and intermediate-CTC variants."""
from __future__ import annotations

import pytest
import torch

from espnet2.asr.ctc import CTC as EspnetCTC
from espnet2.asr.decoder.transformer_decoder import TransformerDecoder as EspnetDecoder
from espnet2.asr.encoder.conformer_encoder import ConformerEncoder as EspnetConformer
from espnet2.asr.espnet_model import ESPnetASRModel

from speechlm.decoders.transformer import TransformerDecoder
from speechlm.encoders.conformer import ConformerEncoder
from speechlm.interop.espnet_asr import espnet_asr_state_dict_to_ours, ours_to_espnet_asr_state_dict
from speechlm.models.ctc_attention import CTCAttentionModel

FEAT_DIM, V, D = 40, 17, 64
ENCODER = dict(output_size=D, attention_heads=4, linear_units=128, num_blocks=2, macaron_style=True,
               rel_pos_type="latest", input_layer="conv2d")
DECODER = dict(attention_heads=4, linear_units=128, num_blocks=2)
TOKEN_LIST = ["<blank>", "<unk>", *[f"t{i}" for i in range(V - 3)], "<sos/eos>"]


def build_pair(ctc_weight=0.3, lsm_weight=0.1, interctc_weight=0.0, interctc_layer_idx=(), **model_conf):
    torch.manual_seed(0)
    ref = ESPnetASRModel(
        vocab_size=V, token_list=TOKEN_LIST, frontend=None, specaug=None, normalize=None, preencoder=None,
        encoder=EspnetConformer(FEAT_DIM, **ENCODER, interctc_layer_idx=list(interctc_layer_idx)),
        postencoder=None, decoder=EspnetDecoder(V, D, **DECODER), ctc=EspnetCTC(V, D), joint_network=None,
        ctc_weight=ctc_weight, lsm_weight=lsm_weight, interctc_weight=interctc_weight,
        report_cer=False, report_wer=False, **model_conf,
    ).eval()
    with torch.no_grad():  # norms away from (1, 0): a swapped norm must not pass unnoticed
        g = torch.Generator().manual_seed(1)
        for m in ref.modules():
            if isinstance(m, (torch.nn.LayerNorm, torch.nn.BatchNorm1d)):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    ours = CTCAttentionModel(
        V, ConformerEncoder(FEAT_DIM, **ENCODER), TransformerDecoder(V, D, **DECODER),
        ctc_weight=ctc_weight, lsm_weight=lsm_weight, interctc_weight=interctc_weight,
        interctc_layer_idx=interctc_layer_idx, **model_conf,
    ).eval()
    ours.load_state_dict(espnet_asr_state_dict_to_ours(ref.state_dict()), strict=True)
    return ref, ours


def batch(seed=0):
    """Features (B, T, F) zero past each length, tokens padded with -1."""
    g = torch.Generator().manual_seed(seed)
    feat_lens = torch.tensor([83, 70, 41])
    feats = torch.randn(3, 83, FEAT_DIM, generator=g)
    feats = feats.masked_fill((torch.arange(83)[None, :] >= feat_lens[:, None])[..., None], 0.0)
    token_lens = torch.tensor([6, 9, 3])
    tokens = torch.randint(2, V - 1, (3, 9), generator=g)
    tokens = tokens.masked_fill(torch.arange(9)[None, :] >= token_lens[:, None], -1)
    return {"audio": feats, "audio_lens": feat_lens, "tokens": tokens, "token_lens": token_lens}


def compare(ref, ours, keys):
    b = batch()
    with torch.no_grad():
        _, stats, _ = ref(b["audio"].clone(), b["audio_lens"].clone(), b["tokens"].clone(), b["token_lens"].clone())
        out = ours(b)
    for key in keys:
        got, expected = float(out[key]), float(stats[key])  # ESPnet's are (1,) tensors or floats
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-5), key
    return out, stats


def test_recipe_weights_match_espnet():
    ref, ours = build_pair()
    compare(ref, ours, ["loss", "loss_ctc", "loss_att", "acc"])


def test_ctc_only_matches_espnet():
    ref, ours = build_pair(ctc_weight=1.0)
    assert ours.decoder is None and ref.decoder is None
    out, _ = compare(ref, ours, ["loss", "loss_ctc"])
    assert "loss_att" not in out and "acc" not in out


def test_attention_only_matches_espnet():
    ref, ours = build_pair(ctc_weight=0.0)
    assert ours.ctc is None and ref.ctc is None
    compare(ref, ours, ["loss", "loss_att", "acc"])


def test_length_normalized_loss_matches_espnet():
    ref, ours = build_pair(length_normalized_loss=True)
    compare(ref, ours, ["loss", "loss_ctc", "loss_att", "acc"])


def test_intermediate_ctc_matches_espnet():
    ref, ours = build_pair(interctc_weight=0.4, interctc_layer_idx=(1,))
    compare(ref, ours, ["loss", "loss_ctc", "loss_att", "acc", "loss_interctc_layer1"])


def test_state_dict_round_trip():
    ref, ours = build_pair()
    back = ours_to_espnet_asr_state_dict(ours.state_dict())
    expected = ref.state_dict()
    assert back.keys() == expected.keys()
    for k, v in expected.items():
        torch.testing.assert_close(back[k], v, rtol=0, atol=0)


def test_unknown_keys_are_refused():
    ref, _ = build_pair()
    sd = dict(ref.state_dict(), **{"joint_network.lin.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="joint_network"):
        espnet_asr_state_dict_to_ours(sd)


def test_experiment_dir_loads_with_global_mvn(tmp_path):
    """config.yaml + model .pth as ESPnet writes them (global_mvn normalisation, interctc
    layers in encoder_conf, the recipe's model_conf): same losses as the ESPnet model."""
    import numpy as np
    import yaml

    from espnet2.layers.global_mvn import GlobalMVN

    from speechlm.interop.espnet_asr import load_espnet_asr

    g = np.random.default_rng(0)
    stats = tmp_path / "feats_stats.npz"
    count = 1000
    mean, std = g.normal(size=FEAT_DIM), 0.5 + g.random(FEAT_DIM)
    np.savez(stats, count=count, sum=mean * count, sum_square=(std**2 + mean**2) * count)
    encoder_conf = dict(ENCODER, interctc_layer_idx=[1], use_flash_attn=False)
    decoder_conf = dict(DECODER, dropout_rate=0.1, self_attention_dropout_rate=0.1, use_flash_attn=False)
    model_conf = dict(ctc_weight=0.3, lsm_weight=0.1, length_normalized_loss=False, interctc_weight=0.2,
                      report_cer=False, report_wer=False)
    torch.manual_seed(0)
    ref = ESPnetASRModel(
        vocab_size=V, token_list=TOKEN_LIST, frontend=None, specaug=None,
        normalize=GlobalMVN(str(stats)), preencoder=None, encoder=EspnetConformer(FEAT_DIM, **encoder_conf),
        postencoder=None, decoder=EspnetDecoder(V, D, **decoder_conf), ctc=EspnetCTC(V, D), joint_network=None,
        **model_conf,
    ).eval()
    config = dict(token_list=TOKEN_LIST, input_size=FEAT_DIM, frontend=None, specaug=None,
                  normalize="global_mvn", normalize_conf=dict(stats_file=str(stats)),
                  encoder="conformer", encoder_conf=encoder_conf, decoder="transformer",
                  decoder_conf=decoder_conf, ctc_conf=dict(dropout_rate=0.0, ctc_type="builtin", reduce=True),
                  model_conf=model_conf)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save(ref.state_dict(), tmp_path / "valid.acc.ave.pth")
    ours, tokens = load_espnet_asr(tmp_path / "config.yaml", tmp_path / "valid.acc.ave.pth")
    assert tokens == TOKEN_LIST and not ours.training
    compare(ref, ours, ["loss", "loss_ctc", "loss_att", "acc", "loss_interctc_layer1"])


def test_unsupported_espnet_options_are_refused():
    from speechlm.interop.espnet_asr import espnet_decoder_kwargs

    with pytest.raises(ValueError, match="concat_after"):
        espnet_decoder_kwargs({"concat_after": True})
    with pytest.raises(ValueError, match="input_layer"):
        espnet_decoder_kwargs({"input_layer": "linear"})
    kwargs, dropped = espnet_decoder_kwargs({"num_blocks": 3, "use_flash_attn": True, "concat_after": False})
    assert kwargs == {"num_blocks": 3} and set(dropped) == {"use_flash_attn", "concat_after"}
