"""Decoding: CTC greedy and prefix beam search, vectorised CTC prefix scoring, the joint
CTC/attention beam search batched over utterances and hypotheses (with forced prefixes and
logit filters), and transducer greedy, modified beam (both batched) and Graves beam search.

The classes (`JointCTCAttentionSearch`, `CTCGreedySearch`, `TransducerGreedySearch`,
`TransducerBeamSearch`) are the searches `decode` and `transcribe` build from config
(conf/search/): `search(model, encoder_output) -> best token ids per utterance`."""
from speechlm.search.ctc_greedy import CTCGreedyResult, CTCGreedySearch, ctc_greedy_search
from speechlm.search.ctc_prefix_beam import CTCHypothesis, ctc_prefix_beam_search, ctc_prefix_beam_search_batch
from speechlm.search.ctc_prefix_score import CTCPrefixCandidates, CTCPrefixScorer, CTCPrefixState
from speechlm.search.joint_beam import Hypothesis, JointCTCAttentionSearch, joint_beam_search
from speechlm.search.transducer_beam import TransducerBeamSearch, graves_beam_search, modified_beam_search
from speechlm.search.transducer_greedy import TransducerGreedySearch, TransducerHypothesis, transducer_greedy_search

__all__ = [
    "CTCGreedySearch",
    "JointCTCAttentionSearch",
    "TransducerBeamSearch",
    "TransducerGreedySearch",
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
