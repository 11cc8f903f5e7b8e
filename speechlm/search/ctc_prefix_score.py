"""Vectorised CTC prefix scoring for batched beam search (joint CTC/attention decoding).

A label-synchronous beam search (the attention decoder's) grows hypotheses one token at a
time. To add CTC to it we need, for every hypothesis h and every candidate token c, the CTC
*prefix probability* psi(h + c): the probability that the CTC output starts with h + c,
summed over all alignments (Watanabe et al. 2017, "Hybrid CTC/attention architecture for
end-to-end speech recognition", Algorithm 2). Here all hypotheses of all utterances and all
candidate tokens are scored at once, as tensors; the only Python loop is over time frames,
because the forward recursion over t is sequential (Seki et al. 2019, "Vectorized beam
search for CTC-attention-based speech recognition"). ESPnet's `CTCPrefixScoreTH` computes
the same numbers; `tests/search/test_ctc_prefix_score.py` checks that.

The forward variables of a prefix h, for frames t = 0 .. T-1, in log space:

    r[t, 0] = log P(frames 0..t collapse to h, and frame t emits h's last token)
    r[t, 1] = log P(frames 0..t collapse to h, and frame t is blank)

For a new prefix g = h + c (phi_t: h is complete at t and c may start at t + 1; a repeated
token needs a blank in between, so then only the blank-ending part of h counts):

    phi_t      = r_h[t, 1]                          if c == last(h)
                 logaddexp(r_h[t, 0], r_h[t, 1])    otherwise
    r_g[t, 0]  = logaddexp(r_g[t-1, 0], phi_{t-1}) + x_t(c)
    r_g[t, 1]  = logaddexp(r_g[t-1, 0], r_g[t-1, 1]) + x_t(blank)
    psi(g)     = logsumexp_t (phi_{t-1} + x_t(c))   (c is first emitted at frame t)

The end-of-sentence candidate scores the whole utterance: psi(h + <eos>) = log P(h | x) =
logaddexp(r_h[T_u - 1, 0], r_h[T_u - 1, 1]) at the utterance's last frame. Blank is never a
candidate (its score is -inf).

Typical use, one step of a batched beam search (N hypotheses, K candidates each):

    scorer = CTCPrefixScorer(blank=0, eos=eos_id)
    state = scorer.init_state(ctc_log_probs, lengths)     # one empty prefix per utterance
    scores, scored = scorer.score(state, candidates)      # (N, K) log psi(h + c)
    ctc_gain = scores - state.prefix_score[:, None]       # what the new token adds
    ...                                                   # combine with the decoder, prune
    state = scorer.select(scored, hyp_index, token_ids)   # the M survivors
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

NEG_INF = float("-inf")


@dataclass
class CTCPrefixState:
    """CTC state of N hypotheses that all hold `length` tokens.

    log_probs:    (T, B, V) CTC log-probs, time first, padded frames made certain blanks
                  (shared by every state of one search, never copied)
    end_frame:    (B,) last valid frame of each utterance
    utt:          (N,) the utterance (index into B) each hypothesis decodes
    r:            (T, 2, N) forward variables of each prefix: [:, 0] ends in its last
                  token, [:, 1] ends in blank (see the module docstring)
    prefix_score: (N,) log prefix probability psi(h) (0 for the empty prefix)
    last_token:   (N,) last token of each prefix, -1 for the empty prefix
    length:       number of tokens in every prefix
    """

    log_probs: Tensor
    end_frame: Tensor
    utt: Tensor
    r: Tensor
    prefix_score: Tensor
    last_token: Tensor
    length: int


@dataclass
class CTCPrefixCandidates:
    """Every scored extension h + c, kept until the search has chosen which survive.

    state:  the hypotheses h that were extended (N of them)
    tokens: (N, K) candidate ids, or None when the whole vocabulary was scored (K = V)
    scores: (N, K) log prefix probabilities psi(h + c)
    r:      (T, 2, N, K) forward variables of every h + c
    """

    state: CTCPrefixState
    tokens: Tensor | None
    scores: Tensor
    r: Tensor


class CTCPrefixScorer:
    """CTC prefix scores of candidate next tokens for a batch of beam-search hypotheses.

    Stateless apart from the token ids: all search state lives in `CTCPrefixState`, so one
    scorer serves any number of searches.
    """

    def __init__(self, blank: int = 0, eos: int | None = None):
        self.blank = blank
        self.eos = eos

    def init_state(self, log_probs: Tensor, lengths: Tensor) -> CTCPrefixState:
        """One empty-prefix hypothesis per utterance.

        log_probs: (B, T, V) CTC log-posteriors; lengths: (B,) valid frames per utterance.
        """
        B, T, V = log_probs.shape
        lengths = torch.as_tensor(lengths, device=log_probs.device)
        # Past its end an utterance emits blank with certainty, so every prefix probability
        # stays what it was at the last real frame and the recursion can run to the longest T.
        padded = (torch.arange(T, device=log_probs.device)[None, :] >= lengths[:, None])  # (B, T)
        x = log_probs.masked_fill(padded[..., None], NEG_INF)
        x[..., self.blank] = x[..., self.blank].masked_fill(padded, 0.0)
        x = x.transpose(0, 1).contiguous()  # (T, B, V)
        # The empty prefix: only blanks so far, r[t, 1] = sum of blank log-probs up to t.
        r = torch.full((T, 2, B), NEG_INF, dtype=x.dtype, device=x.device)
        r[:, 1] = torch.cumsum(x[:, :, self.blank], dim=0)
        return CTCPrefixState(
            log_probs=x,
            end_frame=lengths - 1,
            utt=torch.arange(B, device=x.device),
            r=r,
            prefix_score=torch.zeros(B, dtype=x.dtype, device=x.device),
            last_token=torch.full((B,), -1, dtype=torch.long, device=x.device),
            length=0,
        )

    def score(self, state: CTCPrefixState, candidates: Tensor | None = None) -> tuple[Tensor, CTCPrefixCandidates]:
        """Log prefix probabilities psi(h + c) for every hypothesis h and candidate c.

        candidates: (N, K) token ids to score per hypothesis (partial scoring, e.g. the
        decoder's pre-beam), or None for the whole vocabulary. Returns cumulative scores
        (N, K) (not the gain over psi(h); subtract `state.prefix_score[:, None]` for that,
        minding hypotheses whose own psi(h) is -inf: -inf - -inf is NaN) and the
        candidates' forward variables for `select`.
        """
        x = state.log_probs
        T = x.size(0)
        N = state.utt.numel()
        if candidates is None:
            x_c = x.index_select(1, state.utt)  # (T, N, V)
            tokens = torch.arange(x.size(2), device=x.device).expand(N, -1)
        else:
            candidates = candidates.to(x.device)
            x_c = x[:, state.utt[:, None], candidates]  # (T, N, K)
            tokens = candidates
        K = tokens.size(1)
        x_blank = x[:, state.utt, self.blank][..., None]  # (T, N, 1)

        r_h = state.r
        r_h_any = torch.logaddexp(r_h[:, 0], r_h[:, 1])  # (T, N)
        repeat = tokens == state.last_token[:, None]  # (N, K)
        phi = torch.where(repeat, r_h[:, 1, :, None], r_h_any[..., None])  # (T, N, K)

        r = torch.full((T, 2, N, K), NEG_INF, dtype=x.dtype, device=x.device)
        # A prefix of length L + 1 cannot end before frame L: start the recursion there.
        start = max(state.length, 1)
        if state.length == 0:
            r[0, 0] = x_c[0]
        if start < T:
            for t in range(start, T):
                r[t, 0] = torch.logaddexp(r[t - 1, 0], phi[t - 1]) + x_c[t]
                r[t, 1] = torch.logaddexp(r[t - 1, 0], r[t - 1, 1]) + x_blank[t]
            first_emission = torch.cat((r[start - 1, 0][None], phi[start - 1 : T - 1] + x_c[start:T]))
            psi = torch.logsumexp(first_emission, dim=0)  # (N, K)
        else:  # no frame left for another token; with T == 1, a first token at frame 0
            psi = r[0, 0].clone()

        psi = psi.masked_fill(tokens == self.blank, NEG_INF)
        if self.eos is not None:
            whole = r_h_any[state.end_frame[state.utt], torch.arange(N, device=x.device)]  # (N,)
            psi = torch.where(tokens == self.eos, whole[:, None], psi)
        return psi, CTCPrefixCandidates(state=state, tokens=candidates, scores=psi, r=r)

    def select(self, scored: CTCPrefixCandidates, hyp: Tensor, token: Tensor) -> CTCPrefixState:
        """The state of the chosen extensions h[hyp[m]] + token[m], m = 0 .. M-1.

        hyp: (M,) indices into the N scored hypotheses; token: (M,) token ids. A token that
        was not among a hypothesis' candidates gets CTC probability zero (-inf).
        """
        parent = scored.state
        hyp, token = hyp.to(parent.utt.device), token.to(parent.utt.device)
        if scored.tokens is None:
            column = token
            found = torch.ones_like(token, dtype=torch.bool)
        else:
            match = scored.tokens[hyp] == token[:, None]  # (M, K)
            column = match.int().argmax(dim=1)
            found = match.any(dim=1)
        r = scored.r[:, :, hyp, column].masked_fill(~found, NEG_INF)  # (T, 2, M)
        prefix_score = scored.scores[hyp, column].masked_fill(~found, NEG_INF)
        return CTCPrefixState(
            log_probs=parent.log_probs,
            end_frame=parent.end_frame,
            utt=parent.utt[hyp],
            r=r,
            prefix_score=prefix_score,
            last_token=token.to(torch.long),
            length=parent.length + 1,
        )
