"""E-Branchformer encoder (Kim et al. 2022), ESPnet's `EBranchformerEncoder`.

Block: [x + 1/2 FFN(x)] -> two parallel branches, global (MHSA) and local (cgMLP) ->
merged by a depthwise conv over their concatenation and a Linear -> [x + 1/2 FFN(x)]
-> LayerNorm. Intermediate outputs are not passed through the final norm (as ESPnet).
"""
from __future__ import annotations


import torch
from torch import Tensor, nn

from speechlm.encoders.base import Encoder, input_layer, positional_encoding, relative_position_types, self_attention
from speechlm.nn.activation import activation
from speechlm.nn.cgmlp import ConvolutionalGatingMLP
from speechlm.nn.convolution import depthwise_conv_over_time
from speechlm.nn.dropout import Dropout
from speechlm.nn.feed_forward import FeedForward
from speechlm.nn.norm import LayerNorm


class EBranchformerBlock(nn.Module):
    def __init__(self, size: int, attn: nn.Module, cgmlp: nn.Module, feed_forward: nn.Module | None,
                 feed_forward_macaron: nn.Module | None, dropout_rate: float, merge_conv_kernel: int = 3):
        super().__init__()
        self.attn = attn
        self.cgmlp = cgmlp
        self.feed_forward = feed_forward
        self.feed_forward_macaron = feed_forward_macaron
        self.ff_scale = 1.0
        if feed_forward is not None:
            self.norm_ff = LayerNorm(size)
        if feed_forward_macaron is not None:
            self.ff_scale = 0.5
            self.norm_ff_macaron = LayerNorm(size)
        self.norm_mha = LayerNorm(size)
        self.norm_mlp = LayerNorm(size)
        self.norm_final = LayerNorm(size)
        self.dropout = Dropout(dropout_rate)
        self.depthwise_conv_fusion = nn.Conv1d(2 * size, 2 * size, merge_conv_kernel, 1,
                                               (merge_conv_kernel - 1) // 2, groups=2 * size)
        self.merge_proj = nn.Linear(2 * size, size)

    def forward(self, x: Tensor, pos_emb: Tensor | None, mask: Tensor) -> Tensor:
        """x (B, T, D), pos_emb (1, 2T-1, D) or None, mask (B, 1, T) -> (B, T, D)"""
        if self.feed_forward_macaron is not None:
            x = x + self.ff_scale * self.dropout(self.feed_forward_macaron(self.norm_ff_macaron(x)))
        global_branch = self.dropout(self.attn(self.norm_mha(x), pos_emb, mask))
        local_branch = self.dropout(self.cgmlp(self.norm_mlp(x)))
        both = torch.cat([global_branch, local_branch], dim=-1)  # (B, T, 2D)
        fused = depthwise_conv_over_time(both, self.depthwise_conv_fusion)
        x = x + self.dropout(self.merge_proj(both + fused))
        if self.feed_forward is not None:
            x = x + self.ff_scale * self.dropout(self.feed_forward(self.norm_ff(x)))
        return self.norm_final(x)


class EBranchformerEncoder(Encoder):
    """Arguments and defaults are ESPnet's `EBranchformerEncoder`'s; `use_rope` is ours."""

    norm_intermediate = False

    def __init__(
        self,
        input_size: int,
        output_size: int = 256,
        attention_heads: int = 4,
        attention_layer_type: str = "rel_selfattn",
        pos_enc_layer_type: str = "rel_pos",
        rel_pos_type: str = "latest",
        cgmlp_linear_units: int = 2048,
        cgmlp_conv_kernel: int = 31,
        use_linear_after_conv: bool = False,
        gate_activation: str = "identity",
        num_blocks: int = 12,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.0,
        input_layer: str = "conv2d",
        zero_triu: bool = False,
        layer_drop_rate: float = 0.0,
        use_ffn: bool = False,
        macaron_ffn: bool = False,
        ffn_activation_type: str = "swish",
        linear_units: int = 2048,
        merge_conv_kernel: int = 3,
        max_pos_emb_len: int = 5000,
        use_rope: bool = False,
    ):
        super().__init__()
        if use_rope:
            pos_enc_layer_type, attention_layer_type = "none", "selfattn"
        pos_enc_layer_type, attention_layer_type = relative_position_types(
            rel_pos_type, pos_enc_layer_type, attention_layer_type)
        self._output_size = output_size
        self.layer_drop_rate = layer_drop_rate
        self.embed = _input_layer(input_layer, input_size, output_size, dropout_rate)
        self.pos_enc = positional_encoding(pos_enc_layer_type, output_size, positional_dropout_rate, max_pos_emb_len)
        act = activation(ffn_activation_type)

        def attention() -> nn.Module:
            return self_attention(attention_layer_type, pos_enc_layer_type, attention_heads, output_size,
                                  attention_dropout_rate, zero_triu, rope=use_rope)

        def ffn() -> nn.Module | None:
            return FeedForward(output_size, linear_units, dropout_rate, act) if use_ffn else None

        self.encoders = nn.ModuleList(
            EBranchformerBlock(
                output_size, attention(),
                ConvolutionalGatingMLP(output_size, cgmlp_linear_units, cgmlp_conv_kernel, dropout_rate,
                                       use_linear_after_conv, gate_activation),
                ffn(), ffn() if macaron_ffn else None, dropout_rate, merge_conv_kernel,
            )
            for _ in range(num_blocks)
        )
        self.after_norm = LayerNorm(output_size)


_input_layer = input_layer
