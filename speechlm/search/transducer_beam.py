"""Transducer beam searches.

`modified_beam_search` (icefall's): at most one symbol per encoder frame, so every
hypothesis advances one frame per step and the whole batch moves in lockstep. The
hypotheses of all utterances form one (B x K) grid: per frame, one joiner call scores every
(hypothesis, token) pair, a top-k per utterance picks the K best extensions (blank keeps
the prefix, a token extends it), extensions that reach the same token sequence are merged
by adding their probabilities (log-sum-exp), and one prediction-network step updates the
hypotheses that grew. With K = 1 it is exactly greedy search with one symbol per frame.

`graves_beam_search` (Graves 2012, as ESPnet's `default_beam_search`): any number of
symbols per frame; per frame, the best unfinished hypothesis is expanded until K
hypotheses that end the frame with blank beat every unfinished one. Sequential per
utterance; kept as the reference the batched searches are compared against.

Both return, per utterance, hypotheses best first with scores (log-probabilities) and the
encoder frame of every token.

Shallow fusion of a language model (`lm`, `lm_weight`; icefall's
`modified_beam_search_lm_shallow_fusion`): emitting token c after tokens y adds
lm_weight * log p_LM(c | y) to the score; blank adds nothing, and the LM advances only with
emitted tokens. Unlike icefall, which picks a frame's top-k by the acoustic scores and adds
the LM after, the LM score counts in the choice (as in ESPnet's transducer searches), so
the LM can bring in a token the acoustic top-k left out. Each hypothesis also carries its
unweighted LM score, `lm_score`. The LM's next-token log-probs come from
`speechlm.search.lm_fusion.PrefixLogProbs` (hypotheses of different lengths, batched).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from speechlm.search.ctc_prefix_beam import log_add
from speechlm.search.lm_fusion import FusionLM, PrefixLogProbs
from speechlm.search.transducer_greedy import TransducerHypothesis, check_transducer, start_predictor


def _finish(hyps: list[TransducerHypothesis], length_norm: bool) -> list[TransducerHypothesis]:
    key = (lambda h: h.score / max(len(h.tokens), 1)) if length_norm else (lambda h: h.score)
    return sorted(hyps, key=key, reverse=True)


@torch.no_grad()
def _fusion(lm: nn.Module | None, lm_weight: float, device: torch.device) -> PrefixLogProbs | None:
    return PrefixLogProbs(lm, device) if lm is not None and lm_weight != 0 else None


def _lm_columns(lm_logp: Tensor, blank: int) -> Tensor:
    """LM log-probs (N, V) as scores of the joiner's columns: blank emits nothing, scores 0."""
    lm_logp = lm_logp.double().clone()
    lm_logp[:, blank] = 0.0
    return lm_logp


