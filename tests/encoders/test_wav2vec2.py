"""ConvFeatureEncoder, Wav2Vec2Encoder and WavLMEncoder on their own: the CNN's output lengths
are HF's, feature_grad_mult scales exactly the CNN's gradient, a padded batch gives each row
what that row gives alone, stem/blocks compose to forward, per-layer outputs and layer drop
behave, WavLM's buckets are HF's, and the conf nodes build. (Parity with the peers' weights:
tests/interop/test_wav2vec2_interop.py.)"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from transformers import Wav2Vec2Config
from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2PreTrainedModel
from transformers.models.wavlm.modeling_wavlm import WavLMAttention

from speechlm.encoders.base import StemOutput
from speechlm.encoders.wav2vec2 import DEFAULT_CONV_LAYERS, ConvFeatureEncoder, Wav2Vec2Encoder, conv_output_lengths
from speechlm.encoders.wavlm import WavLMEncoder, relative_position_buckets
from speechlm.models.build import build_model

CONF = Path(__file__).resolve().parents[2] / "conf"
CONV = [[32, 10, 5], [32, 3, 2], [32, 3, 2], [32, 2, 2]]


def small(cls=Wav2Vec2Encoder, **kw):
    args = dict(input_size=32, output_size=64, attention_heads=4, linear_units=128, num_blocks=3, conv_pos=16,
                conv_pos_groups=4)
    return cls(**{**args, **kw})


def test_output_lengths_are_hugging_faces():
    lengths = torch.cat([torch.arange(400, 2000, 7), torch.tensor([16000, 16001, 16319, 16320, 250000])])
    hf = Wav2Vec2PreTrainedModel._get_feat_extract_output_lengths(SimpleNamespace(config=Wav2Vec2Config()), lengths)
    ours = ConvFeatureEncoder().output_lengths(lengths)
    assert torch.equal(ours, hf) and ours[-5:].tolist()[:2] == [49, 49]
    assert conv_output_lengths(torch.tensor([0, 399, 400]), DEFAULT_CONV_LAYERS).tolist() == [0, 0, 1]
    frontend = ConvFeatureEncoder(CONV)
    with torch.no_grad():
        feats, out = frontend(torch.randn(2, 8000), torch.tensor([8000, 5000]))
    assert feats.shape == (2, 199, 32) and out.tolist() == [199, 124] and frontend.output_size() == 32


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_grad_mult_scales_the_cnn_gradient_only(norm):
    audio, lengths = torch.randn(2, 4000), torch.tensor([4000, 3000])
    grads = {}
    for mult in (1.0, 0.25):  # a power of two: the scaled gradient is exact in floating point
        torch.manual_seed(0)
        frontend = ConvFeatureEncoder(CONV, norm=norm, grad_mult=mult)
        raw, _ = frontend.extract(audio, lengths)
        feats, _ = frontend(audio, lengths)
        (feats.square().sum() + raw.square().mean()).backward()  # a loss and fairseq's feature penalty
        grads[mult] = {n: p.grad.clone() for n, p in frontend.named_parameters()}
    for name, g in grads[1.0].items():
        expected = g * 0.25 if name.startswith("conv_layers.") else g
        assert torch.equal(grads[0.25][name], expected), name
    frozen = ConvFeatureEncoder(CONV, grad_mult=0.0)
    frozen(audio, lengths)[0].sum().backward()
    assert all(p.grad is None for p in frozen.conv_layers.parameters()) and frozen.layer_norm.weight.grad is not None


@pytest.mark.parametrize("norm,cls,layer_norm_first", [("layer", Wav2Vec2Encoder, True),
                                                       ("group", Wav2Vec2Encoder, False),
                                                       ("layer", WavLMEncoder, False)])
def test_padding_does_not_change_real_frames(norm, cls, layer_norm_first):
    torch.manual_seed(0)
    frontend, encoder = ConvFeatureEncoder(CONV, norm=norm).eval(), small(cls, layer_norm_first=layer_norm_first).eval()
    lengths = torch.tensor([12000, 7000, 9999])
    audio = torch.randn(3, 12000)
    audio[1, 7000:] = 100.0  # padding that would show if it leaked
    with torch.no_grad():
        feats, flens = frontend(audio, lengths)
        batched = encoder(feats, flens, return_layers=(1, 2, 3))
        for row, n in enumerate(lengths.tolist()):
            alone_feats, alone_lens = frontend(audio[row:row + 1, :n], lengths[row:row + 1])
            alone = encoder(alone_feats, alone_lens, return_layers=(1, 2, 3))
            k = int(alone_lens)
            assert k == int(flens[row]) and alone.output.shape[1] == k
            assert (batched.output[row, :k] - alone.output[0]).abs().max() < 1e-5
            for i in (1, 2):
                assert (batched.intermediate[i][row, :k] - alone.intermediate[i][0]).abs().max() < 1e-5


def test_stem_blocks_layers_and_layer_drop():
    torch.manual_seed(0)
    xs, lengths = torch.randn(2, 50, 32), torch.tensor([50, 41])
    for layer_norm_first in (False, True):
        encoder = small(layer_norm_first=layer_norm_first, layer_drop_rate=0.9).eval()  # eval: no layer drop
        with torch.no_grad():
            out = encoder(xs, lengths, return_layers=(1, 2, 3))
            stem = encoder.stem(xs, lengths)
            assert torch.equal(encoder.blocks(stem).output, out.output)
            masked = stem.x.clone()
            masked[:, 10:20] = 0.0  # what a pretraining model does between the two
            assert not torch.allclose(encoder.blocks(StemOutput(masked, lengths, None)).output, out.output)
        assert torch.equal(out.intermediate[3], out.output)  # pre-LN too: the last layer's is after the norm
        assert (encoder.after_norm is None) != layer_norm_first and (encoder.before_norm is None) == layer_norm_first
    encoder = small(layer_drop_rate=1.0, dropout_rate=0.0, input_dropout_rate=0.0).train()
    out = encoder(xs, lengths, return_layers=(1, 2, 3))
    assert out.intermediate == {} and out.output.shape == (2, 50, 64)


def test_wavlm_buckets_are_hugging_faces():
    hf = WavLMAttention(embed_dim=8, num_heads=2, num_buckets=320, max_distance=800)
    pos = torch.arange(1500)
    expected = hf._relative_positions_bucket(pos[None, :] - pos[:, None])
    assert torch.equal(relative_position_buckets(1500, 320, 800), expected)


def test_conf_nodes_build():
    frontend = build_model(OmegaConf.load(CONF / "frontend" / "wav2vec2_cnn.yaml"), initialize=False)
    assert isinstance(frontend, ConvFeatureEncoder) and frontend.sample_rate == 16000 and frontend.output_size() == 512
    for name, cls in (("wav2vec2", Wav2Vec2Encoder), ("wavlm", WavLMEncoder)):
        cfg = OmegaConf.load(CONF / "encoder" / f"{name}.yaml")
        assert (cfg.input_size, cfg.output_size, cfg.attention_heads, cfg.linear_units, cfg.num_blocks) == \
            (512, 768, 12, 3072, 12) and cfg.layer_norm_first is False
        assert cfg._target_ == f"{cls.__module__}.{cls.__name__}"
