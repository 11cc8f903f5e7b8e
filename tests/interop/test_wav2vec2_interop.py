"""Hugging Face and torchaudio wav2vec 2.0 / HuBERT / WavLM weights in our ConvFeatureEncoder +
Wav2Vec2Encoder / WavLMEncoder: small random models (norms, biases, weight-norm gains and
WavLM's bias table moved away from their initial values, so a wrong mapping cannot pass)
saved by the peer, loaded here, give the same CNN features and every layer's hidden states
(eval mode); written back, Wav2Vec2ForPreTraining loads them strictly and agrees; faults are
named."""
from __future__ import annotations

import pytest
import torch
from torchaudio.models import wav2vec2_model, wavlm_model
from transformers import (HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2ForPreTraining, Wav2Vec2Model,
                          WavLMConfig, WavLMModel)

from speechlm.encoders.wav2vec2 import ConvFeatureEncoder, Wav2Vec2Encoder
from speechlm.encoders.wavlm import WavLMEncoder
from speechlm.interop.hf_wav2vec2 import (hf_config_to_speechlm, hf_to_speechlm, load_hf, load_parts, save_hf,
                                          speechlm_to_hf)
from speechlm.interop.torchaudio_wav2vec2 import torchaudio_to_speechlm

TOL = 1e-4
CONV = [(32, 10, 5), (32, 3, 2), (32, 3, 2), (32, 2, 2)]  # 40x: 400 frames per second
SMALL = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
             conv_dim=[c[0] for c in CONV], conv_kernel=[c[1] for c in CONV], conv_stride=[c[2] for c in CONV],
             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
LENGTHS = [16000, 11200]  # 1.0 s and 0.7 s


@pytest.fixture(scope="module")
def audio() -> torch.Tensor:
    return 0.3 * torch.randn(2, max(LENGTHS), generator=torch.Generator().manual_seed(0))


def randomize(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Norm weights ~1 + N(0, 0.2), biases N(0, 0.1), weight-norm gains and WavLM's gates and
    bias table moved, so that any swapped or dropped tensor shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name and p.dim() == 1:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * noise)
            elif name.endswith("bias") or "masked_spec_embed" in name:
                p.copy_(0.1 * noise)
            elif "original0" in name or "gru_rel_pos_const" in name:
                p.mul_(1.0 + 0.3 * noise)
            elif "rel_attn_embed" in name:
                p.copy_(noise)  # HF's 0.02 init would hide a wrong bucket or head
    return model.eval()


def ours_per_layer(frontend, encoder, audio, lengths):
    """-> (raw CNN features, {layer: hidden states}, output), all (B, T', .)."""
    n = len(encoder.encoders)
    with torch.no_grad():
        raw, _ = frontend.extract(audio, lengths)
        feats, flens = frontend(audio, lengths)
        out = encoder(feats, flens, return_layers=tuple(range(n + 1)))
    return raw, out.intermediate, out.output, out.lengths


def row_of(ours, row: int):
    raw, layers, output, lengths = ours
    return raw[row:row + 1], {i: h[row:row + 1] for i, h in layers.items()}, output[row:row + 1], lengths[row:row + 1]


# --------------------------------------------------------------------------- Hugging Face
HF_CASES = {
    "wav2vec2-group-postln": (Wav2Vec2Config, Wav2Vec2Model, dict(feat_extract_norm="group")),
    "wav2vec2-layer-preln": (Wav2Vec2Config, Wav2Vec2Model,
                             dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)),
    "hubert": (HubertConfig, HubertModel, dict(feat_extract_norm="group")),
    "wavlm": (WavLMConfig, WavLMModel, dict(feat_extract_norm="group")),
    "wavlm-layer-preln": (WavLMConfig, WavLMModel, dict(feat_extract_norm="layer", do_stable_layer_norm=True)),
}


def hf_layers(hf, audio, attention_mask=None):
    """HF's (raw CNN features, {layer i < N: hidden_states[i]}, last_hidden_state); 0: the
    first layer's input. (transformers 5 gives hidden_states[N] before a pre-LN model's final
    norm, 4.x after it, as we do: the last layer is compared with last_hidden_state.)"""
    with torch.no_grad():
        raw = hf.feature_extractor(audio).transpose(1, 2)
        out = hf(audio, attention_mask=attention_mask, output_hidden_states=True)
    n = hf.config.num_hidden_layers
    return raw, {i: out.hidden_states[i] for i in range(n)}, out.last_hidden_state


