"""wav2vec 2.0's contrastive task (Baevski et al. 2020, sec. 3.2), as fairseq's
`Wav2Vec2Model.sample_negatives` / `compute_preds` and the `wav2vec` criterion.

At each masked frame the context vector must pick its own (quantized) target out of 1 + K
candidates: the target and K distractors, the targets of other masked frames of the same
utterance (fairseq's default: negatives from masked frames only, no cross-utterance ones).
The score is cosine similarity / temperature. A distractor equal to the target (two frames
quantized to the same codevectors) gets -inf, fairseq's `neg_is_pos`, so it is not counted
against the model.

Frames come gathered into dense (B, M, D) tensors: every utterance must have the same number
M of masked frames (`span_mask(..., same_count=True)`), e.g. `x[mask].view(B, M, D)`.

The logits are read off one (B, M, M) matrix of every context vector's cosine similarity to
every target of its utterance (both normalised once, then a batched matmul) rather than
computed on the (B, M, 1 + K, D) tensor of gathered candidates, as fairseq and HF do: the
same numbers (up to float rounding) for a fraction of the time and memory, forward and
backward (at BASE shapes, M ~ 250, K = 100: about 100x less on CPU).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def sample_negatives(mask: Tensor, num_negatives: int, generator: torch.Generator | None = None) -> Tensor:
    """mask (B, T) bool with M True per row -> (B, M, K) long indices into the row's M masked
    frames (0 .. M-1, in time order); row m never holds m. Drawn uniformly from the other
    M - 1 frames, with replacement: an index r in [0, M-2] is shifted to r + 1 when r >= m."""
    counts = mask.sum(dim=1)
    if mask.shape[0] and not bool((counts == counts[0]).all()):
        raise ValueError(f"every utterance needs the same number of masked frames, got {counts.tolist()}")
    batch, m = mask.shape[0], int(counts[0]) if mask.shape[0] else 0
    if m < 2:
        raise ValueError(f"need at least 2 masked frames per utterance to draw negatives, got {m}")
    device = generator.device if generator is not None else mask.device
    drawn = torch.randint(0, m - 1, (batch, m, num_negatives), generator=generator, device=device)
    own = torch.arange(m, device=device).view(1, m, 1)
    return (drawn + (drawn >= own).long()).to(mask.device)


def contrastive_logits(context: Tensor, targets: Tensor, negative_index: Tensor, temperature: float = 0.1) -> Tensor:
    """context, targets (B, M, D), negative_index (B, M, K) -> logits (B, M, 1 + K).

    Column 0 scores the frame's own target, columns 1.. its negatives targets[b, index]; a
    negative identical to the positive (all D values equal) scores -inf. Cosine similarity is
    computed in float32, as fairseq (x / max(|x|, 1e-8) on both sides, as
    F.cosine_similarity)."""
    batch, m, dim = targets.shape
    k = negative_index.shape[-1]
    c = F.normalize(context.float(), dim=-1, eps=1e-8)
    t = F.normalize(targets.float(), dim=-1, eps=1e-8)
    sim = torch.bmm(c, t.transpose(1, 2)) / temperature  # (B, M, M): context m vs target j
    logits = torch.cat([sim.diagonal(dim1=1, dim2=2).unsqueeze(-1), sim.gather(2, negative_index)], dim=-1)
    with torch.no_grad():  # equal targets share an id: compare ids, not (B, M, K, D) gathered rows
        ids = torch.unique(targets.detach().reshape(-1, dim), dim=0, return_inverse=True)[1].view(batch, m)
        neg_is_pos = ids.gather(1, negative_index.reshape(batch, m * k)).view(batch, m, k) == ids.unsqueeze(-1)
    return logits.masked_fill(F.pad(neg_is_pos, (1, 0)), float("-inf"))


def contrastive_loss(logits: Tensor) -> Tensor:
    """(..., 1 + K) logits -> cross-entropy with the target in column 0, SUMMED over frames, as
    fairseq's `wav2vec` criterion; fairseq then divides the gradient by the number of masked
    frames (its sample_size), so divide by logits[..., 0].numel() for the per-frame mean."""
    flat = logits.reshape(-1, logits.shape[-1]).float()
    return F.cross_entropy(flat, flat.new_zeros(flat.shape[0], dtype=torch.long), reduction="sum")


def contrastive_accuracy(logits: Tensor) -> Tensor:
    """Fraction of frames whose positive (column 0) scores highest, by fairseq's rule: argmax == 0
    (the first of tied maxima) counts, except when argmin is 0 too, i.e. the row is constant,
    as for an untrained model whose outputs are all alike; those count as wrong."""
    flat = logits.reshape(-1, logits.shape[-1])
    correct = (flat.argmax(dim=-1) == 0) & (flat.argmin(dim=-1) != 0)
    return correct.float().mean()
