"""Transducer (RNN-T, Graves 2012) prediction networks and joiner.

A prediction network reads the label history and gives one vector per prefix: for targets
y_1..y_U, outputs (B, U+1, P), output u summarising y_1..y_u. Its first input is blank,
which stands for start-of-sequence (as ESPnet, icefall and torchaudio do), so the blank
embedding is the zero vector (`padding_idx`).

- `LSTMPredictor`: embedding -> LSTM, as the Conformer paper (one layer of 320 or 640 cells).
- `StatelessPredictor`: embedding -> depthwise conv over the last `context_size` tokens ->
  ReLU (Ghodsi et al. 2020; icefall's `Decoder`). No recurrence: its state is its context.

Searches drive both through the incremental-decoding protocol of `speechlm.decoders`:
`init_state(n)`, `step(tokens (N,), state) -> (out (N, P), state)` and
`select_state(state, index)` to reorder hypotheses.

`Joiner`: logits = W_o tanh(W_e enc + W_p pred). The two projections are separate methods
so that training projects every frame and prefix once and broadcasts the (T, U+1) sum, and
searches project each encoder frame once.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from speechlm.nn.dropout import Dropout

LSTMState = tuple[Tensor, Tensor]  # h, c: (num_layers, N, H) each


def with_blank_start(tokens: Tensor, lengths: Tensor | None, blank_id: int) -> Tensor:
    """(B, U) targets, anything past `lengths` (e.g. -1) -> (B, U+1): blank, then the
    targets with padding replaced by blank (a valid embedding index)."""
    tokens = tokens.clone()
    if lengths is not None:
        tokens[torch.arange(tokens.shape[1], device=tokens.device) >= lengths.unsqueeze(-1)] = blank_id
    return torch.cat([tokens.new_full((tokens.shape[0], 1), blank_id), tokens], dim=1)


class LSTMPredictor(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int = 320, hidden_size: int = 320, num_layers: int = 1,
                 dropout_rate: float = 0.1, blank_id: int = 0):
        super().__init__()
        self.blank_id = blank_id
        self._output_size = hidden_size
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=blank_id)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers, batch_first=True,
                            dropout=dropout_rate if num_layers > 1 else 0.0)
        self.dropout = Dropout(dropout_rate)

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        """tokens (B, U) targets padded past `lengths` -> (B, U+1, H)."""
        out, _ = self.lstm(self.dropout(self.embed(with_blank_start(tokens, lengths, self.blank_id))))
        return self.dropout(out)

    def output_size(self) -> int:
        """Size of each output vector (as an encoder's `output_size()`)."""
        return self._output_size

    def init_state(self, n: int, device: torch.device | None = None, memory=None, memory_mask=None) -> LSTMState:
        h = torch.zeros(self.lstm.num_layers, n, self.lstm.hidden_size, device=device)
        return h, h.clone()

    def step(self, tokens: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        """One token per hypothesis: tokens (N,) -> output (N, H) and the new state."""
        out, (h, c) = self.lstm(self.embed(tokens).unsqueeze(1), state)
        return out.squeeze(1), (h, c)

    @staticmethod
    def select_state(state: LSTMState, index: Tensor) -> LSTMState:
        return state[0][:, index], state[1][:, index]

    @staticmethod
    def where_state(keep_new: Tensor, new: LSTMState, old: LSTMState) -> LSTMState:
        """Per hypothesis (N,) bool: the new state where True, the old one elsewhere."""
        m = keep_new.view(1, -1, 1)
        return torch.where(m, new[0], old[0]), torch.where(m, new[1], old[1])


class StatelessPredictor(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int = 320, context_size: int = 2, dropout_rate: float = 0.1,
                 blank_id: int = 0):
        super().__init__()
        if context_size < 1:
            raise ValueError(f"context_size must be >= 1, got {context_size}")
        self.blank_id = blank_id
        self.context_size = context_size
        self._output_size = embed_dim
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=blank_id)
        # Depthwise: each embedding channel mixes its own last `context_size` values.
        self.conv = (nn.Conv1d(embed_dim, embed_dim, context_size, groups=embed_dim, bias=False)
                     if context_size > 1 else None)
        self.dropout = Dropout(dropout_rate)

    def _mix(self, emb: Tensor) -> Tensor:
        """(N, L + context_size - 1, E) embeddings with left context -> (N, L, E)."""
        if self.conv is not None:
            emb = self.conv(emb.transpose(1, 2)).transpose(1, 2)
        return torch.relu(emb)

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        """tokens (B, U) targets padded past `lengths` -> (B, U+1, E)."""
        history = with_blank_start(tokens, lengths, self.blank_id)
        history = nn.functional.pad(history, (self.context_size - 1, 0), value=self.blank_id)
        return self.dropout(self._mix(self.dropout(self.embed(history))))

    def output_size(self) -> int:
        """Size of each output vector (as an encoder's `output_size()`)."""
        return self._output_size

    def init_state(self, n: int, device: torch.device | None = None, memory=None, memory_mask=None) -> Tensor:
        """(N, context_size) last tokens, all blank."""
        return torch.full((n, self.context_size), self.blank_id, dtype=torch.long, device=device)

    def step(self, tokens: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        context = torch.cat([state[:, 1:], tokens.unsqueeze(1)], dim=1)
        return self._mix(self.embed(context)).squeeze(1), context

    @staticmethod
    def select_state(state: Tensor, index: Tensor) -> Tensor:
        return state[index]

    @staticmethod
    def where_state(keep_new: Tensor, new: Tensor, old: Tensor) -> Tensor:
        return torch.where(keep_new.unsqueeze(1), new, old)


class Joiner(nn.Module):
    def __init__(self, encoder_dim: int, predictor_dim: int, joint_dim: int, vocab_size: int):
        super().__init__()
        self.encoder_proj = nn.Linear(encoder_dim, joint_dim)
        self.predictor_proj = nn.Linear(predictor_dim, joint_dim)
        self.output = nn.Linear(joint_dim, vocab_size)

    def project_encoder(self, enc: Tensor) -> Tensor:
        return self.encoder_proj(enc)

    def project_predictor(self, pred: Tensor) -> Tensor:
        return self.predictor_proj(pred)

    def joint(self, enc_proj: Tensor, pred_proj: Tensor) -> Tensor:
        """Projected inputs that broadcast against each other, e.g. (B, T, 1, J) and
        (B, 1, U+1, J) -> logits (B, T, U+1, V)."""
        return self.output(torch.tanh(enc_proj + pred_proj))

    def forward(self, enc: Tensor, pred: Tensor) -> Tensor:
        """Unprojected (B, T, D) and (B, U+1, P) -> logits (B, T, U+1, V)."""
        return self.joint(self.project_encoder(enc).unsqueeze(2), self.project_predictor(pred).unsqueeze(1))
