"""Transformer attention decoder, architecturally ESPnet's `TransformerDecoder`: same
constructor arguments and defaults, same computation, and ESPnet's parameter names with
three exceptions that `speechlm.interop.espnet_asr` converts:

    ESPnet                                   here
    embed.0.weight                           embed.weight (the positional encoding,
                                             ESPnet's embed.1, has no parameters)
    decoders.N.self_attn.linear_{q,k,v}      decoders.N.self_attn.qkv (fused, q;k;v)
    decoders.N.src_attn.linear_{k,v}         decoders.N.src_attn.kv (fused, k;v)

Block (pre-norm): x + SelfAttn(norm1(x)) -> x + SrcAttn(norm2(x), memory) -> x + FFN(norm3(x)).

Two ways to run it: `forward` scores whole teacher-forced sequences (training), and the
incremental-decoding protocol every autoregressive part of speechlm shares (beam search):

    state = decoder.init_state(n, memory=memory, memory_mask=mask)   # n rows (hypotheses)
    log_probs, state = decoder.step(tokens, state)                   # tokens (n,) -> (n, V)
    state = decoder.select_state(state, index)                       # rows kept / reordered

The state keeps per layer the self-attention keys/values of the positions already seen and
the projected encoder output, so each step costs one position, not the whole prefix (ESPnet
caches each layer's outputs and recomputes keys, values and the memory projection at every
step).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from speechlm.nn.attention import MultiHeadAttention
from speechlm.nn.cross_attention import CrossAttention
from speechlm.nn.dropout import Dropout
from speechlm.nn.feed_forward import FeedForward
from speechlm.nn.masks import valid_mask
from speechlm.nn.norm import LayerNorm
from speechlm.nn.positional import PositionalEncoding


class LayerCache(NamedTuple):
    """One decoder block's state; every tensor has N rows (hypotheses)."""

    self_k: Tensor  # (N, H, L, d_k) self-attention keys of the L tokens seen so far
    self_v: Tensor  # (N, H, L, d_k)
    src_k: Tensor  # (N, H, T, d_k) encoder output projected by src_attn, computed once
    src_v: Tensor  # (N, H, T, d_k)


class DecoderState(NamedTuple):
    """`TransformerDecoder`'s incremental state for N rows."""

    layers: list[LayerCache]
    memory_mask: Tensor | None  # (N, 1, T) True on real frames; None: no padding
    source: Tensor  # (N,) the memory row each row reads: lets `select_state` see when the
    # memory side need not move (rows reordered within their utterance, trailing ones dropped)


def causal_mask(size: int, device=None) -> Tensor:
    """(L, L) bool, True where query i may attend key j (j <= i)."""
    return torch.ones(size, size, dtype=torch.bool, device=device).tril()


