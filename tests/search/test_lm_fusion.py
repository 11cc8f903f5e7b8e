"""Shallow fusion of a language model in the beam searches.

Joint CTC/attention: the batched search with an LM equals ESPnet's `BatchBeamSearch` with
scorers decoder + ctc + lm + length_bonus (as `espnet2/bin/asr_inference.py` builds it,
weight `lm_weight`), one utterance at a time: same n-best tokens, total and per-scorer
scores within 1e-4. ESPnet's LM is its own random TransformerLM / SequentialRNNLM; ours
holds the same weights (`speechlm.interop.espnet_lm`).

Transducer: with lm_weight 0 the results are today's exactly; batched equals one at a time;
every hypothesis's LM score is the LM's own log-probability of its tokens; an LM sure of
one token pulls the output toward it (and, with the weight's sign flipped, away).
"""
from __future__ import annotations

import math

import pytest
import torch

from espnet.nets.batch_beam_search import BatchBeamSearch
from espnet.nets.scorers.ctc import CTCPrefixScorer as EspnetCTCPrefixScorer
from espnet.nets.scorers.length_bonus import LengthBonus
from espnet2.lm.seq_rnn_lm import SequentialRNNLM as EspnetRNNLM
from espnet2.lm.transformer_lm import TransformerLM as EspnetTransformerLM

from search.test_joint_beam import EOS, SOS, V, assert_same, build_models, random_memory
from search.test_transducer_search import random_model
from speechlm.interop.espnet_lm import espnet_lm_state_dict_to_ours
from speechlm.models.lm import LSTMLM, TransformerLM
from speechlm.search.joint_beam import JointCTCAttentionSearch, joint_beam_search
from speechlm.search.lm_fusion import PrefixLogProbs, check_lm_matches
from speechlm.search.transducer_beam import graves_beam_search, modified_beam_search

TOLERANCE = 1e-4
LM_SIZES = {"transformer": dict(embed_unit=16, att_unit=24, head=2, unit=32, layer=2),
            "lstm": dict(unit=16, nlayers=2)}


def build_lms(kind: str, vocab: int = V, seed: int = 5):
    """(ESPnet's random LM, ours with the same weights), eval mode, peaky outputs."""
    torch.manual_seed(seed)
    if kind == "transformer":
        theirs = EspnetTransformerLM(vocab, **LM_SIZES[kind], dropout_rate=0.0)
        ours = TransformerLM(vocab, {"sos": vocab - 1, "eos": vocab - 1}, **LM_SIZES[kind], dropout_rate=0.0)
    else:
        theirs = EspnetRNNLM(vocab, **LM_SIZES[kind], rnn_type="lstm")
        ours = LSTMLM(vocab, {"sos": vocab - 1, "eos": vocab - 1}, **LM_SIZES[kind])
    with torch.no_grad():
        theirs.decoder.weight.mul_(4.0)  # a random LM is near uniform; make it matter
    ours.load_state_dict(espnet_lm_state_dict_to_ours({f"lm.{k}": v for k, v in theirs.state_dict().items()}))
    return theirs.eval(), ours.eval()


def espnet_search_with_lm(decoder, ctc, lm, memory, lengths, beam_size, ctc_weight, lm_weight, penalty):
    scorers = {"decoder": decoder, "ctc": EspnetCTCPrefixScorer(ctc, EOS), "lm": lm, "length_bonus": LengthBonus(V)}
    weights = {"decoder": 1.0 - ctc_weight, "ctc": ctc_weight, "lm": lm_weight, "length_bonus": penalty}
    if ctc_weight == 0.0:
        del scorers["ctc"], weights["ctc"]
    search = BatchBeamSearch(scorers=scorers, weights=weights, beam_size=beam_size, vocab_size=V, sos=SOS, eos=EOS,
                             token_list=None, pre_beam_score_key=None if ctc_weight == 1.0 else "full").eval()
    with torch.no_grad():
        return [search(x=memory[b, :n], maxlenratio=0.0, minlenratio=0.0) for b, n in enumerate(lengths.tolist())]


