"""Transformer encoder (Vaswani et al. 2017 with pre-norm), ESPnet's `TransformerEncoder`:
absolute sinusoidal positions, x + MHSA(LN(x)), x + FFN(LN(x))."""
from __future__ import annotations

from torch import Tensor, nn

from speechlm.encoders.base import Encoder, input_layer, positional_encoding
from speechlm.nn.activation import activation
from speechlm.nn.attention import MultiHeadAttention
from speechlm.nn.dropout import Dropout
from speechlm.nn.feed_forward import FeedForward
from speechlm.nn.norm import LayerNorm


class TransformerBlock(nn.Module):
    """ESPnet's transformer `EncoderLayer` (names norm1, norm2; concat_after=False)."""

    def __init__(self, size: int, self_attn: nn.Module, feed_forward: nn.Module, dropout_rate: float,
                 normalize_before: bool = True):
        super().__init__()
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.norm1 = LayerNorm(size)
        self.norm2 = LayerNorm(size)
        self.dropout = Dropout(dropout_rate)
        self.normalize_before = normalize_before

    def forward(self, x: Tensor, pos_emb: Tensor | None, mask: Tensor) -> Tensor:
        if self.normalize_before:
            x = x + self.dropout(self.self_attn(self.norm1(x), pos_emb, mask))
            return x + self.dropout(self.feed_forward(self.norm2(x)))
        x = self.norm1(x + self.dropout(self.self_attn(x, pos_emb, mask)))
        return self.norm2(x + self.dropout(self.feed_forward(x)))


class TransformerEncoder(Encoder):
    """Arguments and defaults are ESPnet's `TransformerEncoder`'s (FFN activation ReLU);
    `use_rope` (rotary positions instead of the absolute table) is ours."""

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
        pos_enc_layer_type: str = "abs_pos",
        normalize_before: bool = True,
        layer_drop_rate: float = 0.0,
        activation_type: str = "relu",
        use_rope: bool = False,
    ):
        super().__init__()
        self._output_size = output_size
        self.layer_drop_rate = layer_drop_rate
        # ESPnet's Transformer (only) puts a ReLU after its linear input layer
        self.embed = _input_layer(input_layer, input_size, output_size, dropout_rate, linear_relu=True)
        self.pos_enc = positional_encoding("none" if use_rope else pos_enc_layer_type, output_size, positional_dropout_rate)
        act = activation(activation_type)
        self.encoders = nn.ModuleList(
            TransformerBlock(
                output_size,
                MultiHeadAttention(attention_heads, output_size, attention_dropout_rate, rope=use_rope),
                FeedForward(output_size, linear_units, dropout_rate, act),
                dropout_rate, normalize_before,
            )
            for _ in range(num_blocks)
        )
        self.after_norm = LayerNorm(output_size) if normalize_before else None


_input_layer = input_layer
