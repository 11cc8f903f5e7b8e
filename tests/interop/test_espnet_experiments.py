"""ESPnet experiments as espnet2 writes them (tests/interop/espnet_recipe.py), converted with
`python -m speechlm.bin.convert_espnet`: the converted model must give ESPnet's joint
CTC/attention beam-search n-best lists (beam 10, ctc_weight 0.3) on generated audio, and
`python -m speechlm.bin.transcribe` must print ESPnet `Speech2Text`'s text for every file.

The cases cover global_mvn and utterance_mvn (ASRTask's default, given by leaving normalize
out), 8 kHz and 16 kHz default frontends, Conformer (legacy and latest relative positions),
E-Branchformer and Transformer encoders, and char, word and bpe tokens. Their train confs
are the published recipes' shapes, shrunk to 2 blocks of d=64.
"""
from __future__ import annotations

import pytest
import torch

from espnet.nets.batch_beam_search import BatchBeamSearch
from espnet.nets.scorers.ctc import CTCPrefixScorer
from espnet.nets.scorers.length_bonus import LengthBonus
from espnet2.bin.asr_inference import Speech2Text

from interop.espnet_recipe import asr_train, read, sample_rate, write_audio
from speechlm.bin.convert_espnet import main as convert
from speechlm.bin.transcribe import main as transcribe
from speechlm.features import GlobalCMVN, UtteranceMVN
from speechlm.search.joint_beam import joint_beam_search
from speechlm.train.pretrained import load_pretrained

BEAM, CTC_WEIGHT = 10, 0.3
DECODER = dict(decoder="transformer", decoder_conf=dict(
    attention_heads=4, linear_units=128, num_blocks=2, dropout_rate=0.1, positional_dropout_rate=0.1,
    self_attention_dropout_rate=0.1, src_attention_dropout_rate=0.1))
MODEL = dict(model_conf=dict(ctc_weight=0.3, lsm_weight=0.1, length_normalized_loss=False))
SPECAUG = dict(specaug="specaug", specaug_conf=dict(
    apply_time_warp=True, time_warp_window=5, time_warp_mode="bicubic", apply_freq_mask=True,
    freq_mask_width_range=[0, 27], num_freq_mask=2, apply_time_mask=True,
    time_mask_width_ratio_range=[0.0, 0.05], num_time_mask=5))
SIZE = dict(output_size=64, attention_heads=4, linear_units=128, num_blocks=2)
LS100_FRONTEND = dict(frontend_conf=dict(n_fft=512, win_length=400, hop_length=160))

