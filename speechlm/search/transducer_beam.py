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
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from speechlm.search.ctc_prefix_beam import log_add
from speechlm.search.transducer_greedy import TransducerHypothesis, check_transducer, start_predictor


def _finish(hyps: list[TransducerHypothesis], length_norm: bool) -> list[TransducerHypothesis]:
    key = (lambda h: h.score / max(len(h.tokens), 1)) if length_norm else (lambda h: h.score)
    return sorted(hyps, key=key, reverse=True)


@torch.no_grad()
def modified_beam_search(predictor: nn.Module, joiner: nn.Module, enc: Tensor, enc_lens: Tensor, beam_size: int = 4,
                         blank: int = 0, length_norm: bool = False) -> list[list[TransducerHypothesis]]:
    """enc (B, T, D), enc_lens (B,) -> per utterance up to `beam_size` hypotheses, best
    first (by score, or score per token with `length_norm`)."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    b, k, device = enc.shape[0], beam_size, enc.device
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
        cand = (scores.unsqueeze(-1) + logp.double().view(b, k, vocab)).view(b, k * vocab)
        top_scores, top_idx = cand.topk(min(k, k * vocab), dim=-1)
        top_parent, top_token = (top_idx // vocab).tolist(), (top_idx % vocab).tolist()
        top_scores = top_scores.tolist()
        new_scores = scores.clone()
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
            prefixes[i] = new_prefixes
            new_scores[i] = torch.tensor(slot_score + [-math.inf] * (k - len(slot_score)), dtype=torch.float64)
        scores = new_scores
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
        hyps = [TransducerHypothesis(list(ys), s, list(ts))
                for (ys, ts), s in zip(prefixes[i], scores[i].tolist()) if s > -math.inf]
        results.append(_finish(hyps, length_norm))
    return results


@torch.no_grad()
def graves_beam_search(predictor: nn.Module, joiner: nn.Module, enc: Tensor, enc_lens: Tensor, beam_size: int = 4,
                       blank: int = 0, max_symbols_per_frame: int = 10,
                       length_norm: bool = False) -> list[list[TransducerHypothesis]]:
    """enc (B, T, D), enc_lens (B,) -> per utterance up to `beam_size` hypotheses, best
    first. Utterances are searched one at a time. `max_symbols_per_frame` stops a
    hypothesis from growing forever on one frame when a model gives blank no mass."""
    results = []
    for i in range(enc.shape[0]):
        enc_proj = joiner.project_encoder(enc[i, : int(enc_lens[i])])
        pred_proj, state = start_predictor(predictor, joiner, 1, blank, enc.device)
        # A hypothesis: [score, tokens, timestamps, projected predictor output, state]. An
        # extension's predictor step is taken only if it is expanded: until then its output
        # is None and its state is (parent state, token).
        beam = [(0.0, (), (), pred_proj, state)]
        for t in range(enc_proj.shape[0]):
            unfinished = [(s, ys, ts, pp, st, 0) for s, ys, ts, pp, st in beam]
            ended: dict[tuple[int, ...], list] = {}  # tokens -> hypothesis that ends frame t
            while unfinished:
                best = max(range(len(unfinished)), key=lambda j: unfinished[j][0])
                s, ys, ts, pp, st, n_sym = unfinished.pop(best)
                if pp is None:
                    parent_state, v = st
                    out, st = predictor.step(torch.tensor([v], device=enc.device), parent_state)
                    pp = joiner.project_predictor(out)
                logp = torch.log_softmax(joiner.joint(enc_proj[t], pp[0]).float(), dim=-1)
                s_blank = s + float(logp[blank])
                if ys in ended:  # the same tokens by another path
                    ended[ys][0] = log_add(ended[ys][0], s_blank)
                else:
                    ended[ys] = [s_blank, ys, ts, pp, st]
                if n_sym < max_symbols_per_frame:
                    logp[blank] = -math.inf
                    top_logp, top_v = logp.topk(min(beam_size, logp.numel() - 1))
                    unfinished += [(s + lp, ys + (v,), ts + (t,), None, (st, v), n_sym + 1)
                                   for lp, v in zip(top_logp.tolist(), top_v.tolist())]
                if unfinished:
                    best_unfinished = max(u[0] for u in unfinished)
                    if sum(e[0] > best_unfinished for e in ended.values()) >= beam_size:
                        break
            beam = [tuple(e) for e in sorted(ended.values(), key=lambda e: e[0], reverse=True)[:beam_size]]
        hyps = [TransducerHypothesis(list(ys), s, list(ts)) for s, ys, ts, _, _ in beam]
        results.append(_finish(hyps, length_norm))
    return results



class TransducerBeamSearch:
    """Beam search of transducer models: `method` "modified" (one symbol per frame, batched;
    the default) or "graves" (per utterance)."""

    def __init__(self, beam_size: int = 4, method: str = "modified"):
        if method not in ("modified", "graves"):
            raise ValueError(f"method must be 'modified' or 'graves', got {method!r}")
        self.beam_size, self.method = beam_size, method

    def __call__(self, model, enc) -> list[list[int]]:
        check_transducer(model)
        search = modified_beam_search if self.method == "modified" else graves_beam_search
        nbest = search(model.predictor, model.joiner, enc.output, enc.lengths, beam_size=self.beam_size,
                       blank=model.blank_id)
        return [h[0].tokens if h else [] for h in nbest]