def compare(ours, theirs, lengths_frames, worst: dict):
    """Every real frame of each layer within TOL; the worst difference of each kind kept."""
    raw, layers, output, _ = ours
    t_raw, t_layers, t_output = theirs
    pairs = [("cnn", raw, t_raw), ("output", output, t_output)]
    pairs += [(f"layer{i}", layers[i], t_layers[i]) for i in t_layers]
    pairs += [("last layer", layers[max(layers)], t_output)]  # pre-LN: after the final norm
    for name, a, b in pairs:
        for row, n in enumerate(lengths_frames):
            diff = (a[row, :n] - b[row, :n]).abs().max().item()
            worst[name] = max(worst.get(name, 0.0), diff)
            assert diff < TOL, (name, row, diff)


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")  # inside HF's WavLM
@pytest.mark.parametrize("case", list(HF_CASES))
def test_hugging_face_models_load_with_equal_hidden_states(case, audio, tmp_path):
    config_class, model_class, extra = HF_CASES[case]
    torch.manual_seed(0)
    hf = randomize(model_class(config_class(**SMALL, **extra)))
    hf.save_pretrained(tmp_path)
    frontend, encoder, extras = load_parts(*load_hf(tmp_path), source=str(tmp_path))
    assert isinstance(encoder, WavLMEncoder) == case.startswith("wavlm")
    assert torch.equal(extras["mask_emb"], hf.masked_spec_embed)
    worst = {}
    for row, n in enumerate(LENGTHS):  # each utterance alone
        x = audio[row:row + 1, :n]
        ours = ours_per_layer(frontend, encoder, x, torch.tensor([n]))
        compare(ours, hf_layers(hf, x), ours[3].tolist(), worst)
    # a padded batch: each row of ours equals HF on that utterance alone, whatever the CNN norm
    # (our GroupNorm counts a row's own frames); HF given the attention mask matches for layer norm
    ours = ours_per_layer(frontend, encoder, audio, torch.tensor(LENGTHS))
    for row, n in enumerate(LENGTHS):
        compare(row_of(ours, row), hf_layers(hf, audio[row:row + 1, :n]), [int(ours[3][row])], worst)
    if extra["feat_extract_norm"] == "layer":
        mask = (torch.arange(audio.shape[1]) < torch.tensor(LENGTHS)[:, None]).long()
        compare(ours, hf_layers(hf, audio, mask), ours[3].tolist(), worst)
    print(case, {k: f"{v:.1e}" for k, v in worst.items()})


def test_hf_pretraining_heads_and_ctc_heads_are_kept(audio):
    torch.manual_seed(0)
    hf = randomize(Wav2Vec2ForPreTraining(Wav2Vec2Config(**SMALL, codevector_dim=32, proj_codevector_dim=24,
                                                         num_codevector_groups=2, num_codevectors_per_group=8)))
    f, e, state = hf_to_speechlm(hf.state_dict(), hf.config.to_dict())
    _, _, extras = load_parts(f, e, state)
    shapes = {k: tuple(v.shape) for k, v in extras.items()}
    assert shapes == {"mask_emb": (64,), "quantizer.codevectors": (1, 16, 16), "quantizer.weight_proj.weight": (16, 32),
                      "quantizer.weight_proj.bias": (16,), "project_q.weight": (24, 32), "project_q.bias": (24,),
                      "final_proj.weight": (24, 64), "final_proj.bias": (24,)}
    assert torch.equal(extras["final_proj.weight"], hf.project_hid.weight)
    sd = {**{k: v for k, v in hf.wav2vec2.state_dict().items()}, "lm_head.weight": torch.zeros(10, 64),
          "lm_head.bias": torch.zeros(10)}
    sd = {f"wav2vec2.{k}" if not k.startswith("lm_head") else k: v for k, v in sd.items()}
    _, _, state = hf_to_speechlm(sd, hf.config.to_dict())
    assert state["ctc.ctc_lo.weight"].shape == (10, 64)
    # checkpoints from before torch's weight-norm parametrizations name the gain and direction g, v
    legacy = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                                  "weight_v"): v for k, v in sd.items()}
    _, _, from_legacy = hf_to_speechlm(legacy, hf.config.to_dict())
    assert from_legacy.keys() == state.keys() and all(torch.equal(from_legacy[k], state[k]) for k in state)