# (conf/train_*.yaml, token_type, fs, normalize given by asr.sh)
CASES = {
    # egs2/aishell/asr1/conf/train_asr_conformer.yaml: no rel_pos_type (ESPnet's legacy),
    # no normalize (ASRTask's utterance_mvn), ESPnet's default STFT
    "conformer_legacy-char-8k-utterance_mvn": (dict(
        encoder="conformer", encoder_conf=dict(
            SIZE, dropout_rate=0.1, positional_dropout_rate=0.1, attention_dropout_rate=0.0, input_layer="conv2d",
            normalize_before=True, pos_enc_layer_type="rel_pos", selfattention_layer_type="rel_selfattn",
            activation_type="swish", macaron_style=True, use_cnn_module=True, cnn_module_kernel=15),
        **DECODER, **MODEL, **SPECAUG), "char", "8k", None),
    # the experiment of the bug report: Conformer, Transformer decoder, word tokens, 8 kHz,
    # ASRTask's default normalize, every option at ESPnet 202511's defaults
    "conformer-word-8k-utterance_mvn": (dict(
        encoder="conformer", encoder_conf=dict(SIZE), **DECODER), "word", "8k", None),
    # egs2/librispeech_100/asr1/conf/tuning/train_asr_conformer_lr2e-3_warmup15k_amp_nondeterministic.yaml
    "conformer-bpe-16k-global_mvn": (dict(
        encoder="conformer", encoder_conf=dict(
            SIZE, dropout_rate=0.1, positional_dropout_rate=0.1, attention_dropout_rate=0.1, input_layer="conv2d",
            normalize_before=True, macaron_style=True, rel_pos_type="latest", pos_enc_layer_type="rel_pos",
            selfattention_layer_type="rel_selfattn", activation_type="swish", use_cnn_module=True,
            cnn_module_kernel=31),
        **DECODER, **MODEL, **SPECAUG, **LS100_FRONTEND), "bpe", "16k", "global_mvn"),
    # egs2/librispeech_100/asr1/conf/tuning/train_asr_e_branchformer_size256_mlp1024_linear1024_e12_mactrue_edrop0.0_ddrop0.0.yaml,
    # with per-utterance mean and variance normalisation
    "e_branchformer-bpe-16k-utterance_mvn_vars": (dict(
        encoder="e_branchformer", encoder_conf=dict(
            SIZE, attention_layer_type="rel_selfattn", pos_enc_layer_type="rel_pos", rel_pos_type="latest",
            cgmlp_linear_units=128, cgmlp_conv_kernel=31, use_linear_after_conv=False, gate_activation="identity",
            dropout_rate=0.1, positional_dropout_rate=0.1, attention_dropout_rate=0.1, input_layer="conv2d",
            layer_drop_rate=0.0, use_ffn=True, macaron_ffn=True, merge_conv_kernel=31),
        normalize="utterance_mvn", normalize_conf=dict(norm_means=True, norm_vars=True),
        **DECODER, **MODEL, **SPECAUG, **LS100_FRONTEND), "bpe", "16k", None),
    # egs2/aishell/asr1/conf/tuning/train_asr_e_branchformer_e12_mlp1024_linear1024_mactrue_amp.yaml shape, words
    "e_branchformer-word-8k-global_mvn": (dict(
        encoder="e_branchformer", encoder_conf=dict(
            SIZE, cgmlp_linear_units=128, cgmlp_conv_kernel=15, use_linear_after_conv=False,
            gate_activation="identity", input_layer="conv2d", use_ffn=True, macaron_ffn=True, merge_conv_kernel=15),
        frontend_conf=dict(n_fft=256, hop_length=80), **DECODER, **MODEL), "word", "8k", "global_mvn"),
    # egs2/aishell/asr1/conf/train_asr_transformer.yaml shape
    "transformer-word-16k-global_mvn": (dict(
        encoder="transformer", encoder_conf=dict(
            SIZE, dropout_rate=0.1, positional_dropout_rate=0.1, attention_dropout_rate=0.0, input_layer="conv2d",
            normalize_before=True),
        **DECODER, **MODEL, **SPECAUG), "word", "16k", "global_mvn"),
    "transformer_conv2d6-char-8k-utterance_mvn": (dict(
        encoder="transformer", encoder_conf=dict(SIZE, input_layer="conv2d6"),
        **DECODER, **MODEL), "char", "8k", None),
}



def published(encoder: str, encoder_conf: dict, decoder_conf: dict | None, model_conf: dict) -> dict:
    """A published recipe's model sections (specaug left out: training only), with 2
    encoder blocks and 1 decoder block instead of 12-18 and 6 (intermediate layers moved
    into range), every other option as published."""
    encoder_conf = dict(encoder_conf, num_blocks=2)
    if "interctc_layer_idx" in encoder_conf:
        encoder_conf["interctc_layer_idx"] = [1]
    conf = dict(encoder=encoder, encoder_conf=encoder_conf, model_conf=model_conf)
    if decoder_conf is not None:
        conf.update(decoder="transformer", decoder_conf=dict(decoder_conf, num_blocks=1))
    return conf


