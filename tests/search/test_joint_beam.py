"""The batched joint CTC/attention beam search against ESPnet's `BatchBeamSearch`.

A small random ESPnet `TransformerDecoder` and `CTC` (V=12, d=32, 2 blocks) on random
encoder output for three utterances of different lengths; our decoder holds the same
weights (`espnet_decoder_state_dict_to_ours`). ESPnet searches each utterance alone, built
as `espnet2/bin/asr_inference.py` builds it; ours searches all three in one batch. Every
ended hypothesis must agree: same tokens in the same order, scores within 1e-4.

Random networks emit junk for ever, so the output layer is biased toward <eos> (the
hypotheses end after a few tokens) and away from <blank> (a trained decoder never predicts
it), and the CTC head toward blank (CTC posteriors are mostly blank).
"""
from __future__ import annotations

import pytest
import torch

from espnet.nets.batch_beam_search import BatchBeamSearch
from espnet.nets.scorers.ctc import CTCPrefixScorer as EspnetCTCPrefixScorer
from espnet.nets.scorers.length_bonus import LengthBonus
from espnet2.asr.ctc import CTC as EspnetCTC
from espnet2.asr.decoder.transformer_decoder import TransformerDecoder as EspnetDecoder

from speechlm.decoders.transformer import TransformerDecoder
from speechlm.interop.espnet_asr import espnet_decoder_state_dict_to_ours
from speechlm.search.joint_beam import Hypothesis, end_detect, joint_beam_search

V, D, BLANK = 12, 32, 0
SOS = EOS = V - 1
LENGTHS = (15, 20, 9)  # not sorted: the search reorders utterances internally
TOLERANCE = 1e-4
HOPELESS = -1e9  # ESPnet's logzero (-1e10) times a CTC weight


def build_models(seed: int = 0, eos_bias: float = 1.5):
    """(ESPnet decoder, ESPnet CTC, our decoder with the same weights), in eval mode."""
    torch.manual_seed(seed)
    theirs = EspnetDecoder(V, D, attention_heads=4, linear_units=64, num_blocks=2).eval()
    ctc = EspnetCTC(V, D).eval()
    with torch.no_grad():
        theirs.output_layer.bias[EOS] += eos_bias
        theirs.output_layer.bias[BLANK] -= 5.0
        ctc.ctc_lo.bias[BLANK] += 2.0
    ours = TransformerDecoder(V, D, attention_heads=4, linear_units=64, num_blocks=2).eval()
    ours.load_state_dict(espnet_decoder_state_dict_to_ours(theirs.state_dict()), strict=True)
    return theirs, ctc, ours


def random_memory(seed: int = 1, lengths=LENGTHS):
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(len(lengths), max(lengths), D, generator=g)
    for b, n in enumerate(lengths):
        memory[b, n:] = 0.0  # padding must not matter
    return memory, torch.tensor(lengths)


def espnet_search(decoder, ctc, memory, lengths, beam_size, ctc_weight, penalty,
                  maxlenratio=0.0, minlenratio=0.0):
    """ESPnet's n-best lists, one utterance at a time, as asr_inference.py decodes."""
    search = BatchBeamSearch(
        scorers={"decoder": decoder, "ctc": EspnetCTCPrefixScorer(ctc, EOS), "length_bonus": LengthBonus(V)},
        weights={"decoder": 1.0 - ctc_weight, "ctc": ctc_weight, "length_bonus": penalty},
        beam_size=beam_size, vocab_size=V, sos=SOS, eos=EOS, token_list=None,
        pre_beam_score_key=None if ctc_weight == 1.0 else "full",
    ).eval()
    with torch.no_grad():
        return [search(x=memory[b, :n], maxlenratio=maxlenratio, minlenratio=minlenratio)
                for b, n in enumerate(lengths.tolist())]


def strip(yseq: torch.Tensor) -> list[int]:
    """ESPnet's yseq without <sos> and trailing <eos> (two after an <eos> on the last step)."""
    tokens = yseq.tolist()[1:]
    while tokens and tokens[-1] == EOS:
        tokens.pop()
    return tokens


def assert_same(ref, ours: list[list[Hypothesis]], ctc_weight: float):
    """Same n-best lists. ESPnet's hopeless hypotheses (CTC probability zero, which it
    writes as -1e10, e.g. more tokens than frames left) are left out: we never keep them."""
    assert len(ref) == len(ours)
    for b, (ref_hyps, our_hyps) in enumerate(zip(ref, ours)):
        ref_hyps = [h for h in ref_hyps if float(h.score) > HOPELESS]
        assert [strip(h.yseq) for h in ref_hyps] == [h.tokens for h in our_hyps], f"utterance {b}"
        for h_ref, h in zip(ref_hyps, our_hyps):
            assert abs(float(h_ref.score) - h.score) < TOLERANCE
            if ctc_weight < 1.0:
                assert abs(float(h_ref.scores["decoder"]) - h.scores["decoder"]) < TOLERANCE
            if ctc_weight > 0.0:
                assert abs(float(h_ref.scores["ctc"]) - h.scores["ctc"]) < TOLERANCE


