"""Transducer greedy search, batched over utterances.

At each encoder frame every utterance takes the joiner's best token; a non-blank token is
emitted and, up to `max_symbols_per_frame`, the same frame is read again with the updated
prediction network; blank (or the symbol cap) moves on to the next frame. All utterances
advance together: one joiner call and one prediction-network step per frame and symbol for
the whole batch. The prediction network is any `speechlm.decoders.transducer` predictor.

Scores are sums of the log-probabilities of the choices made (blanks included); timestamps
are the encoder frame index of each emitted token.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class TransducerHypothesis:
    tokens: list[int]
    score: float  # log-probability of the path(s) found for these tokens
    timestamps: list[int] = field(default_factory=list)  # encoder frame of each token
    lm_score: float = 0.0  # with LM shallow fusion: log p_LM(tokens), unweighted (in `score` times the weight)


def start_predictor(predictor: nn.Module, joiner: nn.Module, n: int, blank: int, device: torch.device):
    """n empty hypotheses: (projected predictor output (n, J), predictor state)."""
    state = predictor.init_state(n, device)
    out, state = predictor.step(torch.full((n,), blank, dtype=torch.long, device=device), state)
    return joiner.project_predictor(out), state


@torch.no_grad()
def transducer_greedy_search(predictor: nn.Module, joiner: nn.Module, enc: Tensor, enc_lens: Tensor, blank: int = 0,
                             max_symbols_per_frame: int = 1) -> list[TransducerHypothesis]:
    """enc (B, T, D) encoder output, enc_lens (B,) -> one hypothesis per utterance."""
    if max_symbols_per_frame < 1:
        raise ValueError(f"max_symbols_per_frame must be >= 1, got {max_symbols_per_frame}")
    b, device = enc.shape[0], enc.device
    enc_proj = joiner.project_encoder(enc)
    pred_proj, state = start_predictor(predictor, joiner, b, blank, device)
    hyps = [TransducerHypothesis([], 0.0, []) for _ in range(b)]
    scores = torch.zeros(b, dtype=torch.float64, device=device)
    for t in range(int(enc_lens.max()) if b else 0):
        active = t < enc_lens
        for _ in range(max_symbols_per_frame):
            logp = torch.log_softmax(joiner.joint(enc_proj[:, t], pred_proj).float(), dim=-1)
            best_logp, best = logp.max(dim=-1)
            scores += torch.where(active, best_logp.double(), 0.0)
            emit = active & (best != blank)
            if not bool(emit.any()):
                break
            for i in emit.nonzero().flatten().tolist():
                hyps[i].tokens.append(int(best[i]))
                hyps[i].timestamps.append(t)
            out, new_state = predictor.step(best, state)
            state = predictor.where_state(emit, new_state, state)
            pred_proj = torch.where(emit.unsqueeze(-1), joiner.project_predictor(out), pred_proj)
            active = emit  # only utterances that emitted read this frame again
    for h, s in zip(hyps, scores.tolist()):
        h.score = s
    return hyps


def check_transducer(model) -> None:
    if not hasattr(model, "joiner") or not hasattr(model, "predictor"):
        raise ValueError(f"transducer searches decode transducer models; {type(model).__name__} has no joiner")


class TransducerGreedySearch:
    """Greedy search of transducer models (`model.predictor`, `model.joiner`)."""

    def __init__(self, max_symbols_per_frame: int = 1):
        self.max_symbols_per_frame = max_symbols_per_frame

    def __call__(self, model, enc) -> list[list[int]]:
        check_transducer(model)
        hyps = transducer_greedy_search(model.predictor, model.joiner, enc.output, enc.lengths, blank=model.blank_id,
                                        max_symbols_per_frame=self.max_symbols_per_frame)
        return [h.tokens for h in hyps]
