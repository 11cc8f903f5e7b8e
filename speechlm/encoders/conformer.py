"""Conformer encoder (Gulati et al. 2020), architecturally ESPnet's `ConformerEncoder`
(rel_pos_type "latest"): same arguments, parameter names and outputs, so ESPnet
checkpoints load through `speechlm.interop.espnet`.

Block: x + 1/2 FFN(x) -> x + MHSA(x) -> x + Conv(x) -> x + 1/2 FFN(x) -> LayerNorm,
each sub-layer pre-normed (macaron FFNs halve their residual, as in the paper).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from speechlm.encoders.base import (
    Encoder,
    input_layer,
    per_layer,
    positional_encoding,
    relative_position_types,
    self_attention,
)
from speechlm.nn.activation import activation
from speechlm.nn.convolution import ConvolutionModule
from speechlm.nn.dropout import Dropout
from speechlm.nn.feed_forward import FeedForward
from speechlm.nn.norm import LayerNorm


class ConformerBlock(nn.Module):
    """ESPnet's conformer `EncoderLayer` (concat_after=False)."""

    def __init__(self, size: int, self_attn: nn.Module, feed_forward: nn.Module, feed_forward_macaron: nn.Module | None,
                 conv_module: nn.Module | None, dropout_rate: float, normalize_before: bool = True,
                 stochastic_depth_rate: float = 0.0):
        super().__init__()
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.feed_forward_macaron = feed_forward_macaron
        self.conv_module = conv_module
        self.norm_ff = LayerNorm(size)
        self.norm_mha = LayerNorm(size)
        self.ff_scale = 1.0
        if feed_forward_macaron is not None:
            self.norm_ff_macaron = LayerNorm(size)
            self.ff_scale = 0.5
        if conv_module is not None:
            self.norm_conv = LayerNorm(size)
            self.norm_final = LayerNorm(size)
        self.dropout = Dropout(dropout_rate)
        self.normalize_before = normalize_before
        self.stochastic_depth_rate = stochastic_depth_rate

    def _residual(self, x: Tensor, norm: nn.Module, fn, scale: float) -> Tensor:
        if self.normalize_before:
            return x + scale * self.dropout(fn(norm(x)))
        return norm(x + scale * self.dropout(fn(x)))

    def forward(self, x: Tensor, pos_emb: Tensor | None, mask: Tensor) -> Tensor:
        """x (B, T, D), pos_emb (1, 2T-1, D) or None, mask (B, 1, T) -> (B, T, D)"""
        coeff = 1.0
        if self.training and self.stochastic_depth_rate > 0:
            if torch.rand(1).item() < self.stochastic_depth_rate:
                return x  # the whole block is skipped (stochastic depth)
            coeff = 1.0 / (1.0 - self.stochastic_depth_rate)
        if self.feed_forward_macaron is not None:
            x = self._residual(x, self.norm_ff_macaron, self.feed_forward_macaron, coeff * self.ff_scale)
        x = self._residual(x, self.norm_mha, lambda h: self.self_attn(h, pos_emb, mask), coeff)
        if self.conv_module is not None:
            x = self._residual(x, self.norm_conv, self.conv_module, coeff)
        x = self._residual(x, self.norm_ff, self.feed_forward, coeff * self.ff_scale)
        if self.conv_module is not None:
            x = self.norm_final(x)
        return x


class ConformerEncoder(Encoder):
    """Arguments and defaults are ESPnet's `ConformerEncoder`'s, except `rel_pos_type`,
    which defaults to "latest" here ("legacy" in ESPnet, kept for old checkpoints; the
    ESPnet converter passes it explicitly), and `use_rope`, which is ours."""

    def __init__(
        self,
        input_size: int,
        output_size: int = 256,
        attention_heads: int = 4,
        linear_units: int = 2048,
        num_blocks: int = 6,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.0,
        input_layer: str = "conv2d",
        normalize_before: bool = True,
        macaron_style: bool = False,
        rel_pos_type: str = "latest",
        pos_enc_layer_type: str = "rel_pos",
        selfattention_layer_type: str = "rel_selfattn",
        activation_type: str = "swish",
        use_cnn_module: bool = True,
        zero_triu: bool = False,
        cnn_module_kernel: int = 31,
        stochastic_depth_rate: float | Sequence[float] = 0.0,
        layer_drop_rate: float = 0.0,
        max_pos_emb_len: int = 5000,
        use_rope: bool = False,
    ):
        super().__init__()
        if use_rope:
            pos_enc_layer_type, selfattention_layer_type = "none", "selfattn"
        pos_enc_layer_type, selfattention_layer_type = relative_position_types(
            rel_pos_type, pos_enc_layer_type, selfattention_layer_type)
        self._output_size = output_size
        self.layer_drop_rate = layer_drop_rate
        self.embed = _input_layer(input_layer, input_size, output_size, dropout_rate)
        self.pos_enc = positional_encoding(pos_enc_layer_type, output_size, positional_dropout_rate, max_pos_emb_len)
        act = activation(activation_type)

        def attention() -> nn.Module:
            return self_attention(selfattention_layer_type, pos_enc_layer_type, attention_heads, output_size,
                                  attention_dropout_rate, zero_triu, rope=use_rope)

        def ffn() -> nn.Module:
            return FeedForward(output_size, linear_units, dropout_rate, act)

        self.encoders = nn.ModuleList(
            ConformerBlock(
                output_size, attention(), ffn(), ffn() if macaron_style else None,
                ConvolutionModule(output_size, cnn_module_kernel, act) if use_cnn_module else None,
                dropout_rate, normalize_before, rate,
            )
            for rate in per_layer(stochastic_depth_rate, num_blocks)
        )
        self.after_norm = LayerNorm(output_size) if normalize_before else None


_input_layer = input_layer  # the argument name shadows the helper inside __init__
