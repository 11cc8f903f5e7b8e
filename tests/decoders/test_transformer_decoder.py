"""Our Transformer decoder against ESPnet's `TransformerDecoder`, weights copied across with
`speechlm.interop.espnet_asr`: the same teacher-forced logits, and step by step the same
next-token log-probabilities as ESPnet's `batch_score` (which beam search calls)."""
from __future__ import annotations

import inspect

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from espnet2.asr.decoder.transformer_decoder import TransformerDecoder as EspnetDecoder

from speechlm.decoders.transformer import TransformerDecoder
from speechlm.interop.espnet_asr import espnet_decoder_state_dict_to_ours, ours_to_espnet_decoder_state_dict
from speechlm.models.build import build_model

TOL = dict(atol=1e-5, rtol=1e-5)
V, D = 23, 64
SMALL = dict(attention_heads=4, linear_units=128, num_blocks=2)
MEMORY_LENS = [31, 24, 9]


def randomize_norms(model: nn.Module, seed: int = 1) -> None:
    """Away from (1, 0), so that a swapped or missing norm cannot pass unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))


def build_pair(**conf):
    torch.manual_seed(0)
    conf = {**SMALL, **conf}
    ref = EspnetDecoder(V, D, **conf).eval()
    randomize_norms(ref)
    ours = TransformerDecoder(V, D, **conf).eval()
    ours.load_state_dict(espnet_decoder_state_dict_to_ours(ref.state_dict()), strict=True)
    return ref, ours


def memory(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(MEMORY_LENS)
    return torch.randn(len(MEMORY_LENS), max(MEMORY_LENS), D, generator=g), lens


# The recipe's depth and FFN width (conf/decoder/transformer.yaml: 6 blocks, 2048 units; d=64 here) are
# cheap enough to check here too.
RECIPE = dict(attention_heads=4, linear_units=2048, num_blocks=6, dropout_rate=0.1, positional_dropout_rate=0.1,
              self_attention_dropout_rate=0.1, src_attention_dropout_rate=0.1)


@pytest.mark.parametrize("conf", [{}, dict(normalize_before=False), dict(use_output_layer=False), RECIPE],
                         ids=["pre_norm", "post_norm", "no_output_layer", "librispeech_100_recipe"])
def test_forward_matches_espnet(conf):
    ref, ours = build_pair(**conf)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    mem, mem_lens = memory()
    g = torch.Generator().manual_seed(2)
    ys_lens = torch.tensor([7, 4, 1])
    ys = torch.randint(0, V, (3, 7), generator=g)
    with torch.no_grad():
        expected, _ = ref(mem, mem_lens, ys, ys_lens)
        got = ours(mem, mem_lens, ys, ys_lens)
    assert got.shape == expected.shape
    for b, n in enumerate(ys_lens.tolist()):
        torch.testing.assert_close(got[b, :n], expected[b, :n], **TOL)


def test_state_dict_round_trip():
    ref, ours = build_pair()
    back = ours_to_espnet_decoder_state_dict(ours.state_dict())
    assert back.keys() == ref.state_dict().keys()
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(back[k], v, rtol=0, atol=0)


@pytest.mark.parametrize("normalize_before", [True, False], ids=["pre_norm", "post_norm"])
def test_batch_score_matches_espnet(normalize_before):
    """Greedy extension of 3 hypotheses over one utterance's memory, as a beam does."""
    ref, ours = build_pair(normalize_before=normalize_before)
    mem, _ = memory()
    n = 3
    mem = mem[:1].expand(n, -1, -1)
    mask = torch.ones(n, 1, mem.shape[1], dtype=torch.bool)
    ys = torch.tensor([[V - 1], [V - 1], [V - 1]])
    states, state = [None] * n, ours.init_state(n, memory=mem, memory_mask=mask)
    with torch.no_grad():
        for step in range(6):
            expected, states = ref.batch_score(ys, states, mem)
            got, state = ours.step(ys[:, -1], state)
            torch.testing.assert_close(got, expected, **TOL, msg=lambda m, step=step: f"step {step}: {m}")
            # a different token per row, so the rows' prefixes differ
            ys = torch.cat([ys, got.topk(n, dim=-1).indices.diagonal().unsqueeze(1)], dim=1)


