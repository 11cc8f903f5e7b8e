"""The Conformer convolution module (Gulati et al. 2020), numerically ESPnet's:
pointwise conv (2C) -> GLU -> depthwise conv -> BatchNorm -> activation -> pointwise.

The pointwise convolutions keep their Conv1d parameters (ESPnet's names and shapes) but
run as matmuls on (B, T, C), saving two transposes. Like ESPnet, padded frames are not
zeroed before the depthwise conv, so trained ESPnet models behave the same here.
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F


class ConvolutionModule(nn.Module):
    def __init__(self, channels: int, kernel_size: int, act: nn.Module, bias: bool = True):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"the depthwise kernel must be odd for 'same' padding, got {kernel_size}")
        self.pointwise_conv1 = nn.Conv1d(channels, 2 * channels, 1, bias=bias)
        self.depthwise_conv = nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2, groups=channels, bias=bias)
        self.norm = nn.BatchNorm1d(channels)
        self.pointwise_conv2 = nn.Conv1d(channels, channels, 1, bias=bias)
        self.activation = act

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, T, C)"""
        x = F.glu(F.linear(x, self.pointwise_conv1.weight.squeeze(-1), self.pointwise_conv1.bias), dim=-1)
        x = self.activation(self.norm(self.depthwise_conv(x.transpose(1, 2))))
        return F.linear(x.transpose(1, 2), self.pointwise_conv2.weight.squeeze(-1), self.pointwise_conv2.bias)
