"""A whole ESPnet hybrid CTC/attention model against ours built from its converted weights:
the same loss, CTC loss, attention loss and accuracy on the same padded batch (eval mode),
for the recipe's weights and for the CTC-only, attention-only and intermediate-CTC variants;
and an ESPnet experiment dir decoded end to end: same encoder output, CTC and decoder scores,
and n-best lists of the joint CTC/attention beam search as ESPnet's BatchBeamSearch."""
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


def test_self_conditioned_ctc_matches_espnet():
    """interctc_use_conditioning (LibriSpeech-100's train_conformer_scctc.yaml): ESPnet's
    encoder adds Linear(softmax(CTC(layer output))) after each intermediate layer; its
    Linear is `encoder.conditioning_layer` there, `conditioning_layer` here."""
    torch.manual_seed(0)
    ref = ESPnetASRModel(
        vocab_size=V, token_list=TOKEN_LIST, frontend=None, specaug=None, normalize=None, preencoder=None,
        encoder=EspnetConformer(FEAT_DIM, **ENCODER, interctc_layer_idx=[1], interctc_use_conditioning=True),
        postencoder=None, decoder=EspnetDecoder(V, D, **DECODER), ctc=EspnetCTC(V, D), joint_network=None,
        ctc_weight=0.3, lsm_weight=0.1, interctc_weight=0.5, report_cer=False, report_wer=False,
    ).eval()
    with torch.no_grad():  # a conditioning that matters
        ref.encoder.conditioning_layer.weight.mul_(20.0)
    ours = CTCAttentionModel(V, ConformerEncoder(FEAT_DIM, **ENCODER), TransformerDecoder(V, D, **DECODER),
                             ctc_weight=0.3, lsm_weight=0.1, interctc_weight=0.5, interctc_layer_idx=[1],
                             interctc_use_conditioning=True).eval()
    sd = espnet_asr_state_dict_to_ours(ref.state_dict())
    assert "conditioning_layer.weight" in sd
    ours.load_state_dict(sd, strict=True)
    compare(ref, ours, ["loss", "loss_ctc", "loss_att", "acc", "loss_interctc_layer1"])
    back = ours_to_espnet_asr_state_dict(ours.state_dict())
    assert back.keys() == ref.state_dict().keys()
    # planted fault: without the conditioning the final CTC loss is another
    b = batch()
    with torch.no_grad():
        _, stats, _ = ref(b["audio"].clone(), b["audio_lens"].clone(), b["tokens"].clone(), b["token_lens"].clone())
        ours.conditioning_layer.weight.zero_()
        ours.conditioning_layer.bias.zero_()
        unconditioned = float(ours(b)["loss_ctc"])
    assert unconditioned != pytest.approx(float(stats["loss_ctc"]), rel=1e-3)


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


# --- an ESPnet experiment, end to end: raw audio -> encoder -> CTC, decoder, beam search ---

FRONTEND_CONF = dict(fs=16000, n_fft=512, win_length=400, hop_length=160, n_mels=FEAT_DIM)
SAMPLE_RATE = 16000
EOS = V - 1


def speech_batch(directory, seconds=(1.3, 0.9, 0.6), seed=0):
    """A padded batch of voiced-sounding 16 kHz wav files (tests/fixtures.py's `write_wav`),
    read back as float32: (B, T) audio and (B,) lengths in samples."""
    import soundfile as sf

    from fixtures import write_wav

    waves = [torch.from_numpy(sf.read(write_wav(directory / f"utt{seed + i}.wav", sec, SAMPLE_RATE, seed=seed + i),
                                      dtype="float32")[0])
             for i, sec in enumerate(seconds)]
    lengths = torch.tensor([len(w) for w in waves])
    audio = torch.zeros(len(waves), int(lengths.max()))
    for b, w in enumerate(waves):
        audio[b, : len(w)] = w
    return audio, lengths


