"""The Conformer convolution module (Gulati et al. 2020), numerically ESPnet's:
pointwise conv (2C) -> GLU -> depthwise conv -> BatchNorm -> activation -> pointwise.

The pointwise convolutions keep their Conv1d parameters (ESPnet's names and shapes) but
run as matmuls on (B, T, C), and the depthwise conv reads (B, T, C) in place (see
`depthwise_conv_over_time`), so the module never transposes. Like ESPnet, padded frames are
not zeroed before the depthwise conv, so trained ESPnet models behave the same here.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F


def _conv_over_time(x: Tensor, weight: Tensor, bias: Tensor | None, padding: int, stride: int = 1,
                    dilation: int = 1) -> Tensor:
    """Depthwise conv of x (B, T, C) with weight (C, 1, K) as a 2-D conv on the channels-last
    (B, C, 1, T) view -> (B, T', C), contiguous when oneDNN keeps the layout."""
    y = F.conv2d(x.transpose(1, 2).unsqueeze(2), weight.unsqueeze(2), bias, (1, stride), (0, padding),
                 (1, dilation), weight.shape[0])
    return y.squeeze(2).transpose(1, 2)


class _DepthwiseConvOverTime(torch.autograd.Function):
    """Stride 1, dilation 1, zero padding P <= K - 1. oneDNN's own backward for a depthwise
    conv spends ~15 ms (B 8, T 250, C 512, K 31) on the weight gradient; here both gradients
    are forward convolutions, which oneDNN runs fast: the input gradient convolves the
    output gradient with the flipped kernel, the weight gradient correlates the padded
    input with the output gradient, one (B*C)-group conv with a T'-long kernel."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, padding: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return _conv_over_time(x, weight, bias, padding)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        b, t, c = x.shape
        k, p = weight.shape[-1], ctx.padding
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _conv_over_time(grad, weight.flip(-1), None, k - 1 - p)
        if ctx.needs_input_grad[1]:
            padded = F.pad(x, (0, 0, p, p)).transpose(0, 1).reshape(1, t + 2 * p, b * c)  # (1, T+2P, B*C)
            kernels = grad.transpose(1, 2).reshape(b * c, 1, 1, grad.shape[1])  # (B*C, 1, 1, T')
            per_utt = F.conv2d(padded.transpose(1, 2).unsqueeze(2), kernels, groups=b * c)  # (1, B*C, 1, K)
            grad_w = per_utt.view(b, c, k).sum(0).unsqueeze(1)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 1))
        return grad_x, grad_w, grad_b, None


def depthwise_conv_over_time(x: Tensor, conv: nn.Conv1d) -> Tensor:
    """A depthwise `nn.Conv1d` (groups == channels) over (B, T, C) frames -> (B, T', C).

    Run as a 2-D convolution on the (B, C, 1, T) view of x, which has channels-last strides:
    oneDNN then convolves in that layout without copying and writes a channels-last output,
    whose (B, T', C) view is contiguous. On a CPU the backward is `_DepthwiseConvOverTime`'s.
    Forward + backward (B 8, T 250, C 256, K 31, one thread) ~10x faster than
    `conv(x.transpose(1, 2))`; the same sums up to float rounding (tests/nn)."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str) or conv.groups != conv.in_channels:
        return conv(x.transpose(1, 2)).transpose(1, 2)
    (k,), (p,), (s,), (d,) = conv.kernel_size, conv.padding, conv.stride, conv.dilation
    if (x.device.type == "cpu" and s == 1 and d == 1 and p <= k - 1 and x.dtype == conv.weight.dtype
            and not torch.is_autocast_enabled("cpu")):
        return _DepthwiseConvOverTime.apply(x, conv.weight, conv.bias, p)
    return _conv_over_time(x, conv.weight, conv.bias, p, s, d)


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
        x = depthwise_conv_over_time(x, self.depthwise_conv)  # (B, T, C)
        # BatchNorm1d over (B*T, C) rows: the statistics of its (B, C, T) form, no transpose
        x = self.activation(self.norm(x.reshape(-1, x.shape[-1])).view_as(x))
        return F.linear(x, self.pointwise_conv2.weight.squeeze(-1), self.pointwise_conv2.bias)