CASES.update({
    # egs2/librispeech_100/asr1/conf/tuning/train_conformer_scctc.yaml: CTC only, self-conditioned
    "published-ls100_conformer_scctc-bpe": (published("conformer", dict(
        activation_type="swish", attention_dropout_rate=0.1, attention_heads=4, cnn_module_kernel=31,
        dropout_rate=0.1, input_layer="conv2d", interctc_layer_idx=[6, 12], interctc_use_conditioning=True,
        linear_units=1024, macaron_style=True, normalize_before=True, output_size=256, pos_enc_layer_type="rel_pos",
        positional_dropout_rate=0.1, rel_pos_type="latest", selfattention_layer_type="rel_selfattn",
        use_cnn_module=True), None,
        dict(ctc_weight=1.0, interctc_weight=0.66, length_normalized_loss=False, lsm_weight=0.1)),
        "bpe", "16k", "global_mvn"),
    # egs2/librispeech/asr1/conf/tuning/train_asr_conformer.yaml: x6 subsampling, legacy positions
    "published-librispeech_conformer_conv2d6-bpe": (published("conformer", dict(
        activation_type="swish", attention_dropout_rate=0.1, attention_heads=8, cnn_module_kernel=31,
        dropout_rate=0.1, input_layer="conv2d6", linear_units=2048, macaron_style=False, normalize_before=True,
        output_size=512, pos_enc_layer_type="rel_pos", positional_dropout_rate=0.1,
        selfattention_layer_type="rel_selfattn", use_cnn_module=True), dict(
        attention_heads=8, dropout_rate=0.1, linear_units=2048, positional_dropout_rate=0.1,
        self_attention_dropout_rate=0.1, src_attention_dropout_rate=0.1),
        dict(ctc_weight=0.3, length_normalized_loss=False, lsm_weight=0.1)), "bpe", "16k", "global_mvn"),
    # egs2/aishell/asr1/conf/tuning/train_asr_conformer.yaml (legacy positions, kernel 15)
    "published-aishell_conformer-char": (published("conformer", dict(
        activation_type="swish", attention_dropout_rate=0.0, attention_heads=4, cnn_module_kernel=15,
        dropout_rate=0.1, input_layer="conv2d", linear_units=2048, macaron_style=True, normalize_before=True,
        num_blocks=12, output_size=256, pos_enc_layer_type="rel_pos", positional_dropout_rate=0.1,
        selfattention_layer_type="rel_selfattn", use_cnn_module=True), dict(
        attention_heads=4, dropout_rate=0.1, linear_units=2048, positional_dropout_rate=0.1,
        self_attention_dropout_rate=0.0, src_attention_dropout_rate=0.0),
        dict(ctc_weight=0.3, length_normalized_loss=False, lsm_weight=0.1)), "char", "16k", "global_mvn"),
    # egs2/aishell/asr1/conf/tuning/train_asr_e_branchformer_e12_mlp1024_linear1024_mactrue_amp.yaml
    "published-aishell_e_branchformer-char": (published("e_branchformer", dict(
        attention_dropout_rate=0.1, attention_heads=4, attention_layer_type="rel_selfattn", cgmlp_conv_kernel=31,
        cgmlp_linear_units=1024, dropout_rate=0.1, gate_activation="identity", input_layer="conv2d",
        layer_drop_rate=0.0, linear_units=1024, macaron_ffn=True, merge_conv_kernel=31, output_size=256,
        pos_enc_layer_type="rel_pos", positional_dropout_rate=0.1, positionwise_layer_type="linear",
        rel_pos_type="latest", use_ffn=True, use_linear_after_conv=False), dict(
        attention_heads=4, dropout_rate=0.1, linear_units=2048, positional_dropout_rate=0.1,
        self_attention_dropout_rate=0.0, src_attention_dropout_rate=0.0),
        dict(ctc_weight=0.3, length_normalized_loss=False, lsm_weight=0.1)), "char", "16k", "global_mvn"),
})


def convert_case(tmp_path, case):
    train_conf, token_type, fs, normalize = CASES[case]
    ref, config = asr_train(tmp_path / "exp", train_conf, token_type, fs, normalize)
    exp = tmp_path / "exp"
    assert convert(["--config", str(exp / "config.yaml"), "--model", str(exp / "valid.acc.ave.pth"),
                    "--out", str(exp / "model.ckpt")]) == 0
    model, tokenizer, resolved = load_pretrained(exp / "model.ckpt")  # torch.load(weights_only=True)
    return ref, config, model, tokenizer, resolved


def espnet_nbest(ref, enc: torch.Tensor) -> list:
    """ESPnet's n-best for one utterance's encoder output (T, D), as asr_inference builds
    its BatchBeamSearch (no LM, penalty 0)."""
    v, ctc_weight = ref.vocab_size, CTC_WEIGHT if ref.decoder is not None else 1.0
    scorers = {"ctc": CTCPrefixScorer(ref.ctc, ref.eos), "length_bonus": LengthBonus(v)}
    if ref.decoder is not None:
        scorers["decoder"] = ref.decoder
    search = BatchBeamSearch(
        scorers=scorers, weights={"decoder": 1.0 - ctc_weight, "ctc": ctc_weight, "length_bonus": 0.0},
        beam_size=BEAM, vocab_size=v, sos=ref.sos, eos=ref.eos, token_list=None,
        pre_beam_score_key=None if ref.decoder is None else "full",
    ).eval()
    with torch.no_grad():
        return [h for h in search(x=enc, maxlenratio=0.0, minlenratio=0.0) if float(h.score) > -1e9]


