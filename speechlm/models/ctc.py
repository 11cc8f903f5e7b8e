"""CTC head (Graves et al. 2006): a Linear from encoder states to token scores and the CTC
loss, as ESPnet's `CTC` (ctc_type "builtin"): parameter `ctc_lo`, the loss summed over the
batch and divided by the batch size, infinite losses (targets too long for their input)
zeroed with their gradients.

One deliberate difference: ESPnet applies its `dropout_rate` in eval mode too (it calls
`F.dropout` without `training=`); here dropout is off in eval mode. At ESPnet's default,
dropout_rate 0.0, the two agree.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from speechlm.nn.dropout import Dropout
from speechlm.nn.masks import valid_mask


class CTC(nn.Module):
    def __init__(self, vocab_size: int, encoder_output_size: int, dropout_rate: float = 0.0,
                 zero_infinity: bool = True, blank_id: int = 0):
        super().__init__()
        self.ctc_lo = nn.Linear(encoder_output_size, vocab_size)
        self.dropout = Dropout(dropout_rate)
        self.zero_infinity = zero_infinity
        self.blank_id = blank_id
        self.last_infeasible: Tensor | None = None

    def forward(self, hs: Tensor, hlens: Tensor, ys: Tensor, ys_lens: Tensor) -> Tensor:
        """hs (B, T, D) encoder output, hlens (B,), ys (B, L) targets (padding anywhere past
        ys_lens, e.g. -1), ys_lens (B,) -> scalar loss: sum over utterances / B.

        `last_infeasible` (B,) bool is left set to the utterances whose targets cannot be
        aligned to their frames (tokens + repeated neighbours > frames): their loss is
        infinite, zeroed here with `zero_infinity`, so the trainer reads this to drop them
        from the batch and count them (`speechlm.train.task`) rather than train on nothing."""
        log_probs = torch.log_softmax(self.ctc_lo(self.dropout(hs)), dim=-1).float()
        valid = valid_mask(ys_lens, ys.shape[1])
        repeats = ((ys[:, 1:] == ys[:, :-1]) & valid[:, 1:]).sum(1)
        self.last_infeasible = hlens.to(ys_lens.device) < ys_lens + repeats
        targets = ys[valid]  # the real tokens, concatenated
        loss = nn.functional.ctc_loss(
            log_probs.transpose(0, 1), targets, hlens, ys_lens, blank=self.blank_id,
            reduction="sum", zero_infinity=self.zero_infinity,
        )
        return (loss / hs.shape[0]).to(hs.dtype)

    def log_softmax(self, hs: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, V) frame log-probabilities."""
        return torch.log_softmax(self.ctc_lo(hs), dim=-1)

    def softmax(self, hs: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, V) frame posteriors."""
        return torch.softmax(self.ctc_lo(hs), dim=-1)

    def argmax(self, hs: Tensor) -> Tensor:
        """(B, T, D) -> (B, T) best token per frame (blanks and repeats not yet removed)."""
        return self.ctc_lo(hs).argmax(dim=-1)
