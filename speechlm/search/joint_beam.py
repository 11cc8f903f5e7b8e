"""Joint CTC/attention beam search, batched over utterances and hypotheses.

The label-synchronous search of ESPnet's `BatchBeamSearch` (Watanabe et al. 2017, "Hybrid
CTC/attention architecture for end-to-end speech recognition"; Seki et al. 2019,
"Vectorized beam search for CTC-attention-based speech recognition"), run for B utterances
at once: at every step all running hypotheses of all utterances, N = B x beam rows (fewer
as utterances finish and leave the batch), go through one decoder `step` call and one
`CTCPrefixScorer.score` call (and one LM `step` call with shallow fusion), and the top-k
is taken per utterance on a (B, beam x V) view. For each utterance the result is what ESPnet's `BatchBeamSearch` (as
`espnet2/bin/asr_inference.py` builds it: scorers decoder, ctc, lm (if any), length_bonus,
`pre_beam_score_key="full"`) returns for that utterance alone:

    full(h, c)     = (1 - ctc_weight) * log p_dec(c | h, x) + lm_weight * log p_lm(c | h)
                     + length_penalty
    pre-beam       = the int(pre_beam_ratio * beam) best c by full(h, c), plus <eos>
                     (only when 0 < ctc_weight < 1 and that is fewer than V tokens)
    score(h + c)   = score(h) + full(h, c) + ctc_weight * (log psi(h + c) - log psi(h))
                     for c in the pre-beam; c outside it cannot be chosen
    beam           = the `beam` best (h, c) of the utterance; those ending in <eos> leave
                     the beam for its ended list (if at least minlen steps were taken)

ESPnet's CTC scorer scores <eos> (log P(h | x)) whether or not it is in the pre-beam, hence
the "plus <eos>". A search stops at maxlen steps (<eos> is then appended to every running
hypothesis, with no score for it), when no hypothesis is left, or, with maxlenratio == 0,
when ESPnet's `end_detect` fires. Results are the ended hypotheses sorted by score. When an
utterance ends none, it is searched again with minlenratio lowered by 0.1, as ESPnet does
(nothing is returned for it when minlenratio < 0.1).

Differences from ESPnet, none of which changes a result on a sensible model:
- ESPnet writes -1e10 where a probability is zero; here it is -inf, and a candidate that
  scores -inf is never kept. ESPnet keeps such hopeless hypotheses (score about -1e10 x
  ctc_weight) when nothing better fills the beam, e.g. more tokens than the frames left
  allow, or a decoder whose best token is <blank> at beam 1; they then trail its n-best
  list (and, as ended hypotheses, could make its end_detect fire a step earlier).
- A hypothesis that picks <eos> on the very last step gets no second <eos> (ESPnet's yseq
  then ends in two, and its `yseq[1:-1]` holds one).
- Blank ids are not removed from `tokens` (ESPnet's asr_inference does that afterwards).

Beyond ESPnet, for prompted decoders (Whisper's `<|startoftranscript|> <|en|> <|transcribe|>`):
`prefix` forces the first tokens (default `[sos]`; the results leave it out, and CTC scores
only what follows it), and `logit_filters` (openai-whisper's `LogitFilter`s) change the
decoder's step scores before anything is chosen: each is called as
`filter(tokens (N, L), scores (N, V)) -> scores` with every row's tokens so far (prefix
included), and forbids a token by giving it -inf.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from speechlm.search.ctc_prefix_score import CTCPrefixScorer
from speechlm.search.lm_fusion import FusionLM

LogitFilter = Callable[[Tensor, Tensor], Tensor]

NEG_INF = float("-inf")
END_DETECT_M = 3  # ESPnet's end_detect: the last M lengths ...
END_DETECT_D = -10.0  # ... ended only hypotheses this far (log) below the best one


@dataclass
class Hypothesis:
    """One result: tokens without <sos>/<eos>, total weighted score, and the unweighted
    log-probabilities per scorer ("decoder", "ctc", "lm"; only the scorers in use)."""

    tokens: list[int]
    score: float
    scores: dict[str, float] = field(default_factory=dict)


def length_bounds(frames: int, maxlenratio: float, minlenratio: float) -> tuple[int, int]:
    """ESPnet's (maxlen, minlen) in tokens for an utterance of `frames` encoder frames;
    a negative ratio is an absolute length."""
    if maxlenratio == 0:
        maxlen = frames
    elif maxlenratio < 0:
        maxlen = -int(maxlenratio)
    else:
        maxlen = max(1, int(maxlenratio * frames))
    minlen = -int(minlenratio) if minlenratio < 0 else int(minlenratio * frames)
    return maxlen, minlen


def end_detect(ended: list[tuple[float, int]], i: int) -> bool:
    """ESPnet's `end_detect` (Watanabe et al. 2017, eq. 50) on (score, len(yseq)) pairs:
    True when for each of the last M yseq lengths i, i-1, i-2 some hypothesis of that
    length ended, and the best of them is far below the best ended so far."""
    if not ended:
        return False
    best = max(s for s, _ in ended)
    count = 0
    for m in range(END_DETECT_M):
        same = [s for s, n in ended if n == i - m]
        if same and max(same) - best < END_DETECT_D:
            count += 1
    return count == END_DETECT_M


@torch.no_grad()
def joint_beam_search(
    decoder,
    ctc_log_probs: Tensor | None,
    memory: Tensor | None,
    memory_lens: Tensor,
    sos: int,
    eos: int,
    beam_size: int = 10,
    ctc_weight: float = 0.3,
    length_penalty: float = 0.0,
    maxlenratio: float = 0.0,
    minlenratio: float = 0.0,
    pre_beam_ratio: float = 1.5,
    nbest: int = 1,
    blank: int = 0,
    prefix: Sequence[int] | None = None,
    logit_filters: Sequence[LogitFilter] = (),
    lm=None,
    lm_weight: float = 0.0,
) -> list[list[Hypothesis]]:
    """Beam search B utterances at once; returns each utterance's `nbest` best hypotheses.

    decoder:       follows the incremental-decoding protocol (`init_state(memory=...)`,
                   `step`, `select_state`, `vocab_size`), e.g. `TransformerDecoder`;
                   unused (may be None) when ctc_weight == 1
    ctc_log_probs: (B, T, V) CTC log-posteriors, unused (may be None) when ctc_weight == 0
    memory:        (B, T, D) encoder output for the decoder (None when ctc_weight == 1)
    memory_lens:   (B,) valid frames per utterance (maxlen and minlen count from them)
    length_penalty: ESPnet's `penalty`, added per token (<eos> included)
    prefix:        forced first tokens (default [sos]); logit_filters: see the module docstring
    lm, lm_weight: shallow fusion of a language model (`speechlm.models.lm` protocol,
                   same vocabulary), a full scorer as ESPnet's `lm`; it starts from its own
                   sos and sees the tokens after the forced prefix
    """
    use_dec, use_ctc = ctc_weight < 1.0, ctc_weight > 0.0
    if use_dec and (decoder is None or memory is None):
        raise ValueError("ctc_weight < 1 needs the decoder and its memory")
    if use_ctc and ctc_log_probs is None:
        raise ValueError("ctc_weight > 0 needs ctc_log_probs")
    ref = memory if use_dec else ctc_log_probs
    device, dtype = ref.device, ref.dtype
    B, T = ref.shape[:2]
    V = decoder.vocab_size if use_dec else ctc_log_probs.size(-1)
    lens = memory_lens.tolist()
    bounds = [length_bounds(n, maxlenratio, minlenratio) for n in lens]
    maxlen = torch.tensor([mx for mx, _ in bounds], device=device)
    pre_beam = int(pre_beam_ratio * beam_size)
    do_pre_beam = use_ctc and use_dec and pre_beam < V
    w_dec = 1.0 - ctc_weight
    use_lm = lm is not None and lm_weight != 0
    if use_lm and lm.vocab_size != V:
        raise ValueError(f"the LM has {lm.vocab_size} tokens, the ASR model {V}")

    # Running hypotheses: U active utterances x W rows each (W = 1 at the start, then beam),
    # an utterance's live rows first, in ESPnet's order (best first); the other rows are
    # dead (score -inf) and never chosen. A fixed W per utterance lets the decoder's
    # encoder-side cache and the memory rows stay in place, and longest utterances first
    # (they tend to finish last) lets finished ones be cut off the end without a copy.
    utts = torch.argsort(memory_lens.to(device), descending=True, stable=True)  # ids, in block order
    W = 1
    prefix = [sos] if prefix is None else [int(t) for t in prefix]
    if not prefix:
        raise ValueError("prefix must hold at least the start token")
    P = len(prefix)
    yseq = torch.tensor(prefix, dtype=torch.long, device=device).repeat(B, 1)
    score = torch.zeros(B, dtype=dtype, device=device)
    dec_total = torch.zeros(B, dtype=dtype, device=device)
    ctc_total = torch.zeros(B, dtype=dtype, device=device)
    lm_total = torch.zeros(B, dtype=dtype, device=device)
    if use_dec:
        row_mask = (torch.arange(T, device=device)[None, :] < memory_lens.to(device)[utts, None])[:, None, :]
        state = decoder.init_state(B, device, memory=memory.index_select(0, utts), memory_mask=row_mask)
        for t in range(P - 1):  # the forced prefix, but for its last token (the loop's first input)
            _, state = decoder.step(yseq[:, t], state)
    if use_ctc:
        scorer = CTCPrefixScorer(blank=blank, eos=eos)
        ctc_state = scorer.init_state(ctc_log_probs.index_select(0, utts), memory_lens.to(device)[utts])
    if use_lm:
        lm_state = lm.init_state(B, device)
    ended: list[list[tuple[float, int, Hypothesis]]] = [[] for _ in range(B)]

    i = 0
    while utts.numel() > 0:
        U, N = utts.numel(), utts.numel() * W
        weighted = torch.zeros(N, V, dtype=dtype, device=device)
        if use_dec:
            dec_logp, state = decoder.step(yseq[:, -1], state)
            weighted += w_dec * dec_logp
        if use_lm:
            lm_input = torch.full_like(yseq[:, -1], lm.sos) if i == 0 else yseq[:, -1]
            lm_logp, lm_state = lm.step(lm_input, lm_state)
            lm_logp = lm_logp.to(dtype)
            weighted += lm_weight * lm_logp
        if length_penalty != 0:
            weighted += length_penalty
        for logit_filter in logit_filters:
            weighted = logit_filter(yseq, weighted)
        if use_ctc:
            candidates = None
            if do_pre_beam:
                top = torch.topk(weighted, pre_beam, dim=-1)[1]
                candidates = torch.cat([top, torch.full((N, 1), eos, dtype=top.dtype, device=device)], dim=1)
            psi, scored = scorer.score(ctc_state, candidates)
            gain = psi - ctc_state.prefix_score[:, None]
            gain = gain.masked_fill(torch.isnan(gain), NEG_INF)  # psi(h) = -inf: h is hopeless
            if candidates is None:
                ctc_gain = gain
            else:
                ctc_gain = torch.full((N, V), NEG_INF, dtype=dtype, device=device).scatter(1, candidates, gain)
            weighted += ctc_weight * ctc_gain
        weighted += score[:, None]

        # The best `beam` (hypothesis, token) pairs of each utterance, best first.
        k = min(beam_size, W * V)
        values, flat = weighted.view(U, W * V).topk(k, dim=1)  # (U, k)
        parent = torch.arange(U, device=device)[:, None] * W + torch.div(flat, V, rounding_mode="floor")
        token = flat % V
        new_dec = dec_total[parent] + dec_logp[parent, token] if use_dec else dec_total[parent]
        new_ctc = ctc_total[parent] + ctc_gain[parent, token] if use_ctc else ctc_total[parent]
        new_lm = lm_total[parent] + lm_logp[parent, token] if use_lm else lm_total[parent]
        valid = values > NEG_INF

        # ESPnet's post_process: <eos>, or the last step, ends a hypothesis.
        finished = valid & ((token == eos) | (maxlen[utts] - 1 == i)[:, None])
        if finished.any():
            u_idx, j_idx = finished.nonzero(as_tuple=True)
            for u, p, tok, s, d, c, lm_s in zip(utts[u_idx].tolist(), parent[u_idx, j_idx].tolist(),
                                                token[u_idx, j_idx].tolist(), values[u_idx, j_idx].tolist(),
                                                new_dec[u_idx, j_idx].tolist(), new_ctc[u_idx, j_idx].tolist(),
                                                new_lm[u_idx, j_idx].tolist()):
                if i < bounds[u][1]:
                    continue  # shorter than minlen
                tokens = yseq[p, P:].tolist() + ([] if tok == eos else [tok])
                scores = (({"decoder": d} if use_dec else {}) | ({"ctc": c} if use_ctc else {})
                          | ({"lm": lm_s} if use_lm else {}))
                ended[u].append((s, i + 2, Hypothesis(tokens, s, scores)))  # i + 2 = len(sos h eos)
        alive = valid & ~finished
        stay = alive.any(dim=1)
        if maxlenratio == 0:
            for row, u in enumerate(utts.tolist()):
                if stay[row] and end_detect([(s, n) for s, n, _ in ended[u]], i):
                    stay[row] = False

        # Live rows to the front of each block (stable: ESPnet's order), then drop the
        # utterances that are done.
        order = torch.sort((~alive).to(torch.int8), dim=1, stable=True)[1]
        parent, token, alive = parent.gather(1, order), token.gather(1, order), alive.gather(1, order)
        values, new_dec, new_ctc = values.gather(1, order), new_dec.gather(1, order), new_ctc.gather(1, order)
        new_lm = new_lm.gather(1, order)
        if int(stay.sum()) < U:
            utts, parent, token, alive = utts[stay], parent[stay], token[stay], alive[stay]
            values, new_dec, new_ctc, new_lm = values[stay], new_dec[stay], new_ctc[stay], new_lm[stay]
        parent, token = parent.reshape(-1), token.reshape(-1)
        score = values.masked_fill(~alive, NEG_INF).reshape(-1)
        dec_total, ctc_total, lm_total = new_dec.reshape(-1), new_ctc.reshape(-1), new_lm.reshape(-1)
        yseq = torch.cat([yseq[parent], token[:, None]], dim=1)
        if use_dec:
            state = decoder.select_state(state, parent)
        if use_ctc:
            ctc_state = scorer.select(scored, parent, token)
        if use_lm:
            lm_state = lm.select_state(lm_state, parent)
        W = k
        i += 1

    results = []
    for u in range(B):
        hyps = [h for _, _, h in sorted(ended[u], key=lambda e: e[0], reverse=True)]  # stable, as ESPnet's
        results.append(hyps[:nbest])
    retry = [u for u in range(B) if not results[u]]
    if retry and minlenratio >= 0.1:  # ESPnet searches again with a smaller minlenratio
        index = torch.tensor(retry, device=device)
        again = joint_beam_search(
            decoder, None if ctc_log_probs is None else ctc_log_probs[index],
            None if memory is None else memory[index], memory_lens[index.to(memory_lens.device)],
            sos, eos, beam_size, ctc_weight, length_penalty, maxlenratio,
            max(0.0, minlenratio - 0.1), pre_beam_ratio, nbest, blank, prefix, logit_filters, lm, lm_weight)
        for u, hyps in zip(retry, again):
            results[u] = hyps
    return results


class JointCTCAttentionSearch:
    """The search of CTC/attention models (`speechlm.models.ctc_attention`): the joint beam
    search with the model's decoder and CTC head; a model without a decoder (CTC only) is
    searched by CTC prefix scores alone, one without a CTC head by the decoder alone.
    `lm_checkpoint` + `lm_weight`: shallow fusion of that language model (loaded once, on
    first use; its tokenizer must be the model's, `tokenizer`, which decode passes in)."""

    def __init__(self, beam_size: int = 10, ctc_weight: float = 0.3, penalty: float = 0.0, maxlenratio: float = 0.0,
                 minlenratio: float = 0.0, lm_checkpoint: str | None = None, lm_weight: float = 0.0, tokenizer=None):
        self.beam_size, self.ctc_weight, self.penalty = beam_size, ctc_weight, penalty
        self.maxlenratio, self.minlenratio = maxlenratio, minlenratio
        self.lm = FusionLM(lm_checkpoint, lm_weight, tokenizer)

    def __call__(self, model, enc) -> list[list[int]]:
        if not hasattr(model, "decoder") or not hasattr(model, "sos"):
            raise ValueError(f"the joint CTC/attention search decodes CTC/attention models; {type(model).__name__} "
                             "has no attention decoder")
        ctc = getattr(model, "ctc", None)
        ctc_weight = 0.0 if ctc is None else 1.0 if model.decoder is None else self.ctc_weight
        vocab_size = model.decoder.vocab_size if model.decoder is not None else ctc.ctc_lo.out_features
        lm = self.lm.get(vocab_size, enc.output.device)
        hyps = joint_beam_search(
            model.decoder, ctc.log_softmax(enc.output) if ctc is not None else None, enc.output, enc.lengths,
            sos=model.sos, eos=model.eos, beam_size=self.beam_size, ctc_weight=ctc_weight,
            length_penalty=self.penalty, maxlenratio=self.maxlenratio, minlenratio=self.minlenratio,
            blank=model.blank_id, lm=lm, lm_weight=self.lm.weight)
        return [h[0].tokens if h else [] for h in hyps]