# --------------------------------------------------------------------------- torchaudio
def ta_args(mode: str, layer_norm_first: bool, bias: bool, wavlm: bool = False) -> dict:
    args = dict(extractor_mode=mode, extractor_conv_layer_config=CONV, extractor_conv_bias=bias, encoder_embed_dim=64,
                encoder_projection_dropout=0.1, encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4,
                encoder_num_layers=3, encoder_num_heads=4, encoder_attention_dropout=0.1,
                encoder_ff_interm_features=128, encoder_ff_interm_dropout=0.0, encoder_dropout=0.1,
                encoder_layer_norm_first=layer_norm_first, encoder_layer_drop=0.05, aux_num_out=None)
    if wavlm:
        args.update(encoder_num_buckets=320, encoder_max_distance=800)
    return args


TA_CASES = {
    "wav2vec2-group-postln": ta_args("group_norm", False, False),
    "wav2vec2-layer-preln": ta_args("layer_norm", True, True),
    # torchaudio.models.hubert_base's arguments at a small size (HuBERT: no projection dropout)
    "hubert": {**ta_args("group_norm", False, False), "encoder_projection_dropout": 0.1, "encoder_layer_drop": 0.05},
    "wavlm": ta_args("group_norm", False, False, wavlm=True),
}


def ta_layers(model, audio, lengths=None):
    with torch.no_grad():
        raw, flens = model.feature_extractor(audio, lengths)
        layers, _ = model.extract_features(audio, lengths)
        output, _ = model(audio, lengths)
    return raw, {i: h for i, h in enumerate(layers[:-1], start=1)}, output


@pytest.mark.parametrize("case", list(TA_CASES))
def test_torchaudio_models_load_with_equal_hidden_states(case, audio):
    args = TA_CASES[case]
    torch.manual_seed(0)
    builder = wavlm_model if "encoder_num_buckets" in args else wav2vec2_model
    ta = randomize(builder(**args))
    frontend, encoder, extras = load_parts(*torchaudio_to_speechlm(ta.state_dict(), args))
    assert extras == {}
    worst = {}
    for row, n in enumerate(LENGTHS):
        x = audio[row:row + 1, :n]
        ours = ours_per_layer(frontend, encoder, x, torch.tensor([n]))
        compare(ours, ta_layers(ta, x), ours[3].tolist(), worst)
    if args["extractor_mode"] == "layer_norm":  # torchaudio masks padding as HF does
        ours = ours_per_layer(frontend, encoder, audio, torch.tensor(LENGTHS))
        compare(ours, ta_layers(ta, audio, torch.tensor(LENGTHS)), ours[3].tolist(), worst)
    print(case, {k: f"{v:.1e}" for k, v in worst.items()})


def test_torchaudio_ctc_head_and_argument_faults():
    args = {**ta_args("group_norm", False, False), "aux_num_out": 7}
    _, _, state = torchaudio_to_speechlm(wav2vec2_model(**args).state_dict(), args)
    assert state["ctc.ctc_lo.weight"].shape == (7, 64)
    with pytest.raises(ValueError, match="missing \\['encoder_num_heads'\\]"):
        torchaudio_to_speechlm({}, {k: v for k, v in args.items() if k != "encoder_num_heads"})
    with pytest.raises(ValueError, match="extractor_mode 'batch_norm'"):
        torchaudio_to_speechlm({}, {**args, "extractor_mode": "batch_norm"})


# --------------------------------------------------------------------------- writing HF
def our_parts(norm: str, layer_norm_first: bool, wavlm: bool = False):
    torch.manual_seed(3)
    frontend = ConvFeatureEncoder([list(c) for c in CONV], norm=norm, conv_bias=layer_norm_first)
    cls = WavLMEncoder if wavlm else Wav2Vec2Encoder
    encoder = cls(input_size=32, output_size=64, attention_heads=4, linear_units=128, num_blocks=3,
                  layer_norm_first=layer_norm_first, conv_pos=16, conv_pos_groups=4)
    randomize(frontend, 4), randomize(encoder, 5)
    g = torch.Generator().manual_seed(6)
    extras = {"mask_emb": torch.rand(64, generator=g)}
    if not wavlm:  # G = 2 groups of V = 8 codes, codevector_dim 32, proj 24
        extras.update({"quantizer.codevectors": torch.rand(1, 16, 16, generator=g),
                       "quantizer.weight_proj.weight": torch.randn(16, 32, generator=g),
                       "quantizer.weight_proj.bias": torch.randn(16, generator=g),
                       "project_q.weight": torch.randn(24, 32, generator=g),
                       "project_q.bias": torch.randn(24, generator=g),
                       "final_proj.weight": torch.randn(24, 64, generator=g),
                       "final_proj.bias": torch.randn(24, generator=g)})
    return frontend, encoder, extras


