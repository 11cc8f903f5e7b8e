"""Speech -> LM adapters: output lengths (against torch's own Conv1d and a hand-made reshape),
padding invariance (an utterance's output is the same alone, batched with longer ones, and with
its padding frames full of garbage), gradients reaching every weight, and the Q-Former's window
mode equal to the utterance-level Q-Former run on each window alone."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from speechlm.models.adapters import ConvAdapter, FrameStackMLP, QFormerAdapter

D_ENC, D_LM = 12, 16
LENGTHS = [1, 5, 8, 13, 16]


def adapters():
    torch.manual_seed(0)
    return {
        "stack": FrameStackMLP(D_ENC, D_LM, stack=4, hidden_size=20, activation="silu"),
        "conv": ConvAdapter(D_ENC, D_LM, num_layers=2, kernel_size=3, stride=2, hidden_size=20),
        "qformer": QFormerAdapter(D_ENC, D_LM, num_queries=3, hidden_size=16, num_heads=2, num_layers=2),
        "qformer_window": QFormerAdapter(D_ENC, D_LM, num_queries=2, hidden_size=16, num_heads=2, num_layers=2,
                                         window=5),
    }


def batch(lengths, garbage=100.0, seed=1):
    """x (B, T, D): real frames N(0, 1), padding frames `garbage` * N(0, 1)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    x = torch.randn(len(lengths), int(lengths.max()), D_ENC, generator=generator)
    pad = torch.arange(x.shape[1]) >= lengths.unsqueeze(1)
    x[pad] = garbage * torch.randn(int(pad.sum()), D_ENC, generator=generator)
    return x, lengths


@pytest.mark.parametrize("name", ["stack", "conv", "qformer", "qformer_window"])
def test_padding_invariance_and_lengths(name):
    adapter = adapters()[name].eval()
    x, lengths = batch(LENGTHS)
    with torch.no_grad():
        y, out_lengths = adapter(x, lengths)
        assert torch.equal(out_lengths, adapter.output_lengths(lengths))
        assert y.shape[:2] == (len(LENGTHS), int(out_lengths.max()))
        for b, length in enumerate(LENGTHS):
            alone, alone_len = adapter(x[b: b + 1, :length], lengths[b: b + 1])
            assert int(alone_len) == int(out_lengths[b]) == alone.shape[1]
            assert (y[b, : int(out_lengths[b])] - alone[0]).abs().max() < 1e-5, (name, length)
        assert torch.isfinite(y).all()


def test_planted_fault_unmasked_padding_is_caught():
    """The invariance test above can fail: without zeroing the padding, a short utterance's
    last stacked group takes in the garbage frames."""
    adapter = adapters()["stack"].eval()
    x, lengths = batch([5, 16])
    with torch.no_grad():
        batched = adapter(x, lengths)[0][0, :2]
        unmasked = adapter.mlp(x[:, :16].reshape(2, 4, 4 * D_ENC))[0, :2]
        alone = adapter(x[:1, :5], lengths[:1])[0][0]
    assert (batched - alone).abs().max() < 1e-5
    assert (unmasked - alone).abs().max() > 1e-2


def test_frame_stack_is_a_reshape_then_the_mlp():
    adapter = adapters()["stack"].eval()
    x, lengths = batch([16, 16], garbage=1.0)
    first, act, _, second = adapter.mlp
    with torch.no_grad():
        by_hand = second(torch.nn.functional.silu(first(x.reshape(2, 4, 4 * D_ENC))))
        y, out_lengths = adapter(x, lengths)
    assert torch.allclose(y, by_hand, atol=1e-6) and out_lengths.tolist() == [4, 4]
    assert FrameStackMLP(D_ENC, D_LM, stack=3).output_lengths(torch.tensor([0, 1, 3, 4, 7])).tolist() == [0, 1, 1, 2, 3]


@pytest.mark.parametrize("kernel_size,stride,num_layers", [(3, 2, 2), (5, 3, 1), (4, 2, 3), (1, 1, 1)])
def test_conv_lengths_equal_torch_conv1d_output(kernel_size, stride, num_layers):
    adapter = ConvAdapter(D_ENC, D_LM, num_layers=num_layers, kernel_size=kernel_size, stride=stride)
    reference = nn.Sequential(*[nn.Conv1d(D_ENC, D_ENC, kernel_size, stride, kernel_size // 2)
                                for _ in range(num_layers)])
    for length in range(1, 30):
        expected = reference(torch.zeros(1, D_ENC, length)).shape[-1]
        assert int(adapter.output_lengths(torch.tensor([length]))) == expected
        assert adapter(torch.zeros(1, length, D_ENC), torch.tensor([length]))[0].shape[1] == expected


def test_qformer_lengths_and_window_mode_is_the_utterance_qformer_per_window():
    adapters_ = adapters()
    whole, windowed = adapters_["qformer"], adapters_["qformer_window"]
    assert whole.output_lengths(torch.tensor([0, 1, 17])).tolist() == [0, 3, 3]
    assert windowed.output_lengths(torch.tensor([0, 1, 5, 6, 17])).tolist() == [0, 2, 2, 4, 8]
    # the same weights as an utterance-level Q-Former, run on each window of frames alone
    single = QFormerAdapter(D_ENC, D_LM, num_queries=2, hidden_size=16, num_heads=2, num_layers=2)
    single.load_state_dict(windowed.state_dict())
    windowed.eval(), single.eval()
    x, lengths = batch([13, 7])
    with torch.no_grad():
        y, out_lengths = windowed(x, lengths)
        assert out_lengths.tolist() == [6, 4] and y.shape[1] == 6
        for b, length in enumerate([13, 7]):
            for w, start in enumerate(range(0, length, 5)):
                frames = x[b: b + 1, start: min(start + 5, length)]
                part, _ = single(frames, torch.tensor([frames.shape[1]]))
                assert (y[b, 2 * w: 2 * w + 2] - part[0]).abs().max() < 1e-5
        assert not y[1, 4:].any()  # past an utterance's windows: zeros


@pytest.mark.parametrize("name", ["stack", "conv", "qformer", "qformer_window"])
def test_gradients_reach_every_weight_and_not_the_padding(name):
    adapter = adapters()[name].train()
    x, lengths = batch(LENGTHS)
    x.requires_grad_(True)
    y, out_lengths = adapter(x, lengths)
    real = torch.arange(y.shape[1]) < out_lengths.unsqueeze(1)
    y[real].pow(2).sum().backward()
    for key, p in adapter.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, key
    pad = torch.arange(x.shape[1]) >= lengths.unsqueeze(1)
    assert not x.grad[pad].any()
    assert x.grad[~pad].abs().sum(-1).gt(0).all()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="activation 'tanh'"):
        FrameStackMLP(D_ENC, D_LM, activation="tanh")
    with pytest.raises(ValueError, match="stack must be >= 1"):
        FrameStackMLP(D_ENC, D_LM, stack=0)
    with pytest.raises(ValueError, match="window must be >= 1"):
        QFormerAdapter(D_ENC, D_LM, window=0)