class TransformerDecoderBlock(nn.Module):
    """ESPnet's `DecoderLayer` (concat_after=False)."""

    def __init__(self, size: int, self_attn: MultiHeadAttention, src_attn: CrossAttention,
                 feed_forward: nn.Module, dropout_rate: float, normalize_before: bool = True):
        super().__init__()
        self.self_attn = self_attn
        self.src_attn = src_attn
        self.feed_forward = feed_forward
        self.norm1 = LayerNorm(size)
        self.norm2 = LayerNorm(size)
        self.norm3 = LayerNorm(size)
        self.dropout = Dropout(dropout_rate)
        self.normalize_before = normalize_before

    def _src_and_ffn(self, x: Tensor, memory: Tensor | None, memory_mask: Tensor,
                     memory_kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
        pre = self.normalize_before
        h = self.src_attn(self.norm2(x) if pre else x, memory, memory_mask, memory_kv)
        x = x + self.dropout(h)
        if not pre:
            x = self.norm2(x)
        x = x + self.dropout(self.feed_forward(self.norm3(x) if pre else x))
        return x if pre else self.norm3(x)

    def forward(self, x: Tensor, tgt_mask: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        """x (B, L, D), tgt_mask (B, L, L), memory (B, T, D), memory_mask (B, 1, T) -> (B, L, D)"""
        h = self.self_attn(self.norm1(x) if self.normalize_before else x, None, tgt_mask)
        x = x + self.dropout(h)
        if not self.normalize_before:
            x = self.norm1(x)
        return self._src_and_ffn(x, memory, memory_mask)

    def step(self, x: Tensor, cache: LayerCache, memory_mask: Tensor | None) -> tuple[Tensor, LayerCache]:
        """The newest position only: x (N, 1, D) -> (N, 1, D), and the cache grown by it."""
        h = self.norm1(x) if self.normalize_before else x
        q, k, v = self.self_attn.project(h)  # (N, H, 1, d_k) each
        k = torch.cat([cache.self_k, k], dim=2)
        v = torch.cat([cache.self_v, v], dim=2)
        # The newest token may attend to every earlier one: no mask needed.
        x = x + self.dropout(self.self_attn.attend((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1]), v, None))
        if not self.normalize_before:
            x = self.norm1(x)
        x = self._src_and_ffn(x, None, memory_mask, (cache.src_k, cache.src_v))
        return x, LayerCache(k, v, cache.src_k, cache.src_v)


class TransformerDecoder(nn.Module):
    """Arguments and defaults are ESPnet's `TransformerDecoder`'s. Not implemented (ESPnet
    options at a non-default value are refused by the converter): input_layer "linear",
    concat_after, qk_norm, gradient checkpointing (`use_flash_attn` changes no outputs)."""

    def __init__(
        self,
        vocab_size: int,
        encoder_output_size: int,
        attention_heads: int = 4,
        linear_units: int = 2048,
        num_blocks: int = 6,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        self_attention_dropout_rate: float = 0.0,
        src_attention_dropout_rate: float = 0.0,
        input_layer: str = "embed",
        use_output_layer: bool = True,
        normalize_before: bool = True,
        layer_drop_rate: float = 0.0,
    ):
        super().__init__()
        if input_layer != "embed":
            raise ValueError(f"input_layer {input_layer!r} is not supported (only 'embed')")
        d = encoder_output_size
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, d)
        self.pos_enc = PositionalEncoding(d, positional_dropout_rate)
        self.decoders = nn.ModuleList(
            TransformerDecoderBlock(
                d,
                MultiHeadAttention(attention_heads, d, self_attention_dropout_rate),
                CrossAttention(attention_heads, d, src_attention_dropout_rate),
                FeedForward(d, linear_units, dropout_rate, nn.ReLU()),
                dropout_rate,
                normalize_before,
            )
            for _ in range(num_blocks)
        )
        self.normalize_before = normalize_before
        self.after_norm = LayerNorm(d) if normalize_before else None
        self.output_layer = nn.Linear(d, vocab_size) if use_output_layer else None
        self.layer_drop_rate = layer_drop_rate

    def _head(self, x: Tensor) -> Tensor:
        if self.after_norm is not None:
            x = self.after_norm(x)
        return x if self.output_layer is None else self.output_layer(x)

    def forward(self, memory: Tensor, memory_lens: Tensor, ys_in: Tensor, ys_in_lens: Tensor) -> Tensor:
        """memory (B, T, D), memory_lens (B,), ys_in (B, L) token ids (<sos> first),
        ys_in_lens (B,) -> logits (B, L, V) (hidden states (B, L, D) without output layer)."""
        length = ys_in.shape[1]
        tgt_mask = valid_mask(ys_in_lens, length).unsqueeze(1) & causal_mask(length, ys_in.device)  # (B, L, L)
        memory_mask = valid_mask(memory_lens, memory.shape[1]).unsqueeze(1)  # (B, 1, T)
        x, _ = self.pos_enc(self.embed(ys_in))
        dropped = None
        if self.training and self.layer_drop_rate > 0:
            dropped = (torch.rand(len(self.decoders)) < self.layer_drop_rate).tolist()
        for i, block in enumerate(self.decoders):
            if dropped is None or not dropped[i]:
                x = block(x, tgt_mask, memory, memory_mask)
        return self._head(x)

    def init_state(self, n: int | None = None, device: torch.device | None = None, memory: Tensor | None = None,
                   memory_mask: Tensor | None = None) -> DecoderState:
        """State before any token for the rows of `memory` (N, T, D); `memory_mask`
        (N, 1, T) True on real frames, None for no padding (`n`, `device`: the protocol's
        arguments, implied by `memory` here)."""
        if memory is None:
            raise ValueError("the attention decoder's state needs the encoder output (memory=)")
        if n is not None and n != memory.shape[0]:
            raise ValueError(f"n={n} rows but memory has {memory.shape[0]}")
        layers = []
        for block in self.decoders:
            # contiguous once here, or every step's matmul would copy them
            src_k, src_v = (t.contiguous() for t in block.src_attn.project_memory(memory))
            empty = src_k.new_zeros(src_k.shape[0], src_k.shape[1], 0, src_k.shape[3])
            layers.append(LayerCache(empty, empty, src_k, src_v))
        return DecoderState(layers, memory_mask, torch.arange(memory.shape[0], device=memory.device))

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """Extend every row by one token: tokens (N,) -> next-token log-probabilities (N, V)
        (hidden states (N, D) without output layer) and the state including the token."""
        position = state.layers[0].self_k.shape[2]
        x, _ = self.pos_enc(self.embed(tokens.unsqueeze(1)), offset=position)
        layers = []
        for block, layer in zip(self.decoders, state.layers):
            x, layer = block.step(x, layer, state.memory_mask)
            layers.append(layer)
        y = self._head(x[:, 0])
        if self.output_layer is not None:
            y = torch.log_softmax(y, dim=-1)
        return y, state._replace(layers=layers)

    @staticmethod
    def select_state(state: DecoderState, index: Tensor) -> DecoderState:
        """Rows `index` (N',) of the state: the hypotheses a beam search keeps, in its order.
        The memory side is sliced, not copied, when row i still reads the memory it read."""
        source = state.source.index_select(0, index)
        rows = index.numel()
        keep = rows <= state.source.numel() and torch.equal(source, state.source[:rows])

        def memory_side(t: Tensor | None) -> Tensor | None:
            return None if t is None else (t[:rows] if keep else t.index_select(0, index))

        layers = [LayerCache(layer.self_k.index_select(0, index), layer.self_v.index_select(0, index),
                             memory_side(layer.src_k), memory_side(layer.src_v)) for layer in state.layers]
        return DecoderState(layers, memory_side(state.memory_mask), source)
