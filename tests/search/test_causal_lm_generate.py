"""Generation from a CausalLM (speechlm.search.causal_lm_generate) against transformers'
`generate` on the same tiny random LlamaForCausalLM (saved by `save_pretrained`, loaded by
`CausalLM.from_hf`), left-padded prompts of different lengths:

- greedy: 50 tokens identical, with an eos that never comes and with one that ends rows early;
- beam search (beam 4): identical best sequences and `sequences_scores` within 1e-4, for
  length penalties 1, 0 and 2 and each early_stopping mode, one or two eos ids, min_new_tokens;
  the setup is one where the length penalty changes the result (a wrong one is caught);
- sampling: top_k=1 is greedy; the first sampled token over 4000 rows follows transformers'
  temperature / top-k / top-p warpers applied to the peer's logits (chi-square bound), and the
  same bound rejects a sampler that skips top-p or the temperature (the test can fail);
- the embeddings path: right-padded `lm.embed(ids)` gives what the token-id prompts give;
- finished rows leave the batch (fewer rows stepped).
"""
from __future__ import annotations

import hydra.utils
import pytest
import torch
from scipy.stats import chi2
from transformers import LlamaConfig, LlamaForCausalLM, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from speechlm.decoders.causal_lm import CausalLM
from speechlm.search.causal_lm_generate import (
    CausalLMGenerate,
    beam_generate,
    prompt_embeds,
    sample_generate,
)

V, PAD, EOS = 100, 0, 2
EARLY_EOS = 17  # a token this model produces within 20 steps for some prompts (asserted below)
PROMPT_LENS = (5, 9, 3, 7, 4, 6)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(transformers' model, ours loaded from its save_pretrained directory), eval mode. Weights
    N(0, 0.2) rather than HF's 0.02, so next-token distributions are peaked (a near-uniform
    model would hinge on 1e-7 logit differences)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1,
                         eos_token_id=EOS, pad_token_id=PAD, initializer_range=0.2)
    hf = LlamaForCausalLM(config).eval()
    path = tmp_path_factory.mktemp("tiny_llama")
    hf.save_pretrained(path)
    return hf, CausalLM.from_hf(path).eval()


def prompts(lens=PROMPT_LENS, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, V, (n,), generator=g).tolist() for n in lens]


def left_padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(map(len, rows))
    ids = torch.tensor([[PAD] * (L - len(p)) + p for p in rows])
    mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in rows])
    return ids, mask


def hf_generated(out: torch.Tensor, prompt_len: int, eos) -> list[list[int]]:
    """transformers' output rows -> generated ids up to the first eos (eos and padding removed)."""
    eos = {eos} if isinstance(eos, int) else set(eos)
    rows = []
    for row in out[:, prompt_len:].tolist():
        cut = next((i for i, t in enumerate(row) if t in eos), len(row))
        rows.append(row[:cut])
    return rows


@pytest.mark.parametrize("eos", [EOS, EARLY_EOS])
def test_greedy_50_tokens_equal_hf_generate(models, eos):
    hf, lm = models
    rows = prompts()
    ids, mask = left_padded(rows)
    ref = hf_generated(hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=50,
                                   eos_token_id=eos, pad_token_id=PAD), ids.shape[1], eos)
    embeds, m = prompt_embeds(lm, rows)
    got = sample_generate(lm, embeds, m, 50, eos_ids=eos)
    assert got.tokens == ref
    if eos == EARLY_EOS:
        assert any(len(r) < 50 for r in ref)  # eos really ended rows


def hf_beam(hf, rows, eos, max_new_tokens=20, **options):
    ids, mask = left_padded(rows)
    out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=4, num_return_sequences=1,
                      max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=PAD, output_scores=True,
                      return_dict_in_generate=True, **options)
    return hf_generated(out.sequences, ids.shape[1], eos), out.sequences_scores.tolist()


@pytest.mark.parametrize("length_penalty,early_stopping", [(1.0, False), (0.0, False), (2.0, False), (1.0, True),
                                                            (2.0, "never"), (-0.5, False)])
def test_beam_search_equals_hf_generate(models, length_penalty, early_stopping):
    hf, lm = models
    rows = prompts()
    ref, ref_scores = hf_beam(hf, rows, EARLY_EOS, length_penalty=length_penalty, early_stopping=early_stopping)
    embeds, mask = prompt_embeds(lm, rows)
    got = beam_generate(lm, embeds, mask, 20, EARLY_EOS, beam_size=4, length_penalty=length_penalty,
                        early_stopping=early_stopping)
    assert [h[0][0] for h in got] == ref
    assert [h[0][1] for h in got] == pytest.approx(ref_scores, abs=1e-4)


