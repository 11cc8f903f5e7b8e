"""Convolutional gating MLP (cgMLP, Sakuma et al. 2021) as used by Branchformer and
E-Branchformer, numerically ESPnet's `ConvolutionalGatingMLP`:
Linear(D->U) + GELU -> split -> gate = act(linear?(dwconv(LN(x_g)))) -> x_r * gate ->
Linear(U/2 -> D)."""
from __future__ import annotations

from torch import Tensor, nn

from speechlm.nn.activation import activation
from speechlm.nn.convolution import depthwise_conv_over_time
from speechlm.nn.dropout import Dropout
from speechlm.nn.norm import LayerNorm

class ConvolutionalSpatialGatingUnit(nn.Module):
    def __init__(self, size: int, kernel_size: int, dropout_rate: float, use_linear_after_conv: bool, gate_activation: str):
        super().__init__()
        n = size // 2
        self.norm = LayerNorm(n)
        self.conv = nn.Conv1d(n, n, kernel_size, 1, (kernel_size - 1) // 2, groups=n)
        self.linear = nn.Linear(n, n) if use_linear_after_conv else None
        self.act = activation(gate_activation)
        self.dropout = Dropout(dropout_rate)
        # ESPnet's initialisation: the gate starts near 1, so the unit starts as identity.
        nn.init.normal_(self.conv.weight, std=1e-6)
        nn.init.ones_(self.conv.bias)
        if self.linear is not None:
            nn.init.normal_(self.linear.weight, std=1e-6)
            nn.init.ones_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, U) -> (B, T, U/2)"""
        x_r, x_g = x.chunk(2, dim=-1)
        x_g = depthwise_conv_over_time(self.norm(x_g), self.conv)
        if self.linear is not None:
            x_g = self.linear(x_g)
        return self.dropout(x_r * self.act(x_g))

class ConvolutionalGatingMLP(nn.Module):
    def __init__(self, size: int, linear_units: int, kernel_size: int, dropout_rate: float,
                 use_linear_after_conv: bool = False, gate_activation: str = "identity"):
        super().__init__()
        self.channel_proj1 = nn.Sequential(nn.Linear(size, linear_units), nn.GELU())
        self.csgu = ConvolutionalSpatialGatingUnit(linear_units, kernel_size, dropout_rate, use_linear_after_conv, gate_activation)
        self.channel_proj2 = nn.Linear(linear_units // 2, size)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, D)"""
        return self.channel_proj2(self.csgu(self.channel_proj1(x)))