def espnet_experiment(tmp_path, token_list=TOKEN_LIST, **config_extra):
    """An ESPnet experiment dir as asr.sh leaves it: config.yaml (frontend: default with
    ESPnet's usual STFT settings, normalize: global_mvn with feats_stats.npz collected from
    the data, conformer encoder, transformer decoder) and valid.acc.ave.pth. Returns the
    ESPnet model (eval mode) and our model loaded from that dir with `load_espnet_asr`.
    `token_list` (V tokens) and `config_extra` (e.g. token_type, bpemodel) go into config.yaml.

    The weights are random, except that the decoder's output layer is biased toward <eos>
    and away from <blank>, and the CTC head toward blank, so that beam search ends
    hypotheses after a few tokens, as a trained model's would (see bench/decode.py)."""
    import numpy as np
    import yaml

    from espnet2.asr.frontend.default import DefaultFrontend
    from espnet2.layers.global_mvn import GlobalMVN

    from speechlm.features import LogMelFbank
    from speechlm.interop.espnet_asr import load_espnet_asr

    frontend = DefaultFrontend(**FRONTEND_CONF).eval()
    audio, audio_lens = speech_batch(tmp_path / "train")
    with torch.no_grad():  # collect_stats: sums over the real frames of the "training data"
        feats, feat_lens = frontend(audio, audio_lens)
    real = torch.cat([feats[b, :n] for b, n in enumerate(feat_lens.tolist())]).double().numpy()
    stats = tmp_path / "feats_stats.npz"
    np.savez(stats, count=len(real), sum=real.sum(0), sum_square=(real**2).sum(0))

    encoder_conf = dict(ENCODER, use_flash_attn=False)
    decoder_conf = dict(DECODER, dropout_rate=0.1, use_flash_attn=False)
    model_conf = dict(ctc_weight=0.3, lsm_weight=0.1, length_normalized_loss=False)
    torch.manual_seed(0)
    assert len(token_list) == V
    ref = ESPnetASRModel(
        vocab_size=V, token_list=token_list, frontend=frontend, specaug=None,
        normalize=GlobalMVN(str(stats)), preencoder=None, encoder=EspnetConformer(FEAT_DIM, **encoder_conf),
        postencoder=None, decoder=EspnetDecoder(V, D, **decoder_conf), ctc=EspnetCTC(V, D), joint_network=None,
        **model_conf,
    ).eval()
    with torch.no_grad():
        ref.decoder.output_layer.bias[EOS] += 1.0
        ref.decoder.output_layer.bias[0] -= 5.0
        ref.ctc.ctc_lo.bias[0] += 2.0
    config = dict(token_list=token_list, input_size=None, frontend="default", frontend_conf=FRONTEND_CONF,
                  specaug=None, normalize="global_mvn", normalize_conf=dict(stats_file=str(stats)),
                  encoder="conformer", encoder_conf=encoder_conf, decoder="transformer",
                  decoder_conf=decoder_conf, ctc_conf=dict(dropout_rate=0.0, ctc_type="builtin", reduce=True),
                  model_conf=model_conf, **config_extra)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save(ref.state_dict(), tmp_path / "valid.acc.ave.pth")
    ours, tokens = load_espnet_asr(tmp_path / "config.yaml", tmp_path / "valid.acc.ave.pth")
    assert tokens == token_list and isinstance(ours.frontend, LogMelFbank)
    return ref, ours


def strip_eos(yseq):
    """ESPnet's yseq without <sos> and trailing <eos>."""
    tokens = yseq.tolist()[1:]
    while tokens and tokens[-1] == EOS:
        tokens.pop()
    return tokens