def test_beam_nbest_equals_hf_num_return_sequences(models):
    hf, lm = models
    rows = prompts()
    ids, mask = left_padded(rows)
    out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=4, num_return_sequences=3,
                      max_new_tokens=20, eos_token_id=EARLY_EOS, pad_token_id=PAD, output_scores=True,
                      return_dict_in_generate=True)
    ref = hf_generated(out.sequences, ids.shape[1], EARLY_EOS)
    got = beam_generate(lm, *prompt_embeds(lm, rows), 20, EARLY_EOS, beam_size=4, nbest=3)
    assert [ids for hyps in got for ids, _ in hyps] == ref
    assert [s for hyps in got for _, s in hyps] == pytest.approx(out.sequences_scores.tolist(), abs=1e-4)


def test_length_penalty_changes_the_result_here(models):
    """The parity test above would catch a wrong length penalty: with this model and eos some
    prompts end early, and another penalty gives other sequences (and other scores)."""
    hf, lm = models
    rows = prompts()
    ref, _ = hf_beam(hf, rows, EARLY_EOS, length_penalty=1.0)
    assert any(len(r) < 20 for r in ref)
    embeds, mask = prompt_embeds(lm, rows)
    for wrong in (0.0, 2.0):
        got = beam_generate(lm, embeds, mask, 20, EARLY_EOS, beam_size=4, length_penalty=wrong)
        assert [h[0][0] for h in got] != ref


def test_beam_search_two_eos_ids_and_min_new_tokens(models):
    hf, lm = models
    rows = prompts()
    eos = [EARLY_EOS, 11]
    embeds, mask = prompt_embeds(lm, rows)
    for min_new in (0, 8):
        ref, ref_scores = hf_beam(hf, rows, eos, min_new_tokens=min_new)
        got = beam_generate(lm, embeds, mask, 20, eos, beam_size=4, min_new_tokens=min_new)
        assert [h[0][0] for h in got] == ref
        assert [h[0][1] for h in got] == pytest.approx(ref_scores, abs=1e-4)
    assert min(map(len, ref)) >= 8 and any(len(r) < 20 for r in ref)
    greedy_ref = hf_generated(hf.generate(input_ids=left_padded(rows)[0], attention_mask=left_padded(rows)[1],
                                          do_sample=False, max_new_tokens=20, min_new_tokens=8, eos_token_id=eos,
                                          pad_token_id=PAD), max(PROMPT_LENS), eos)
    assert sample_generate(lm, embeds, mask, 20, eos, min_new_tokens=8).tokens == greedy_ref


def test_sampling_with_top_k_1_is_greedy(models):
    _, lm = models
    embeds, mask = prompt_embeds(lm, prompts())
    greedy = sample_generate(lm, embeds, mask, 30, EARLY_EOS)
    g = torch.Generator().manual_seed(3)
    sampled = sample_generate(lm, embeds, mask, 30, EARLY_EOS, greedy=False, temperature=1.5, top_k=1, generator=g)
    assert sampled.tokens == greedy.tokens
    assert sampled.scores == pytest.approx(greedy.scores, abs=1e-5)


def chi_square_fits(samples: torch.Tensor, probs: torch.Tensor, level: float = 1e-3) -> bool:
    """Whether token counts fit `probs`: none where the probability is 0, and Pearson's
    statistic (cells expected < 5 pooled) below the chi-square quantile 1 - level."""
    counts = torch.bincount(samples, minlength=probs.numel()).double()
    if counts[probs == 0].sum() > 0:
        return False
    expected = probs.double() * samples.numel()
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big & (probs > 0)].sum()[None]])
    exp = torch.cat([expected[big], expected[~big & (probs > 0)].sum()[None]])
    keep = exp > 0
    stat = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    return stat < chi2.ppf(1 - level, int(keep.sum()) - 1)


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, None, 0.8), (1.3, 10, None), (1.0, 20, 0.9)])
def test_first_sampled_token_follows_the_warped_distribution(models, temperature, top_k, top_p):
    hf, lm = models
    n = 4000
    row = prompts((6,), seed=7)[0]
    ids = torch.tensor([row])
    with torch.no_grad():
        scores = hf(ids).logits[:, -1].float()
    scores = TemperatureLogitsWarper(temperature)(ids, scores)
    if top_k is not None:
        scores = TopKLogitsWarper(top_k)(ids, scores)
    if top_p is not None:
        scores = TopPLogitsWarper(top_p)(ids, scores)
    probs = scores.softmax(-1)[0]
    embeds, mask = prompt_embeds(lm, [row] * n)

    def first_tokens(**options):
        g = torch.Generator().manual_seed(11)
        out = sample_generate(lm, embeds, mask, 1, EOS, greedy=False, generator=g, **options)
        return torch.tensor([t[0] if t else EOS for t in out.tokens])

    assert chi_square_fits(first_tokens(temperature=temperature, top_k=top_k, top_p=top_p), probs)
    # planted faults, rejected by the same bound: a filter skipped, the temperature ignored
    if top_p is not None:
        assert not chi_square_fits(first_tokens(temperature=temperature, top_k=top_k), probs)
    assert not chi_square_fits(first_tokens(temperature=1.0 if temperature != 1.0 else 2.0, top_k=top_k, top_p=top_p),
                               probs)