def strip_eos(yseq: torch.Tensor, eos: int) -> list[int]:
    """ESPnet's yseq without <sos> and the trailing <eos> (two when a hypothesis ended at
    maxlen: its own and the one ESPnet appends there)."""
    tokens = yseq.tolist()[1:]
    while tokens and tokens[-1] == eos:
        tokens.pop()
    return tokens


@pytest.mark.parametrize("case", list(CASES))
def test_converted_experiment_gives_espnets_beam_search(case, tmp_path):
    ref, config, model, tokenizer, resolved = convert_case(tmp_path, case)
    _, token_type, fs, normalize = CASES[case]
    # what espnet2 wrote, and what the conversion made of it
    assert config["ctc_conf"]["brctc_risk_strategy"] == "exp" and config["token_type"] == token_type
    assert resolved["frontend"]["sample_rate"] == sample_rate(fs)
    expected_norm = GlobalCMVN if normalize == "global_mvn" else UtteranceMVN
    assert isinstance(model.normalize, expected_norm)
    left_out = resolved["converted_from"]["left_out"]
    assert "ctc_conf.brctc_risk_strategy" in left_out and "encoder_conf.dropout_rate" not in left_out
    assert ("specaug.specaug" in left_out) == ("specaug" in CASES[case][0])

    tokens_out = 0
    for wav in write_audio(tmp_path / "test", (1.3, 0.7, 2.1), sample_rate(fs), seed=100):
        x = read(wav)[None]
        lengths = torch.tensor([x.shape[1]])
        with torch.no_grad():
            enc_ref, lens_ref = ref.encode(x, lengths)
            enc_ref = enc_ref[0] if isinstance(enc_ref, tuple) else enc_ref  # (output, intermediate)
            enc = model.encode(x, lengths)
            ctc = model.ctc.log_softmax(enc.output)
        assert enc.lengths.tolist() == lens_ref.tolist()
        torch.testing.assert_close(enc.output, enc_ref, rtol=0, atol=2e-5)
        expected = espnet_nbest(ref, enc_ref[0])
        got = joint_beam_search(model.decoder, ctc, enc.output, enc.lengths, model.sos, model.eos, beam_size=BEAM,
                                ctc_weight=CTC_WEIGHT if model.decoder is not None else 1.0, nbest=10**6,
                                blank=model.blank_id)[0]
        assert [h.tokens for h in got] == [strip_eos(h.yseq, ref.eos) for h in expected], wav.name
        for h, h_ref in zip(got, expected):
            assert h.score == pytest.approx(float(h_ref.score), rel=0, abs=1e-4)
        tokens_out += len(got[0].tokens)
    assert tokens_out >= 3  # the best hypotheses are not all empty


@pytest.mark.parametrize("case", ["conformer_legacy-char-8k-utterance_mvn", "e_branchformer-bpe-16k-utterance_mvn_vars",
                                  "transformer-word-16k-global_mvn"])
def test_transcribe_gives_speech2text_text(case, tmp_path, capsys):
    """Every file of a generated test set (0.4 to 3 s, decoded by us in batches) gets the
    text ESPnet's Speech2Text gives it (one file at a time, beam 10, ctc_weight 0.3)."""
    ref, config, model, tokenizer, resolved = convert_case(tmp_path, case)
    exp = tmp_path / "exp"
    seconds = (0.4, 1.7, 0.9, 3.0, 1.2, 2.4, 0.6, 1.5)
    wavs = write_audio(tmp_path / "test", seconds, sample_rate(CASES[case][2]), seed=200)
    speech2text = Speech2Text(asr_train_config=exp / "config.yaml", asr_model_file=exp / "valid.acc.ave.pth",
                              device="cpu", beam_size=BEAM, ctc_weight=CTC_WEIGHT, nbest=1)
    with torch.no_grad():
        expected = {str(w): speech2text(read(w).numpy())[0][0] for w in wavs}
    capsys.readouterr()
    assert transcribe(["--model", str(exp / "model.ckpt"), "--beam-size", str(BEAM), "--ctc-weight",
                       str(CTC_WEIGHT), *map(str, wavs)]) == 0
    got = dict(line.split("\t", 1) for line in capsys.readouterr().out.splitlines())
    assert got == expected
    assert sum(len(text.split()) for text in expected.values()) >= 4  # not all empty