@pytest.mark.parametrize("kind, beam_size, ctc_weight, lm_weight, penalty", [
    ("transformer", 4, 0.3, 0.3, 0.0),
    ("transformer", 4, 0.3, 1.0, 0.5),
    ("transformer", 10, 0.0, 0.5, 0.0),
    ("lstm", 4, 0.3, 0.7, 0.0),
    ("lstm", 2, 0.5, 1.5, 0.0),
])
def test_joint_search_with_lm_matches_espnet(kind, beam_size, ctc_weight, lm_weight, penalty):
    theirs_dec, ctc, ours_dec = build_models(seed=0, eos_bias=1.5)
    theirs_lm, ours_lm = build_lms(kind)
    memory, lens = random_memory(1)
    ref = espnet_search_with_lm(theirs_dec, ctc, theirs_lm, memory, lens, beam_size, ctc_weight, lm_weight, penalty)
    with torch.no_grad():
        log_probs = ctc.log_softmax(memory)
    got = joint_beam_search(ours_dec, log_probs, memory, lens, SOS, EOS, beam_size=beam_size, ctc_weight=ctc_weight,
                            length_penalty=penalty, nbest=10**6, lm=ours_lm, lm_weight=lm_weight)
    assert_same(ref, got, ctc_weight)
    for ref_hyps, our_hyps in zip(ref, got):
        kept = [h for h in ref_hyps if float(h.score) > -1e9]
        for h_ref, h in zip(kept, our_hyps):
            assert abs(float(h_ref.scores["lm"]) - h.scores["lm"]) < TOLERANCE
    without = joint_beam_search(ours_dec, log_probs, memory, lens, SOS, EOS, beam_size=beam_size,
                                ctc_weight=ctc_weight, length_penalty=penalty, nbest=10**6)
    assert [[h.tokens for h in u] for u in got] != [[h.tokens for h in u] for u in without], "the LM changed nothing"


def test_joint_search_lm_weight_zero_is_no_lm():
    _, ctc, dec = build_models()
    _, lm = build_lms("transformer")
    memory, lens = random_memory(1)
    log_probs = ctc.log_softmax(memory).detach()
    plain = joint_beam_search(dec, log_probs, memory, lens, SOS, EOS, beam_size=4, nbest=10)
    zero = joint_beam_search(dec, log_probs, memory, lens, SOS, EOS, beam_size=4, nbest=10, lm=lm, lm_weight=0.0)
    assert [[(h.tokens, h.score) for h in u] for u in plain] == [[(h.tokens, h.score) for h in u] for u in zero]


def test_lm_with_another_vocabulary_or_tokenizer_is_refused():
    _, lm = build_lms("transformer", vocab=V + 1)
    with pytest.raises(ValueError, match="the LM has 13 tokens, the ASR model 12"):
        check_lm_matches(lm, None, None, V, "lm.ckpt")
    _, lm = build_lms("transformer")
    with pytest.raises(ValueError, match="lm.ckpt: the LM's tokenizer differs .*tokens"):
        check_lm_matches(lm, {"_target_": "W", "tokens": ["a", "b"]}, {"_target_": "W", "tokens": ["a", "c"]}, V,
                         "lm.ckpt")
    with pytest.raises(ValueError, match="needs an LM"):
        JointCTCAttentionSearch(lm_weight=0.3)


# --- transducer --------------------------------------------------------------------------

TV = 5  # transducer vocabulary: blank 0, tokens 1..3, sos/eos 4 (never emitted by the joiner)


def transducer_case(seed: int = 0):
    pred, joiner = random_model("lstm", seed)
    # random_model's vocabulary is 4; widen the joiner's output by an sos/eos column it never picks
    wide = torch.nn.Linear(joiner.output.in_features, TV)
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[:4] = joiner.output.weight
        wide.bias.fill_(-1e4)
        wide.bias[:4] = joiner.output.bias
    joiner.output = wide  # the predictor never sees id 4 (never emitted)
    g = torch.Generator().manual_seed(seed + 10)
    enc = torch.randn(3, 9, 6, generator=g)
    return pred, joiner, enc, torch.tensor([9, 5, 7])


def random_lm(seed: int = 3):
    torch.manual_seed(seed)
    lm = TransformerLM(TV, {"sos": TV - 1, "eos": TV - 1}, embed_unit=8, att_unit=8, head=2, unit=16, layer=1,
                       dropout_rate=0.0).eval()
    with torch.no_grad():
        lm.decoder.weight.mul_(4.0)
    return lm