def modified_beam_search(predictor: nn.Module, joiner: nn.Module, enc: Tensor, enc_lens: Tensor, beam_size: int = 4,
                         blank: int = 0, length_norm: bool = False, lm: nn.Module | None = None,
                         lm_weight: float = 0.0) -> list[list[TransducerHypothesis]]:
    """enc (B, T, D), enc_lens (B,) -> per utterance up to `beam_size` hypotheses, best
    first (by score, or score per token with `length_norm`); `lm`, `lm_weight`: shallow
    fusion (module docstring)."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    b, k, device = enc.shape[0], beam_size, enc.device
    fusion = _fusion(lm, lm_weight, device)
    lm_scores = torch.zeros(b, k, dtype=torch.float64, device=device)
    enc_proj = joiner.project_encoder(enc)
    pred_proj, state = start_predictor(predictor, joiner, b * k, blank, device)
    scores = torch.full((b, k), -math.inf, dtype=torch.float64, device=device)
    scores[:, 0] = 0.0
    # Python-side prefixes: tokens and timestamps of grid cell (utterance, slot).
    prefixes: list[list[tuple[tuple[int, ...], tuple[int, ...]]]] = [[((), ())] * k for _ in range(b)]
    rows = torch.arange(b, device=device).unsqueeze(1) * k  # first grid row of each utterance
    for t in range(int(enc_lens.max()) if b else 0):
        active = (t < enc_lens).tolist()
        logp = torch.log_softmax(joiner.joint(enc_proj[:, t].repeat_interleave(k, dim=0), pred_proj).float(), dim=-1)
        vocab = logp.shape[-1]
        cand = scores.unsqueeze(-1) + logp.double().view(b, k, vocab)
        if fusion is not None:
            lm_logp = _lm_columns(fusion([ys for cells in prefixes for ys, _ in cells]), blank).view(b, k, vocab)
            cand = cand + lm_weight * lm_logp
        cand = cand.view(b, k * vocab)
        top_scores, top_idx = cand.topk(min(k, k * vocab), dim=-1)
        top_parent, top_token = (top_idx // vocab).tolist(), (top_idx % vocab).tolist()
        top_scores = top_scores.tolist()
        new_scores, new_lm_scores = scores.clone(), lm_scores.clone()
        parent = torch.arange(k, device=device).repeat(b, 1)
        token = torch.full((b, k), blank, dtype=torch.long, device=device)
        for i in range(b):
            if not active[i]:
                continue  # finished utterance: its grid cells stay as they are
            merged: dict[tuple[int, ...], int] = {}  # tokens -> slot in the new grid
            slot_score, slot_from = [], []
            for p, v, s in zip(top_parent[i], top_token[i], top_scores[i]):
                if s == -math.inf:
                    continue
                ys, ts = prefixes[i][p]
                if v != blank:
                    ys, ts = ys + (v,), ts + (t,)
                if ys in merged:  # same tokens by another path: one hypothesis, both paths' mass
                    j = merged[ys]
                    slot_score[j] = log_add(slot_score[j], s)
                    continue
                merged[ys] = len(slot_score)
                slot_score.append(s)
                slot_from.append((p, v, ys, ts))
            new_prefixes = [((), ())] * k
            for j, (p, v, ys, ts) in enumerate(slot_from):
                new_prefixes[j] = (ys, ts)
                parent[i, j], token[i, j] = p, v
                if fusion is not None:  # same tokens by any path: the same LM score
                    new_lm_scores[i, j] = lm_scores[i, p] + float(lm_logp[i, p, v])
            prefixes[i] = new_prefixes
            new_scores[i] = torch.tensor(slot_score + [-math.inf] * (k - len(slot_score)), dtype=torch.float64)
        scores, lm_scores = new_scores, new_lm_scores
        if fusion is not None:
            fusion.keep(ys for cells in prefixes for ys, _ in cells)
        src = (rows + parent).flatten()
        token = token.flatten()
        pred_proj, state = pred_proj[src], predictor.select_state(state, src)
        grew = token != blank
        if bool(grew.any()):
            out, new_state = predictor.step(token, state)
            state = predictor.where_state(grew, new_state, state)
            pred_proj = torch.where(grew.unsqueeze(-1), joiner.project_predictor(out), pred_proj)
    results = []
    for i in range(b):
        hyps = [TransducerHypothesis(list(ys), s, list(ts), lm_s)
                for (ys, ts), s, lm_s in zip(prefixes[i], scores[i].tolist(), lm_scores[i].tolist()) if s > -math.inf]
        results.append(_finish(hyps, length_norm))
    return results


@torch.no_grad()
def graves_beam_search(predictor: nn.Module, joiner: nn.Module, enc: Tensor, enc_lens: Tensor, beam_size: int = 4,
                       blank: int = 0, max_symbols_per_frame: int = 10, length_norm: bool = False,
                       lm: nn.Module | None = None, lm_weight: float = 0.0) -> list[list[TransducerHypothesis]]:
    """enc (B, T, D), enc_lens (B,) -> per utterance up to `beam_size` hypotheses, best
    first. Utterances are searched one at a time. `max_symbols_per_frame` stops a
    hypothesis from growing forever on one frame when a model gives blank no mass.
    `lm`, `lm_weight`: shallow fusion (module docstring)."""
    fusion = _fusion(lm, lm_weight, enc.device)
    results = []
    for i in range(enc.shape[0]):
        enc_proj = joiner.project_encoder(enc[i, : int(enc_lens[i])])
        pred_proj, state = start_predictor(predictor, joiner, 1, blank, enc.device)
        # A hypothesis: (score, tokens, timestamps, projected predictor output, state, LM
        # score). An extension's predictor step is taken only if it is expanded: until then
        # its output is None and its state is (parent state, token).
        beam = [(0.0, (), (), pred_proj, state, 0.0)]
        for t in range(enc_proj.shape[0]):
            unfinished = [(s, ys, ts, pp, st, lm_s, 0) for s, ys, ts, pp, st, lm_s in beam]
            ended: dict[tuple[int, ...], list] = {}  # tokens -> hypothesis that ends frame t
            while unfinished:
                best = max(range(len(unfinished)), key=lambda j: unfinished[j][0])
                s, ys, ts, pp, st, lm_s, n_sym = unfinished.pop(best)
                if pp is None:
                    parent_state, v = st
                    out, st = predictor.step(torch.tensor([v], device=enc.device), parent_state)
                    pp = joiner.project_predictor(out)
                logp = torch.log_softmax(joiner.joint(enc_proj[t], pp[0]).float(), dim=-1)
                s_blank = s + float(logp[blank])
                if ys in ended:  # the same tokens by another path
                    ended[ys][0] = log_add(ended[ys][0], s_blank)
                else:
                    ended[ys] = [s_blank, ys, ts, pp, st, lm_s]
                if n_sym < max_symbols_per_frame:
                    lm_cols = _lm_columns(fusion([ys]), blank)[0] if fusion is not None else None
                    fused = logp.double() if lm_cols is None else logp.double() + lm_weight * lm_cols
                    fused[blank] = -math.inf
                    top_logp, top_v = fused.topk(min(beam_size, fused.numel() - 1))
                    unfinished += [(s + lp, ys + (v,), ts + (t,), None, (st, v),
                                    lm_s + (float(lm_cols[v]) if lm_cols is not None else 0.0), n_sym + 1)
                                   for lp, v in zip(top_logp.tolist(), top_v.tolist())]
                if unfinished:
                    best_unfinished = max(u[0] for u in unfinished)
                    if sum(e[0] > best_unfinished for e in ended.values()) >= beam_size:
                        break
            beam = [tuple(e) for e in sorted(ended.values(), key=lambda e: e[0], reverse=True)[:beam_size]]
            if fusion is not None:
                fusion.keep(e[1] for e in beam)
        hyps = [TransducerHypothesis(list(ys), s, list(ts), lm_s) for s, ys, ts, _, _, lm_s in beam]
        results.append(_finish(hyps, length_norm))
    return results


class TransducerBeamSearch:
    """Beam search of transducer models: `method` "modified" (one symbol per frame, batched;
    the default) or "graves" (per utterance). `lm_checkpoint` + `lm_weight`: shallow fusion
    of that language model (loaded once, on first use; its tokenizer must be the model's,
    `tokenizer`, which decode passes in)."""

    def __init__(self, beam_size: int = 4, method: str = "modified", lm_checkpoint: str | None = None,
                 lm_weight: float = 0.0, tokenizer=None):
        if method not in ("modified", "graves"):
            raise ValueError(f"method must be 'modified' or 'graves', got {method!r}")
        self.beam_size, self.method = beam_size, method
        self.lm = FusionLM(lm_checkpoint, lm_weight, tokenizer)

    def __call__(self, model, enc) -> list[list[int]]:
        check_transducer(model)
        search = modified_beam_search if self.method == "modified" else graves_beam_search
        lm = self.lm.get(model.joiner.output.out_features, enc.output.device)
        nbest = search(model.predictor, model.joiner, enc.output, enc.lengths, beam_size=self.beam_size,
                       blank=model.blank_id, lm=lm, lm_weight=self.lm.weight)
        return [h[0].tokens if h else [] for h in nbest]