def test_experiment_dir_decodes_like_espnet(tmp_path):
    """An ESPnet experiment dir (frontend: default, normalize: global_mvn) loaded with
    `load_espnet_asr`, both models given the same raw-audio batch:

    (a) the same encoder output and CTC log-posteriors, (b) the same decoder scores
    (teacher-forced forward, and step-by-step `step` with its state), and (c) the
    same n-best lists from our `joint_beam_search` over our encoder output as from ESPnet's
    `BatchBeamSearch` (built as asr_inference.py builds it, one utterance at a time) over
    ESPnet's, for beam 4 and ctc_weight 0.3, 0.0 and 1.0.

    Every step is ours: the frontend (`frontend: default` -> `LogMelFbank`), global_mvn,
    encoder, CTC, decoder and search.
    """
    from espnet.nets.batch_beam_search import BatchBeamSearch
    from espnet.nets.scorers.ctc import CTCPrefixScorer
    from espnet.nets.scorers.length_bonus import LengthBonus

    from speechlm.search.joint_beam import joint_beam_search

    ref, ours = espnet_experiment(tmp_path)
    audio, audio_lens = speech_batch(tmp_path / "test", seed=100)  # not the audio the stats came from
    with torch.no_grad():
        enc_ref, lens_ref = ref.encode(audio, audio_lens)
        enc = ours.encode(audio, audio_lens)
        ctc_ref, ctc_ours = ref.ctc.log_softmax(enc_ref), ours.ctc.log_softmax(enc.output)

    # (a) encoder output and CTC log-posteriors on every real frame
    assert enc.lengths.tolist() == lens_ref.tolist() and len(set(lens_ref.tolist())) == 3
    for b, n in enumerate(lens_ref.tolist()):
        torch.testing.assert_close(enc.output[b, :n], enc_ref[b, :n], rtol=0, atol=1e-5)
        torch.testing.assert_close(ctc_ours[b, :n], ctc_ref[b, :n], rtol=0, atol=1e-5)

    # (b) decoder scores: teacher-forced on a padded batch, then incremental steps
    g = torch.Generator().manual_seed(3)
    ys_lens = torch.tensor([6, 4, 2])
    ys_in = torch.randint(2, V - 1, (3, 6), generator=g)
    ys_in[:, 0] = EOS  # <sos>
    ys_in = ys_in.masked_fill(torch.arange(6)[None, :] >= ys_lens[:, None], EOS)
    with torch.no_grad():
        logits_ref, _ = ref.decoder(enc_ref, lens_ref, ys_in, ys_lens)
        logits = ours.decoder(enc.output, enc.lengths, ys_in, ys_lens)
    for b, n in enumerate(ys_lens.tolist()):
        torch.testing.assert_close(logits.log_softmax(-1)[b, :n], logits_ref.log_softmax(-1)[b, :n],
                                   rtol=0, atol=1e-5)
    memory_mask = (torch.arange(enc.output.shape[1])[None, :] < enc.lengths[:, None]).unsqueeze(1)
    state = ours.decoder.init_state(memory=enc.output, memory_mask=memory_mask)
    for step in range(1, 5):
        with torch.no_grad():
            logp, state = ours.decoder.step(ys_in[:, step - 1], state)
            for b, n in enumerate(lens_ref.tolist()):  # ESPnet: one utterance, unpadded, no cache
                logp_ref, _ = ref.decoder.batch_score(ys_in[b : b + 1, :step], [None], enc_ref[b : b + 1, :n])
                torch.testing.assert_close(logp[b], logp_ref[0], rtol=0, atol=1e-5)

    # (c) n-best lists of the joint CTC/attention beam search
    tokens_out = 0
    for ctc_weight in (0.3, 0.0, 1.0):
        search = BatchBeamSearch(
            scorers={"decoder": ref.decoder, "ctc": CTCPrefixScorer(ref.ctc, EOS), "length_bonus": LengthBonus(V)},
            weights={"decoder": 1.0 - ctc_weight, "ctc": ctc_weight, "length_bonus": 0.0},
            beam_size=4, vocab_size=V, sos=EOS, eos=EOS, token_list=None,
            pre_beam_score_key=None if ctc_weight == 1.0 else "full",
        ).eval()
        with torch.no_grad():
            expected = [search(x=enc_ref[b, :n], maxlenratio=0.0, minlenratio=0.0)
                        for b, n in enumerate(lens_ref.tolist())]
        got = joint_beam_search(ours.decoder, ctc_ours, enc.output, enc.lengths, ours.sos, ours.eos,
                                beam_size=4, ctc_weight=ctc_weight, maxlenratio=0.0, minlenratio=0.0,
                                nbest=10**6, blank=ours.blank_id)
        for b, (ref_hyps, hyps) in enumerate(zip(expected, got)):
            ref_hyps = [h for h in ref_hyps if float(h.score) > -1e9]  # ESPnet's hopeless ones (logzero)
            assert hyps, f"ctc_weight {ctc_weight}, utterance {b}: no hypothesis"
            assert [h.tokens for h in hyps] == [strip_eos(h.yseq) for h in ref_hyps], \
                f"ctc_weight {ctc_weight}, utterance {b}"
            for h, h_ref in zip(hyps, ref_hyps):
                assert h.score == pytest.approx(float(h_ref.score), rel=0, abs=1e-4)
            tokens_out += sum(len(h.tokens) for h in hyps)
            assert hyps[0].tokens, f"ctc_weight {ctc_weight}, utterance {b}: empty best hypothesis"
    assert tokens_out >= 30  # the n-best lists are not trivially short