def lm_log_prob(lm, tokens: list[int]) -> float:
    """log p_LM(tokens) without eos, by a full teacher-forced pass."""
    if not tokens:
        return 0.0
    with torch.no_grad():
        logits = lm.logits(torch.tensor([[lm.sos] + tokens[:-1]])).log_softmax(-1)[0]
    return float(logits.gather(1, torch.tensor(tokens)[:, None]).sum())


@pytest.mark.parametrize("search", [modified_beam_search, graves_beam_search])
def test_transducer_lm_weight_zero_is_todays_search(search):
    pred, joiner, enc, lens = transducer_case()
    plain = search(pred, joiner, enc, lens, beam_size=3)
    zero = search(pred, joiner, enc, lens, beam_size=3, lm=random_lm(), lm_weight=0.0)
    assert [[(h.tokens, h.score, h.timestamps) for h in u] for u in plain] == \
           [[(h.tokens, h.score, h.timestamps) for h in u] for u in zero]


def test_modified_beam_with_lm_batched_equals_one_at_a_time_and_scores_add_up():
    pred, joiner, enc, lens = transducer_case()
    lm = random_lm()
    batch = modified_beam_search(pred, joiner, enc, lens, beam_size=3, lm=lm, lm_weight=0.6)
    without = modified_beam_search(pred, joiner, enc, lens, beam_size=3)
    assert [[h.tokens for h in u] for u in batch] != [[h.tokens for h in u] for u in without]
    for i, n in enumerate(lens.tolist()):
        alone = modified_beam_search(pred, joiner, enc[i:i + 1, :n], lens[i:i + 1], beam_size=3, lm=lm,
                                     lm_weight=0.6)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in batch[i]]
        assert all(abs(a.score - b.score) < 1e-5 for a, b in zip(alone, batch[i]))
        for h in batch[i]:  # the LM part of each score is the LM's own log p(tokens)
            assert abs(h.lm_score - lm_log_prob(lm, h.tokens)) < 1e-4


@pytest.mark.parametrize("search", [modified_beam_search, graves_beam_search])
def test_transducer_lm_sure_of_a_token_pulls_the_output_toward_it(search):
    """An LM that gives token 2 almost all its mass: fused with weight +1 the best hypothesis
    holds more 2s than without the LM (a sign flipped in the fusion would give fewer), with
    weight -1 no more."""
    pred, joiner, enc, lens = transducer_case()
    lm = random_lm()
    with torch.no_grad():
        lm.decoder.weight.zero_()
        lm.decoder.bias.fill_(0.0)
        lm.decoder.bias[2] = 8.0
    count = lambda hyps: sum(u[0].tokens.count(2) for u in hyps)  # noqa: E731
    base = count(search(pred, joiner, enc, lens, beam_size=3))
    assert count(search(pred, joiner, enc, lens, beam_size=3, lm=lm, lm_weight=1.0)) > base
    assert count(search(pred, joiner, enc, lens, beam_size=3, lm=lm, lm_weight=-1.0)) <= base


class _StepOnly:
    """The LM without its teacher-forced `logits`: replay falls back to `step`."""

    def __init__(self, lm):
        self.lm, self.sos = lm, lm.sos
        self.init_state, self.step = lm.init_state, lm.step


def test_prefix_log_probs_replay_matches_single_sequence_steps():
    lm = random_lm()
    prefixes = [(), (1,), (3, 2, 1), (2, 2)]
    batched = PrefixLogProbs(lm, torch.device("cpu"))(prefixes)  # one padded logits pass
    stepped = PrefixLogProbs(_StepOnly(lm), torch.device("cpu"))(prefixes)  # padded step-by-step
    for p, a, b in zip(prefixes, batched, stepped):
        with torch.no_grad():  # reference: this sequence alone, step by step, no padding
            state = lm.init_state(1, "cpu")
            ref, state = lm.step(torch.tensor([lm.sos]), state)
            for t in p:
                ref, state = lm.step(torch.tensor([t]), state)
        assert torch.allclose(a, ref[0], atol=1e-5) and torch.allclose(b, ref[0], atol=1e-5)
    assert math.isclose(float(batched[0].exp().sum()), 1.0, rel_tol=1e-5)
