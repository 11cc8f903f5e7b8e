"""What every encoder shares: a stem (input layer -> positional encoding) and blocks (->
final norm), callable separately, with per-layer outputs on request and layer drop.
Families differ only in their blocks.

A block is called as `block(x (B, T, D), pos_emb, mask (B, 1, T)) -> (B, T, D)`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from speechlm.nn.masks import valid_mask
from speechlm.nn.attention import LegacyRelPositionMultiHeadAttention, MultiHeadAttention, RelPositionMultiHeadAttention
from speechlm.nn.positional import (
    LegacyRelPositionalEncoding,
    NoPositionalEncoding,
    PositionalEncoding,
    RelPositionalEncoding,
)
from speechlm.nn.subsampling import Conv2dSubsampling, LinearInput


class StemOutput(NamedTuple):
    x: Tensor  # (B, T', D) subsampled, position-scaled frames
    lengths: Tensor  # (B,)
    pos_emb: Tensor | None  # relative-position embeddings for the blocks, or None


class EncoderOutput(NamedTuple):
    output: Tensor  # (B, T', D)
    lengths: Tensor  # (B,)
    intermediate: dict[int, Tensor]  # 1-based layer number -> (B, T', D)


def input_layer(kind: str, idim: int, odim: int, dropout_rate: float, linear_relu: bool = False) -> nn.Module:
    """ESPnet's `input_layer` names: conv2d (x4), conv2d2, conv2d6, conv2d8, linear."""
    if kind == "linear":
        return LinearInput(idim, odim, dropout_rate, relu=linear_relu)
    return Conv2dSubsampling(idim, odim, kind)


def positional_encoding(kind: str, d_model: int, dropout_rate: float, max_len: int = 5000) -> nn.Module:
    """ESPnet's `pos_enc_layer_type` names: abs_pos, rel_pos, legacy_rel_pos; "none" for
    RoPE. `max_len` matters only to legacy_rel_pos (see `LegacyRelPositionalEncoding`)."""
    if kind == "abs_pos":
        return PositionalEncoding(d_model, dropout_rate)
    if kind == "rel_pos":
        return RelPositionalEncoding(d_model, dropout_rate)
    if kind == "legacy_rel_pos":
        return LegacyRelPositionalEncoding(d_model, dropout_rate, max_len)
    if kind == "none":
        return NoPositionalEncoding(d_model, dropout_rate)
    raise ValueError(f"unsupported pos_enc_layer_type '{kind}' (abs_pos, rel_pos, legacy_rel_pos, none)")


def relative_position_types(rel_pos_type: str, pos_enc_layer_type: str, attention_layer_type: str) -> tuple[str, str]:
    """ESPnet's rule: rel_pos_type "legacy" turns rel_pos / rel_selfattn into their legacy
    versions; "latest" leaves them. Returns (pos_enc_layer_type, attention_layer_type)."""
    if rel_pos_type == "legacy":
        pos_enc_layer_type = {"rel_pos": "legacy_rel_pos"}.get(pos_enc_layer_type, pos_enc_layer_type)
        attention_layer_type = {"rel_selfattn": "legacy_rel_selfattn"}.get(attention_layer_type, attention_layer_type)
    elif rel_pos_type == "latest":
        if pos_enc_layer_type == "legacy_rel_pos" or attention_layer_type == "legacy_rel_selfattn":
            raise ValueError("legacy_rel_pos / legacy_rel_selfattn need rel_pos_type 'legacy'")
    else:
        raise ValueError(f"unknown rel_pos_type '{rel_pos_type}' (latest or legacy)")
    return pos_enc_layer_type, attention_layer_type