def run_both(beam_size, ctc_weight, penalty, seed=0, eos_bias=1.5, lengths=LENGTHS, **lens):
    theirs, ctc, ours = build_models(seed, eos_bias)
    memory, memory_lens = random_memory(seed + 1, lengths)
    ref = espnet_search(theirs, ctc, memory, memory_lens, beam_size, ctc_weight, penalty, **lens)
    with torch.no_grad():
        log_probs = ctc.log_softmax(memory)
    got = joint_beam_search(ours, log_probs, memory, memory_lens, SOS, EOS, beam_size=beam_size,
                            ctc_weight=ctc_weight, length_penalty=penalty, nbest=10**6, **lens)
    return ref, got


@pytest.mark.parametrize("penalty", [0.0, 0.5])
@pytest.mark.parametrize("ctc_weight", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("beam_size", [1, 4, 10])
def test_matches_espnet_batch_beam_search(beam_size, ctc_weight, penalty):
    ref, got = run_both(beam_size, ctc_weight, penalty)
    assert_same(ref, got, ctc_weight)
    assert all(got), "every utterance ends some hypothesis"


@pytest.mark.parametrize("ctc_weight, eos_bias", [(0.0, 1.0), (0.3, -1.0)])
def test_maxlen_appends_eos_like_espnet(ctc_weight, eos_bias):
    """maxlenratio 0.3: hypotheses are cut at maxlen, where ESPnet appends <eos> to every
    running one (also to one that has just chosen <eos>: it then ends in two)."""
    ref, got = run_both(4, ctc_weight, 0.0, eos_bias=eos_bias, maxlenratio=0.3)
    assert_same(ref, got, ctc_weight)
    assert any(len(h.tokens) == int(0.3 * n) for hyps, n in zip(got, LENGTHS) for h in hyps)
    if ctc_weight == 0.0:
        assert any(h.yseq.tolist()[-2:] == [EOS, EOS] for hyps in ref for h in hyps)


def test_minlen_retry_like_espnet():
    """Beam 1 and a decoder sure of <eos>: the only hypothesis ends at once, before minlen,
    so nothing ends and ESPnet searches again with minlenratio 0.4, 0.3, ... until it does."""
    ref, got = run_both(1, 0.3, 0.0, eos_bias=10.0, minlenratio=0.5)
    assert_same(ref, got, 0.3)
    assert all(len(hyps) == 1 and len(hyps[0].tokens) < int(0.5 * n) for hyps, n in zip(got, LENGTHS))


def test_nothing_when_minlen_is_never_reached_like_espnet():
    """minlenratio 0.05 (< 0.1, so no retry): the 20-frame utterance needs one token, the
    shorter ones none; ESPnet and we return nothing for it."""
    ref, got = run_both(1, 0.3, 0.0, eos_bias=10.0, minlenratio=0.05)
    assert_same(ref, got, 0.3)
    assert [len(h) for h in got] == [0 if int(0.05 * n) > 0 else 1 for n in LENGTHS] == [1, 0, 1]


@pytest.mark.parametrize("beam_size", [1, 4])
def test_maxlen_and_minlen_together_like_espnet(beam_size):
    """minlen above maxlen: nothing may end until the retries bring minlen below maxlen."""
    ref, got = run_both(beam_size, 0.3, 0.0, maxlenratio=0.2, minlenratio=0.5)
    assert_same(ref, got, 0.3)
    assert all(got)


def test_nbest_is_a_prefix_of_the_sorted_list():
    _, ctc, ours = build_models()
    memory, memory_lens = random_memory()
    log_probs = ctc.log_softmax(memory).detach()
    every = joint_beam_search(ours, log_probs, memory, memory_lens, SOS, EOS, beam_size=4, nbest=10**6)
    best2 = joint_beam_search(ours, log_probs, memory, memory_lens, SOS, EOS, beam_size=4, nbest=2)
    for a, b in zip(every, best2):
        assert [h.tokens for h in a[:2]] == [h.tokens for h in b]
        assert [h.score for h in a] == sorted((h.score for h in a), reverse=True)


def test_batching_does_not_change_results():
    """An utterance decoded alone and in a batch (different padding) gives the same list."""
    _, ctc, ours = build_models()
    memory, memory_lens = random_memory()
    log_probs = ctc.log_softmax(memory).detach()
    batch = joint_beam_search(ours, log_probs, memory, memory_lens, SOS, EOS, beam_size=4, nbest=10)
    for b, n in enumerate(LENGTHS):
        alone = joint_beam_search(ours, log_probs[b:b + 1, :n], memory[b:b + 1, :n], memory_lens[b:b + 1],
                                  SOS, EOS, beam_size=4, nbest=10)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in batch[b]]
        assert all(abs(x.score - y.score) < TOLERANCE for x, y in zip(alone, batch[b]))


