"""CTC prefix beam search (Graves 2012, ch. 7; Hannun et al. 2014, "First-pass large
vocabulary continuous speech recognition using bi-directional recurrent DNNs").

Greedy decoding picks the best *path*; a label sequence, though, has many paths (alignments)
and its probability is their sum. Prefix beam search keeps the `beam_size` most probable
label prefixes frame by frame, each with two log-probabilities: of the paths so far that
end in blank, and of those that end in the prefix's last token. The split matters for
repeats: "a" followed by another "a" is a new token only after a blank.

Per utterance and in plain Python over the kept prefixes: with V small after pruning, this
is fast on a CPU and the whole algorithm fits on a screen. With a beam large enough to keep
every prefix the scores are exact label-sequence probabilities.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import torch
from torch import Tensor

NEG_INF = float("-inf")


@dataclass
class CTCHypothesis:
    """A label sequence and its log-probability, summed over the alignments the beam kept."""

    tokens: list[int]
    score: float


def log_add(a: float, b: float) -> float:
    """log(exp(a) + exp(b)), exact at -inf."""
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


def candidate_tokens(
    log_probs: Tensor, blank: int, top_k: int | None, min_log_prob: float | None
) -> list[list[int]]:
    """Per frame, the non-blank tokens worth extending a prefix with. log_probs: (T, V)."""
    allowed = torch.ones_like(log_probs, dtype=torch.bool)
    allowed[:, blank] = False
    if top_k is not None and top_k < log_probs.size(1) - 1:
        scores = log_probs.masked_fill(~allowed, NEG_INF)
        keep = torch.zeros_like(allowed)
        keep.scatter_(1, scores.topk(top_k, dim=1).indices, True)
        allowed &= keep
    if min_log_prob is not None:
        allowed &= log_probs >= min_log_prob
    return [row.nonzero().squeeze(1).tolist() for row in allowed]


@torch.no_grad()
def ctc_prefix_beam_search(
    log_probs: Tensor,
    beam_size: int = 10,
    blank: int = 0,
    token_top_k: int | None = None,
    token_min_log_prob: float | None = None,
    nbest: int | None = None,
) -> list[CTCHypothesis]:
    """Decode one utterance.

    log_probs: (T, V) CTC log-posteriors of the valid frames. token_top_k: extend prefixes
    only with each frame's k most likely non-blank tokens; token_min_log_prob: and only with
    tokens at least this likely. Returns up to `nbest` (default beam_size) hypotheses, best
    first.
    """
    frames = log_probs.detach().float().cpu()
    candidates = candidate_tokens(frames, blank, token_top_k, token_min_log_prob)
    # prefix -> (log P(paths ending in blank), log P(paths ending in the last token))
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}
    for frame, tokens in zip(frames.tolist(), candidates):
        grown: dict[tuple[int, ...], tuple[float, float]] = {}
        for prefix, (p_blank, p_token) in beams.items():
            p_total = log_add(p_blank, p_token)
            # The prefix stays as it is: a blank, or its last token held for another frame.
            b, nb = grown.get(prefix, (NEG_INF, NEG_INF))
            b = log_add(b, p_total + frame[blank])
            if prefix:
                nb = log_add(nb, p_token + frame[prefix[-1]])
            grown[prefix] = (b, nb)
            # The prefix grows by one token; repeating the last token needs a blank between.
            for c in tokens:
                p_before = p_blank if prefix and c == prefix[-1] else p_total
                b, nb = grown.get(prefix + (c,), (NEG_INF, NEG_INF))
                grown[prefix + (c,)] = (b, log_add(nb, p_before + frame[c]))
        beams = dict(heapq.nlargest(beam_size, grown.items(), key=lambda kv: log_add(*kv[1])))

    ranked = sorted(((log_add(*p), prefix) for prefix, p in beams.items()), reverse=True)
    return [CTCHypothesis(list(prefix), score) for score, prefix in ranked[: nbest or beam_size]]


def ctc_prefix_beam_search_batch(
    log_probs: Tensor, lengths: Tensor | None = None, **kwargs
) -> list[list[CTCHypothesis]]:
    """`ctc_prefix_beam_search` for each utterance of a padded batch (B, T, V)."""
    B, T, _ = log_probs.shape
    lengths = [T] * B if lengths is None else torch.as_tensor(lengths).tolist()
    return [ctc_prefix_beam_search(log_probs[b, : lengths[b]], **kwargs) for b in range(B)]