def self_attention(kind: str, pos_enc_layer_type: str, heads: int, size: int, dropout_rate: float,
                   zero_triu: bool = False, rope: bool = False) -> nn.Module:
    """ESPnet's `selfattention_layer_type` / `attention_layer_type` names: selfattn,
    rel_selfattn (needs pos_enc_layer_type rel_pos), legacy_rel_selfattn (legacy_rel_pos).
    As in ESPnet's encoders, `zero_triu` reaches rel_selfattn only."""
    needs = {"rel_selfattn": "rel_pos", "legacy_rel_selfattn": "legacy_rel_pos"}
    if kind in needs and pos_enc_layer_type != needs[kind]:
        raise ValueError(f"{kind} needs pos_enc_layer_type {needs[kind]}, not {pos_enc_layer_type}")
    if kind == "rel_selfattn":
        return RelPositionMultiHeadAttention(heads, size, dropout_rate, zero_triu)
    if kind == "legacy_rel_selfattn":
        return LegacyRelPositionMultiHeadAttention(heads, size, dropout_rate)
    if kind == "selfattn":
        return MultiHeadAttention(heads, size, dropout_rate, rope=rope)
    raise ValueError(f"unsupported self-attention type '{kind}' (selfattn, rel_selfattn, legacy_rel_selfattn)")


def per_layer(rate: float | Sequence[float], num_blocks: int) -> list[float]:
    rates = [float(rate)] * num_blocks if isinstance(rate, (int, float)) else [float(r) for r in rate]
    if len(rates) != num_blocks:
        raise ValueError(f"{len(rates)} stochastic depth rates for {num_blocks} blocks")
    return rates


class Encoder(nn.Module):
    """Subclasses set `embed`, `pos_enc`, `encoders` (a ModuleList of blocks) and
    `after_norm` (or None), and say whether intermediate outputs get the final norm."""

    embed: nn.Module
    pos_enc: nn.Module
    encoders: nn.ModuleList
    after_norm: nn.Module | None
    norm_intermediate: bool = True
    layer_drop_rate: float = 0.0

    def output_size(self) -> int:
        return self._output_size

    def stem(self, xs: Tensor, lengths: Tensor) -> StemOutput:
        """Input layer (subsampling) and positional encoding: xs (B, T, F), lengths (B,) ->
        StemOutput(x (B, T', D), lengths (B,), pos_emb). A model that masks or mixes frames
        (wav2vec 2.0, HuBERT, BEST-RQ) changes `x` here before `blocks`."""
        x, lengths = self.embed(xs, lengths)
        x, pos_emb = self.pos_enc(x)
        return StemOutput(x, lengths, pos_emb)

    def blocks(self, stem: StemOutput, return_layers: Sequence[int] = (),
               condition: Callable[[Tensor], Tensor] | None = None) -> EncoderOutput:
        """The blocks and the final norm over a stem's output -> EncoderOutput;
        `return_layers` are 1-based.

        `condition` (self-conditioned CTC, Nozaki & Komatsu 2021): after each layer in
        `return_layers`, x += condition(that layer's output as returned)."""
        x, lengths, pos_emb = stem
        mask = valid_mask(lengths, x.shape[1]).unsqueeze(1)
        dropped = None
        if self.training and self.layer_drop_rate > 0:
            dropped = (torch.rand(len(self.encoders)) < self.layer_drop_rate).tolist()
        intermediate = {}
        for i, block in enumerate(self.encoders, start=1):
            if dropped is not None and dropped[i - 1]:
                continue
            x = block(x, pos_emb, mask)
            if i in return_layers:
                norm = self.after_norm is not None and self.norm_intermediate
                intermediate[i] = self.after_norm(x) if norm else x
                if condition is not None:
                    x = x + condition(intermediate[i])
        if self.after_norm is not None:
            x = self.after_norm(x)
        return EncoderOutput(x, lengths, intermediate)

    def forward(self, xs: Tensor, lengths: Tensor, return_layers: Sequence[int] = (),
                condition: Callable[[Tensor], Tensor] | None = None) -> EncoderOutput:
        """xs (B, T, F), lengths (B,) -> EncoderOutput: `blocks(stem(xs, lengths))`."""
        return self.blocks(self.stem(xs, lengths), return_layers, condition)