def test_ctc_only_needs_no_decoder_and_attention_only_no_ctc():
    _, ctc, ours = build_models()
    memory, memory_lens = random_memory()
    log_probs = ctc.log_softmax(memory).detach()
    ctc_only = joint_beam_search(None, log_probs, None, memory_lens, SOS, EOS, beam_size=4, ctc_weight=1.0)
    att_only = joint_beam_search(ours, None, memory, memory_lens, SOS, EOS, beam_size=4, ctc_weight=0.0)
    assert all(set(h.scores) == {"ctc"} for hyps in ctc_only for h in hyps)
    assert all(set(h.scores) == {"decoder"} for hyps in att_only for h in hyps)
    with pytest.raises(ValueError):
        joint_beam_search(ours, None, memory, memory_lens, SOS, EOS, ctc_weight=0.3)


def test_end_detect_matches_espnet():
    from espnet.nets.e2e_asr_common import end_detect as espnet_end_detect

    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        ended = [(float(-30 * torch.rand(1, generator=g)), int(torch.randint(2, 8, (1,), generator=g)))
                 for _ in range(int(torch.randint(0, 8, (1,), generator=g)))]
        i = int(torch.randint(2, 9, (1,), generator=g))
        assert end_detect(ended, i) == espnet_end_detect([{"score": s, "yseq": [0] * n} for s, n in ended], i)


# --- beyond ESPnet: forced prefixes and logit filters (prompted decoders such as Whisper) ---

def greedy_teacher_forced(decoder, memory, length, prefix, maxlen):
    """Greedy decoding by full teacher-forced passes: the argmax after `prefix`, again and
    again, until <eos> or maxlen tokens."""
    ys = list(prefix)
    out = []
    with torch.no_grad():
        for _ in range(maxlen):
            logits = decoder(memory[None, :length], torch.tensor([length]), torch.tensor([ys]),
                             torch.tensor([len(ys)]))
            token = int(logits[0, -1].argmax())
            if token == EOS:
                break
            ys.append(token)
            out.append(token)
    return out


def test_forced_prefix_continues_after_it():
    _, _, ours = build_models()
    memory, lengths = random_memory()
    prefix = [SOS, 3, 5]
    hyps = joint_beam_search(ours, None, memory, lengths, SOS, EOS, beam_size=1, ctc_weight=0.0, prefix=prefix)
    for b, n in enumerate(lengths.tolist()):
        expected = greedy_teacher_forced(ours, memory[b], n, prefix, maxlen=n)
        assert hyps[b][0].tokens == expected, b
    plain = joint_beam_search(ours, None, memory, lengths, SOS, EOS, beam_size=1, ctc_weight=0.0)
    assert [h[0].tokens for h in plain] != [h[0].tokens for h in hyps]  # the prefix conditions the rest
    assert [h[0].tokens for h in plain] == [h[0].tokens for h in joint_beam_search(
        ours, None, memory, lengths, SOS, EOS, beam_size=1, ctc_weight=0.0, prefix=[SOS])]


@pytest.mark.parametrize("ctc_weight", [0.0, 0.3])
def test_suppressed_tokens_never_appear(ctc_weight):
    from speechlm.search.filters import SuppressAtStart, SuppressTokens

    theirs, ctc, ours = build_models(eos_bias=0.0)
    memory, lengths = random_memory()
    logp = torch.log_softmax(ctc.ctc_lo(memory), dim=-1)
    plain = joint_beam_search(ours, logp, memory, lengths, SOS, EOS, beam_size=4, ctc_weight=ctc_weight, nbest=4)
    seen = [t for hyps in plain for h in hyps for t in h.tokens]
    assert seen
    common = max(set(seen), key=seen.count)
    first = plain[0][0].tokens[0]
    filtered = joint_beam_search(ours, logp, memory, lengths, SOS, EOS, beam_size=4, ctc_weight=ctc_weight, nbest=4,
                                 logit_filters=[SuppressTokens([common]), SuppressAtStart([first])])
    for hyps in filtered:
        assert hyps
        for h in hyps:
            assert common not in h.tokens
            assert not h.tokens or h.tokens[0] != first