def test_right_padded_embeddings_give_what_the_id_prompts_give(models):
    """Prompt embeddings in another padding layout (right-padded, as a speech-LLM's spliced
    prompts may come) generate what the left-padded token-id prompts generate."""
    _, lm = models
    rows = prompts()
    L = max(map(len, rows))
    ids = torch.tensor([p + [PAD] * (L - len(p)) for p in rows])
    mask = ids.new_tensor([[1] * len(p) + [0] * (L - len(p)) for p in rows]).bool()
    with torch.no_grad():
        right = lm.embed(ids)
    for method in ("greedy", "beam"):
        search = CausalLMGenerate(method=method, max_new_tokens=20, eos_ids=EARLY_EOS)
        assert search(lm, right, mask) == search.from_prompts(lm, rows)
    left, left_mask = prompt_embeds(lm, rows)
    assert sample_generate(lm, right, mask, 20, EARLY_EOS).tokens == sample_generate(lm, left, left_mask, 20,
                                                                                    EARLY_EOS).tokens


def test_spliced_embeddings_batched_equal_one_at_a_time(models):
    """Prompts that are not table embeddings (a speech-LLM's audio frames spliced between
    text), padded on either side: each prompt's result in the batch is its result alone."""
    _, lm = models
    g = torch.Generator().manual_seed(5)
    rows = prompts((4, 8, 6))
    with torch.no_grad():
        parts = [torch.cat([lm.embed(torch.tensor(p[:2])), torch.randn(n, 64, generator=g),
                            lm.embed(torch.tensor(p[2:]))]) for p, n in zip(rows, (3, 5, 1))]
    L = max(len(x) for x in parts)
    embeds = torch.zeros(len(parts), L, 64)
    mask = torch.zeros(len(parts), L, dtype=torch.bool)
    for i, x in enumerate(parts):
        start = 0 if i == 1 else L - len(x)  # row 1 right-padded, the others left-padded
        embeds[i, start:start + len(x)], mask[i, start:start + len(x)] = x, True
    for method in ("greedy", "beam"):
        search = CausalLMGenerate(method=method, max_new_tokens=15, eos_ids=EARLY_EOS)
        alone = [search.generate(lm, x[None], None) for x in parts]
        together = search.generate(lm, embeds, mask)
        assert together.tokens == [a.tokens[0] for a in alone]
        assert together.scores == pytest.approx([a.scores[0] for a in alone], abs=1e-4)


def test_hydra_node_and_finished_rows_leave_the_batch(models):
    _, lm = models
    search = hydra.utils.instantiate({"_target_": "speechlm.search.causal_lm_generate.CausalLMGenerate",
                                      "method": "greedy", "max_new_tokens": 50, "eos_ids": EARLY_EOS})
    stepped = []
    real_step = lm.step

    class Counting:  # the LM, counting the rows of each step
        def __getattr__(self, name):
            return getattr(lm, name)

        def step(self, tokens, state):
            stepped.append(tokens.shape[0])
            return real_step(tokens, state)

    rows = prompts()
    out = search.from_prompts(Counting(), rows)
    ended = sum(len(t) < 50 for t in out)
    assert ended > 0
    assert stepped == sorted(stepped, reverse=True) and stepped[-1] < len(rows)
    assert sum(stepped) < len(rows) * 49


def test_bad_input_is_refused(models):
    _, lm = models
    embeds, mask = prompt_embeds(lm, prompts((3, 4)))
    mask[0] = False
    with pytest.raises(ValueError, match=r"prompts \[0\] have no real position"):
        sample_generate(lm, embeds, mask, 5, EOS)
    with pytest.raises(ValueError, match="method"):
        CausalLMGenerate(method="nucleus")
    with pytest.raises(ValueError, match="mask must be"):
        beam_generate(lm, embeds, mask[:, :2], 5, EOS)
