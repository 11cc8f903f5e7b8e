"""Whisper's text decoder (Radford et al. 2022), numerically openai-whisper's `TextDecoder`:
the multitask decoder that reads a task prompt (<|startoftranscript|> <|en|> <|transcribe|>
...) and writes the answer (`speechlm.models.multitask`).

    tokens (B, L) -> token embedding + learned positions [0, L)
      -> pre-LN blocks: x + causal MHSA(norm1(x)), x + CrossAttn(norm2(x), memory),
         x + MLP(norm3(x))                                         (MLP: d -> 4d -> GELU -> d)
      -> LN -> logits = x @ embed.weight^T                         (output tied to the input)

Parameter names (OpenAI's -> ours; `speechlm.interop.whisper` converts): token_embedding ->
embed, positional_embedding (same), blocks.N -> decoders.N (attn -> self_attn, attn_ln ->
norm1, cross_attn -> src_attn, cross_attn_ln -> norm2, mlp.0/mlp.2 -> feed_forward.w_1/w_2,
mlp_ln -> norm3), ln -> after_norm.

It follows the incremental-decoding protocol of every speechlm decoder, with the state of
`speechlm.decoders.transformer` (per layer the self-attention keys/values seen so far and
the memory projected once):

    state = decoder.init_state(memory=memory, memory_mask=mask)
    log_probs, state = decoder.step(prompt, state)              # (N, K): a prompt in one call
    log_probs, state = decoder.step(tokens, state)              # (N,) -> (N, V)
    state = decoder.select_state(state, index)
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from speechlm.decoders.transformer import DecoderState, LayerCache, TransformerDecoder
from speechlm.nn.dropout import Dropout
from speechlm.nn.feed_forward import FeedForward
from speechlm.nn.whisper_attention import WhisperAttention, key_padding_mask


class MultitaskDecoderBlock(nn.Module):
    """Self-attention, cross-attention, MLP, each pre-LN with a residual (eps 1e-5)."""

    def __init__(self, size: int, attention_heads: int, dropout_rate: float = 0.0):
        super().__init__()
        self.self_attn = WhisperAttention(size, attention_heads)
        self.norm1 = nn.LayerNorm(size)
        self.src_attn = WhisperAttention(size, attention_heads)
        self.norm2 = nn.LayerNorm(size)
        self.feed_forward = FeedForward(size, 4 * size, 0.0, nn.GELU())
        self.norm3 = nn.LayerNorm(size)
        self.dropout = Dropout(dropout_rate)

    def _src_and_mlp(self, x: Tensor, src_k: Tensor, src_v: Tensor, memory_mask: Tensor | None) -> Tensor:
        mask = None if memory_mask is None else memory_mask.unsqueeze(1)  # (B, 1, 1, T)
        x = x + self.dropout(self.src_attn.attend(self.src_attn.project_q(self.norm2(x)), src_k, src_v, mask))
        return x + self.dropout(self.feed_forward(self.norm3(x)))

    def forward(self, x: Tensor, memory: Tensor, memory_mask: Tensor | None) -> Tensor:
        """Teacher forcing: x (B, L, D), memory (B, T, D), memory_mask (B, 1, T) True on
        real frames or None -> (B, L, D). Queries attend keys j <= i: padding at the end of
        a row never reaches its real positions, so no padding mask is needed."""
        x = x + self.dropout(self.self_attn(self.norm1(x), is_causal=True))
        return self._src_and_mlp(x, *self.src_attn.project_kv(memory), memory_mask)

    def step(self, x: Tensor, cache: LayerCache, self_mask: Tensor | None,
             memory_mask: Tensor | None) -> tuple[Tensor, LayerCache]:
        """The K newest positions: x (N, K, D), self_mask (K, P + K) or None (K = 1) ->
        (N, K, D) and the cache grown by K positions."""
        h = self.norm1(x)
        k, v = self.self_attn.project_kv(h)  # (N, H, K, d_k)
        k = torch.cat([cache.self_k, k], dim=2)
        v = torch.cat([cache.self_v, v], dim=2)
        x = x + self.dropout(self.self_attn.attend(self.self_attn.project_q(h), k, v, self_mask))
        return self._src_and_mlp(x, cache.src_k, cache.src_v, memory_mask), LayerCache(k, v, cache.src_k, cache.src_v)


class MultitaskDecoder(nn.Module):
    """Whisper's decoder; tiny: d_model 384, 6 heads, 4 blocks. `d_model` must be the
    encoder's output size; `max_positions` (OpenAI's n_text_ctx) bounds prompt + answer.
    `dropout_rate` (not in Whisper, for fine-tuning) drops after the embeddings and on each
    residual branch. Embeddings start N(0, 0.02^2) (Whisper's initialisation is not
    published; this is GPT-2's and Hugging Face's)."""

    def __init__(self, vocab_size: int, d_model: int = 384, attention_heads: int = 6, num_blocks: int = 4,
                 max_positions: int = 448, dropout_rate: float = 0.0):
        super().__init__()
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.attention_heads = attention_heads
        self.max_positions = max_positions
        self.embed = nn.Embedding(vocab_size, d_model)
        self.positional_embedding = nn.Parameter(torch.empty(max_positions, d_model))
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.02)
        self.dropout = Dropout(dropout_rate)
        self.decoders = nn.ModuleList(MultitaskDecoderBlock(d_model, attention_heads, dropout_rate)
                                      for _ in range(num_blocks))
        self.after_norm = nn.LayerNorm(d_model)

    def _embed(self, tokens: Tensor, offset: int) -> Tensor:
        end = offset + tokens.shape[1]
        if end > self.max_positions:
            raise ValueError(f"{end} decoder positions; this decoder has {self.max_positions}")
        return self.dropout(self.embed(tokens) + self.positional_embedding[offset:end])

    def _logits(self, x: Tensor) -> Tensor:
        return self.after_norm(x) @ self.embed.weight.t()

    def forward(self, memory: Tensor, memory_lens: Tensor, ys_in: Tensor, ys_in_lens: Tensor) -> Tensor:
        """memory (B, T, D), memory_lens (B,), ys_in (B, L) token ids (the prompt first),
        ys_in_lens (B,) -> logits (B, L, V). Positions past a row's length see only earlier
        positions (causal), so their values are irrelevant to the real ones."""
        mask = key_padding_mask(memory_lens, memory.shape[1])
        memory_mask = None if mask is None else mask[:, 0]  # (B, 1, T)
        x = self._embed(ys_in, 0)
        for block in self.decoders:
            x = block(x, memory, memory_mask)
        return self._logits(x)

    def init_state(self, n: int | None = None, device: torch.device | None = None, memory: Tensor | None = None,
                   memory_mask: Tensor | None = None) -> DecoderState:
        """State before any token for the rows of `memory` (N, T, D); `memory_mask`
        (N, 1, T) True on real frames, None (or all True) for no padding."""
        if memory is None:
            raise ValueError("the multitask decoder's state needs the encoder output (memory=)")
        if n is not None and n != memory.shape[0]:
            raise ValueError(f"n={n} rows but memory has {memory.shape[0]}")
        if memory_mask is not None and bool(memory_mask.all()):
            memory_mask = None  # unmasked attention, as Whisper's
        layers = []
        for block in self.decoders:
            src_k, src_v = (t.contiguous() for t in block.src_attn.project_kv(memory))
            empty = src_k.new_zeros(src_k.shape[0], src_k.shape[1], 0, src_k.shape[3])
            layers.append(LayerCache(empty, empty, src_k, src_v))
        return DecoderState(layers, memory_mask, torch.arange(memory.shape[0], device=memory.device))

    def step(self, tokens: Tensor, state: DecoderState, all_positions: bool = False) -> tuple[Tensor, DecoderState]:
        """Extend every row by tokens (N,) or (N, K) (e.g. a whole prompt in one call) ->
        log-probabilities of the next token after the last one (N, V), or with
        `all_positions` after each of the K (N, K, V); and the state including them."""
        if tokens.dim() == 1:
            tokens = tokens.unsqueeze(1)
        k = tokens.shape[1]
        past = state.layers[0].self_k.shape[2]
        x = self._embed(tokens, past)
        self_mask = None
        if k > 1:  # new token i (position past + i) sees every cached key and new ones j <= i
            self_mask = torch.ones(k, past + k, dtype=torch.bool, device=x.device).tril(past)
        layers = []
        for block, layer in zip(self.decoders, state.layers):
            x, layer = block.step(x, layer, self_mask, state.memory_mask)
            layers.append(layer)
        logits = self._logits(x if all_positions else x[:, -1])
        return torch.log_softmax(logits.float(), dim=-1), state._replace(layers=layers)

    # Rows kept / reordered: the same state as the transformer decoder's, the same selection.
    select_state = staticmethod(TransformerDecoder.select_state)