@pytest.mark.parametrize("norm,layer_norm_first", [("group", False), ("layer", True)])
def test_round_trip_through_wav2vec2_for_pretraining(norm, layer_norm_first, audio, tmp_path):
    frontend, encoder, extras = our_parts(norm, layer_norm_first)
    config, state = speechlm_to_hf(frontend, encoder, extras)
    assert config["architectures"] == ["Wav2Vec2ForPreTraining"]
    hf = Wav2Vec2ForPreTraining(Wav2Vec2Config(**config)).eval()
    hf.load_state_dict(state)  # strict
    x, n = audio[:1, :LENGTHS[0]], LENGTHS[0]
    ours = ours_per_layer(frontend, encoder, x, torch.tensor([n]))
    worst = {}
    compare(ours, hf_layers(hf.wav2vec2, x), ours[3].tolist(), worst)
    print(norm, worst)
    # and back: the very same tensors
    f_cfg, e_cfg, back = hf_to_speechlm(state, config)
    mine = {**{f"frontend.{k}": v for k, v in frontend.state_dict().items()},
            **{f"encoder.{k}": v for k, v in encoder.state_dict().items()}, **extras}
    assert back.keys() == mine.keys() and all(torch.equal(back[k], mine[k]) for k in mine)
    assert e_cfg["layer_norm_first"] == layer_norm_first and f_cfg["norm"] == norm
    # on disk, read by from_pretrained and by load_hf
    save_hf(tmp_path, frontend, encoder, extras)
    again = Wav2Vec2ForPreTraining.from_pretrained(tmp_path).eval()
    assert torch.equal(again.quantizer.codevectors, extras["quantizer.codevectors"])
    _, _, reread = load_hf(tmp_path)
    assert all(torch.equal(reread[k], mine[k]) for k in mine)


def test_round_trip_wavlm_and_the_plain_model(audio):
    frontend, encoder, extras = our_parts("layer", True, wavlm=True)
    config, state = speechlm_to_hf(frontend, encoder, extras)
    assert config["architectures"] == ["WavLMModel"]
    hf = WavLMModel(WavLMConfig(**config)).eval()
    hf.load_state_dict(state)
    x, n = audio[:1, :LENGTHS[0]], LENGTHS[0]
    ours = ours_per_layer(frontend, encoder, x, torch.tensor([n]))
    compare(ours, hf_layers(hf, x), ours[3].tolist(), {})
    frontend, encoder, _ = our_parts("group", False)
    config, state = speechlm_to_hf(frontend, encoder)  # no mask_emb: HF must not expect one
    Wav2Vec2Model(Wav2Vec2Config(**config)).load_state_dict(state)


# --------------------------------------------------------------------------- faults
@pytest.mark.parametrize("option,value", [("add_adapter", True), ("adapter_attn_dim", 16), ("hidden_act", "relu"),
                                          ("feat_extract_norm", "batch"), ("layer_norm_eps", 1e-12),
                                          ("model_type", "data2vec-audio")])
def test_unsupported_configs_are_refused(option, value):
    with pytest.raises(ValueError, match=option if option != "model_type" else "data2vec-audio"):
        hf_config_to_speechlm({**SMALL, "model_type": "wav2vec2", option: value})
    with pytest.raises(ValueError, match="conv_pos_batch_norm"):
        hf_config_to_speechlm({**SMALL, "model_type": "hubert", "conv_pos_batch_norm": True})


def test_faults_are_named():
    hf = Wav2Vec2Model(Wav2Vec2Config(**SMALL))
    sd = hf.state_dict()
    with pytest.raises(ValueError, match="unexpected key 'classifier.weight'"):
        hf_to_speechlm({**sd, "classifier.weight": torch.zeros(2, 64)}, hf.config.to_dict())
    with pytest.raises(ValueError, match=r"missing 'encoder\.layers\.1\.attention\.k_proj\.weight'"):
        hf_to_speechlm({k: v for k, v in sd.items() if k != "encoder.layers.1.attention.k_proj.weight"},
                       hf.config.to_dict())
    f, e, state = hf_to_speechlm(sd, hf.config.to_dict())
    del state["encoder.encoders.2.norm2.weight"]
    with pytest.raises(ValueError, match=r"missing 'encoder\.layers\.2\.final_layer_norm\.weight'"):
        load_parts(f, e, state)
    frontend, encoder, extras = our_parts("group", False)
    del extras["project_q.bias"]
    with pytest.raises(ValueError, match=r"missing \['project_q.bias'\]"):
        speechlm_to_hf(frontend, encoder, extras)
