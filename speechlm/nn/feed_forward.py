"""Position-wise feed-forward: w_2(dropout(act(w_1(x)))), ESPnet's names."""
from __future__ import annotations

from torch import Tensor, nn

from speechlm.nn.dropout import Dropout


class FeedForward(nn.Module):
    def __init__(self, size: int, hidden: int, dropout_rate: float, act: nn.Module):
        super().__init__()
        self.w_1 = nn.Linear(size, hidden)
        self.w_2 = nn.Linear(hidden, size)
        self.activation = act
        self.dropout = Dropout(dropout_rate)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, D)"""
        return self.w_2(self.dropout(self.activation(self.w_1(x))))
