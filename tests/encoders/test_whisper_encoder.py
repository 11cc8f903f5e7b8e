"""WhisperEncoder against openai-whisper's AudioEncoder holding the same random weights: the
same output on 30-s windows; shorter input (training on short utterances) as Whisper's own
computation with its position table sliced; a padded batch row as that row alone."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.nn import functional as F
from whisper.model import sinusoids

from interop.whisper_peer import our_encoder, random_mel, random_whisper
from speechlm.encoders.whisper import WhisperEncoder, whisper_sinusoids
from speechlm.models.build import build_model

CONF = Path(__file__).resolve().parents[2] / "conf" / "encoder" / "whisper.yaml"


@pytest.fixture(scope="module")
def pair():
    ref = random_whisper()
    return ref, our_encoder(ref)


def whisper_computation(ref, mel: torch.Tensor) -> torch.Tensor:
    """openai-whisper's AudioEncoder.forward, with its position table sliced to the input
    (it asserts 30-s input)."""
    enc = ref.encoder
    x = F.gelu(enc.conv2(F.gelu(enc.conv1(mel)))).permute(0, 2, 1)
    x = x + enc.positional_embedding[: x.shape[1]]
    for block in enc.blocks:
        x = block(x)
    return enc.ln_post(x)


def test_30s_windows_equal_whisper(pair):
    ref, ours = pair
    mel = random_mel(2, 3000)
    with torch.no_grad():
        expected = ref.encoder(mel)
        out = ours(mel.transpose(1, 2), torch.tensor([3000, 3000]))
    assert out.output.shape == expected.shape == (2, 1500, 64)
    assert out.lengths.tolist() == [1500, 1500]
    assert (out.output - expected).abs().max() < 1e-4


@pytest.mark.parametrize("frames", [400, 257, 1])
def test_short_input_is_whisper_with_positions_sliced(pair, frames):
    ref, ours = pair
    mel = random_mel(1, frames, seed=frames)
    with torch.no_grad():
        expected = whisper_computation(ref, mel)
        out = ours(mel.transpose(1, 2), torch.tensor([frames]))
    assert out.output.shape[1] == out.lengths.item() == (frames + 1) // 2
    assert (out.output - expected).abs().max() < 1e-4


def test_padded_batch_rows_equal_each_row_alone(pair):
    _, ours = pair
    lengths = torch.tensor([400, 257, 100, 399])
    mel = random_mel(4, 400, seed=3).transpose(1, 2)  # (B, T, F), garbage past each length
    with torch.no_grad():
        out = ours(mel, lengths)
        assert out.lengths.tolist() == [200, 129, 50, 200]
        for b, n in enumerate(lengths.tolist()):
            alone = ours(mel[b : b + 1, :n], lengths[b : b + 1]).output[0]
            assert (out.output[b, : alone.shape[0]] - alone).abs().max() < 1e-5


def test_padded_batch_trains(pair):
    """Gradients flow through the masked path and stay finite."""
    _, ours = pair
    ours = WhisperEncoder(80, 64, 4, 2, dropout_rate=0.1).train()
    out = ours(random_mel(2, 300).transpose(1, 2), torch.tensor([300, 150]))
    out.output.square().mean().backward()
    grads = [p.grad for p in ours.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_stem_blocks_and_intermediate_layers(pair):
    _, ours = pair
    xs, lengths = random_mel(2, 120).transpose(1, 2), torch.tensor([120, 90])
    with torch.no_grad():
        whole = ours(xs, lengths, return_layers=(1, 2))
        split = ours.blocks(ours.stem(xs, lengths))
    assert torch.equal(whole.output, split.output)
    assert sorted(whole.intermediate) == [1, 2]
    assert torch.equal(whole.intermediate[2], whole.output)  # the last block's output, normed


def test_positions_are_whispers_table_and_a_persistent_buffer():
    enc = WhisperEncoder(80, 64, 4, 1)
    assert torch.equal(enc.positional_embedding, sinusoids(1500, 64))
    assert torch.equal(whisper_sinusoids(1500, 384), sinusoids(1500, 384))
    assert "positional_embedding" in enc.state_dict()
    assert enc.output_size() == 64


def test_input_longer_than_the_position_table_is_refused():
    enc = WhisperEncoder(80, 64, 4, 1, max_positions=10)
    with pytest.raises(ValueError, match="at most 20 frames"):
        enc(torch.zeros(1, 21, 80), torch.tensor([21]))


def test_config_composes_with_the_frontend():
    cfg = OmegaConf.merge({"frontend": {"n_mels": 128}}, {"encoder": OmegaConf.load(CONF)})
    node = OmegaConf.to_container(cfg.encoder, resolve=True)
    assert (node["d_model"], node["attention_heads"], node["num_blocks"], node["input_size"]) == (384, 6, 4, 128)
    enc = build_model({**node, "num_blocks": 1}).eval()
    with torch.no_grad():
        out = enc(torch.randn(2, 50, 128), torch.tensor([50, 31]))
    assert out.output.shape == (2, 25, 384) and out.lengths.tolist() == [25, 16]
