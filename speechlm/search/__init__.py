"""Decoding: CTC greedy and prefix beam search, vectorised CTC prefix scoring, the joint
CTC/attention beam search batched over utterances and hypotheses, and transducer greedy,
modified beam (both batched) and Graves beam search."""
from speechlm.search.ctc_greedy import CTCGreedyResult, ctc_greedy_search
from speechlm.search.ctc_prefix_beam import CTCHypothesis, ctc_prefix_beam_search, ctc_prefix_beam_search_batch
from speechlm.search.ctc_prefix_score import CTCPrefixCandidates, CTCPrefixScorer, CTCPrefixState
from speechlm.search.joint_beam import Hypothesis, joint_beam_search
from speechlm.search.transducer_beam import graves_beam_search, modified_beam_search
from speechlm.search.transducer_greedy import TransducerHypothesis, transducer_greedy_search

__all__ = [
    "CTCGreedyResult",
    "ctc_greedy_search",
    "CTCHypothesis",
    "ctc_prefix_beam_search",
    "ctc_prefix_beam_search_batch",
    "CTCPrefixCandidates",
    "CTCPrefixScorer",
    "CTCPrefixState",
    "Hypothesis",
    "joint_beam_search",
    "TransducerHypothesis",
    "transducer_greedy_search",
    "modified_beam_search",
    "graves_beam_search",
]
