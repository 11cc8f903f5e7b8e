"""MultitaskDecoder against openai-whisper's TextDecoder holding the same random weights, and
its incremental-decoding protocol against its own teacher-forced forward: a prompt in one
step, single steps, rows reordered by select_state, padded memory rows."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from interop.whisper_peer import our_decoder, our_encoder, random_mel, random_whisper
from speechlm.decoders.multitask import MultitaskDecoder
from speechlm.models.build import build_model

CONF = Path(__file__).resolve().parents[2] / "conf" / "decoder" / "multitask.yaml"
V = 51865


@pytest.fixture(scope="module")
def setup():
    ref = random_whisper()
    enc, dec = our_encoder(ref), our_decoder(ref)
    # any encoder output will do: the decoder's parity does not need 30 s of it
    memory = torch.randn(3, 300, 64, generator=torch.Generator().manual_seed(9))
    return ref, enc, dec, memory


def tokens(b: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (b, length), generator=torch.Generator().manual_seed(seed))


def full(n: int, value: int) -> torch.Tensor:
    return torch.full((n,), value)


def test_teacher_forced_logits_equal_whisper(setup):
    ref, _, dec, memory = setup
    ys = tokens(3, 12)
    with torch.no_grad():
        expected = ref.decoder(ys, memory)
        logits = dec(memory, full(3, 300), ys, full(3, 12))
    assert logits.shape == expected.shape == (3, 12, V)
    assert (logits - expected).abs().max() < 1e-4


def test_whisper_kv_cache_decoding_matches_steps(setup):
    """Whisper's own incremental decoding (kv-cache hooks) over a prompt then one token."""
    ref, _, dec, memory = setup
    ys = tokens(3, 6, seed=1)
    cache, hooks = ref.install_kv_cache_hooks()
    try:
        with torch.no_grad():
            first = ref.decoder(ys[:, :5], memory, kv_cache=cache)[:, -1]
            second = ref.decoder(ys[:, 5:], memory, kv_cache=cache)[:, -1]
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        state = dec.init_state(3, memory=memory)
        lp1, state = dec.step(ys[:, :5], state)
        lp2, state = dec.step(ys[:, 5], state)
    assert (lp1 - torch.log_softmax(first, -1)).abs().max() < 1e-4
    assert (lp2 - torch.log_softmax(second, -1)).abs().max() < 1e-4


def test_steps_equal_teacher_forcing(setup):
    _, _, dec, memory = setup
    ys = tokens(3, 9, seed=2)
    with torch.no_grad():
        expected = torch.log_softmax(dec(memory, full(3, 300), ys, full(3, 9)), -1)
        state = dec.init_state(memory=memory)
        prompt, state = dec.step(ys[:, :4], state, all_positions=True)  # (N, K) in one call
        assert prompt.shape == (3, 4, V)
        assert (prompt - expected[:, :4]).abs().max() < 1e-4
        chunk, state = dec.step(ys[:, 4:7], state, all_positions=True)  # K = 3 after 4 cached
        assert (chunk - expected[:, 4:7]).abs().max() < 1e-4
        for i in range(7, 9):
            lp, state = dec.step(ys[:, i], state)
            assert lp.shape == (3, V)
            assert (lp - expected[:, i]).abs().max() < 1e-4
    assert state.layers[0].self_k.shape[2] == 9


def test_prompt_step_equals_single_steps(setup):
    _, _, dec, memory = setup
    ys = tokens(3, 5, seed=3)
    with torch.no_grad():
        lp_prompt, s_prompt = dec.step(ys, dec.init_state(memory=memory))
        s_single = dec.init_state(memory=memory)
        for i in range(5):
            lp_single, s_single = dec.step(ys[:, i], s_single)
    assert (lp_prompt - lp_single).abs().max() < 1e-4
    for a, b in zip(s_prompt.layers, s_single.layers):
        assert (a.self_k - b.self_k).abs().max() < 1e-5 and (a.self_v - b.self_v).abs().max() < 1e-5


def test_select_state_keeps_and_reorders_rows(setup):
    _, _, dec, memory = setup
    ys = tokens(3, 4, seed=4)
    index = torch.tensor([2, 0, 0, 1])
    with torch.no_grad():
        _, state = dec.step(ys[:, :3], dec.init_state(memory=memory))
        picked = dec.select_state(state, index)
        lp, _ = dec.step(ys[index, 3], picked)
        # each picked row continued from scratch on its own memory row
        expected, _ = dec.step(ys[index], dec.init_state(memory=memory[index]))
    assert (lp - expected).abs().max() < 1e-4
    assert torch.equal(picked.source, index)
    # rows kept in place (a prefix): the memory side is a view, not a copy
    kept = dec.select_state(state, torch.tensor([0, 1]))
    assert kept.layers[0].src_k.data_ptr() == state.layers[0].src_k.data_ptr()


def test_padded_memory_rows_equal_each_row_alone(setup):
    _, enc, dec, _ = setup
    frames = torch.tensor([600, 301, 48])
    with torch.no_grad():
        out = enc(random_mel(3, 600, seed=5).transpose(1, 2), frames)
    memory, lens = out.output, out.lengths
    ys, ys_lens = tokens(3, 7, seed=6), torch.tensor([7, 4, 6])
    mask = (torch.arange(memory.shape[1]) < lens[:, None]).unsqueeze(1)
    with torch.no_grad():
        logits = dec(memory, lens, ys, ys_lens)
        lp, _ = dec.step(ys, dec.init_state(memory=memory, memory_mask=mask), all_positions=True)
        for b in range(3):
            n, m = int(ys_lens[b]), int(lens[b])
            alone = dec(memory[b : b + 1, :m], lens[b : b + 1], ys[b : b + 1, :n], ys_lens[b : b + 1])[0]
            assert (logits[b, :n] - alone).abs().max() < 1e-4
            assert (lp[b, :n] - torch.log_softmax(alone, -1)).abs().max() < 1e-4


def test_too_many_positions_are_refused():
    dec = MultitaskDecoder(11, 16, 2, 1, max_positions=4).eval()
    memory = torch.randn(1, 5, 16)
    with pytest.raises(ValueError, match="5 decoder positions"):
        dec(memory, torch.tensor([5]), torch.zeros(1, 5, dtype=torch.long), torch.tensor([5]))
    _, state = dec.step(torch.zeros(1, 4, dtype=torch.long), dec.init_state(memory=memory))
    with pytest.raises(ValueError, match="5 decoder positions"):
        dec.step(torch.zeros(1, dtype=torch.long), state)


def test_config_composes_with_the_encoder():
    cfg = OmegaConf.merge({"vocab_size": 50, "encoder": {"d_model": 48}}, {"decoder": OmegaConf.load(CONF)})
    node = OmegaConf.to_container(cfg.decoder, resolve=True)
    assert (node["attention_heads"], node["num_blocks"], node["max_positions"]) == (6, 4, 448)
    dec = build_model({**node, "num_blocks": 1}).eval()
    with torch.no_grad():
        logits = dec(torch.randn(2, 10, 48), torch.tensor([10, 7]), torch.zeros(2, 3, dtype=torch.long),
                     torch.tensor([3, 2]))
    assert logits.shape == (2, 3, 50)