def test_step_with_reordering_and_padded_memory():
    """Rows pruned/reordered with `select_state`, utterances of different lengths padded in
    one batch: each row equals ESPnet scoring its own unpadded utterance from scratch."""
    ref, ours = build_pair()
    mem, mem_lens = memory()
    mask = (torch.arange(mem.shape[1]) < mem_lens[:, None]).unsqueeze(1)
    ys = torch.full((3, 1), V - 1)
    state = ours.init_state(memory=mem, memory_mask=mask)
    order = torch.tensor([2, 0, 1])
    with torch.no_grad():
        for step in range(4):
            got, state = ours.step(ys[:, -1], state)
            for b in range(3):
                expected, _ = ref.score(ys[b], None, mem[b, : mem_lens[b]])
                torch.testing.assert_close(got[b], expected, **TOL)
            ys = torch.cat([ys, got.argmax(-1, keepdim=True)], dim=1)
            # reorder everything the same way (rows keep their own memory)
            ys, mem, mask, mem_lens = ys[order], mem[order], mask[order], mem_lens[order]
            state = ours.select_state(state, order)


def test_select_state_keeps_or_moves_the_memory_side():
    """Rows that keep their memory (trailing rows dropped) slice it; rows that change memory
    get their new memory's keys/values: either way each row scores as if freshly started."""
    _, ours = build_pair()
    mem, mem_lens = memory()
    mask = (torch.arange(mem.shape[1]) < mem_lens[:, None]).unsqueeze(1)
    tok = torch.full((3,), V - 1)
    with torch.no_grad():
        state = ours.init_state(memory=mem, memory_mask=mask)
        _, state = ours.step(tok, state)
        for index in (torch.tensor([0, 1]), torch.tensor([1, 1, 0, 2])):
            selected = ours.select_state(state, index)
            got, _ = ours.step(tok[index], selected)
            fresh = ours.init_state(memory=mem[index], memory_mask=mask[index])
            _, fresh = ours.step(tok[index], fresh)
            expected, _ = ours.step(tok[index], fresh)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
            sliced = index.tolist() == [0, 1]  # the same rows, minus the last: no copy
            assert (selected.layers[0].src_k.data_ptr() == state.layers[0].src_k.data_ptr()) == sliced


def test_incremental_steps_equal_teacher_forcing():
    _, ours = build_pair()
    mem, mem_lens = memory()
    mask = (torch.arange(mem.shape[1]) < mem_lens[:, None]).unsqueeze(1)
    ys = torch.randint(0, V, (3, 5), generator=torch.Generator().manual_seed(3))
    ys[:, 0] = V - 1
    with torch.no_grad():
        state = ours.init_state(memory=mem, memory_mask=mask)
        full = torch.log_softmax(ours(mem, mem_lens, ys, torch.full((3,), 5)), dim=-1)
        for t in range(5):
            step, state = ours.step(ys[:, t], state)
            torch.testing.assert_close(step, full[:, t], **TOL)


def test_constructor_defaults_are_espnets():
    ref = inspect.signature(EspnetDecoder).parameters
    for name, p in inspect.signature(TransformerDecoder).parameters.items():
        assert name in ref, name
        assert p.default == ref[name].default, name


def test_config_is_the_librispeech_100_recipe():
    """espnet egs2/librispeech_100/asr1 conf/tuning/train_asr_conformer_lr2e-3_warmup15k_amp_nondeterministic.yaml"""
    from pathlib import Path

    cfg = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "decoder" / "transformer.yaml")
    assert cfg._target_ == "speechlm.decoders.transformer.TransformerDecoder"
    recipe = dict(attention_heads=4, linear_units=2048, num_blocks=6, dropout_rate=0.1,
                  positional_dropout_rate=0.1, self_attention_dropout_rate=0.1, src_attention_dropout_rate=0.1)
    assert {k: cfg[k] for k in recipe} == recipe
    root = OmegaConf.create({"vocab_size": 11, "encoder": {"output_size": 32}, "decoder": cfg})
    root.decoder.update(attention_heads=2, linear_units=64, num_blocks=1)
    decoder = build_model(root.decoder, initialize=False).eval()
    with torch.no_grad():
        out = decoder(torch.randn(2, 9, 32), torch.tensor([9, 5]), torch.tensor([[10, 3], [10, 4]]), torch.tensor([2, 1]))
    assert out.shape == (2, 2, 11)
