"""Decoder-only LM of the LLaMA / Qwen2 family (Touvron et al. 2023): token embedding ->
`num_layers` pre-norm blocks (RMSNorm, grouped-query attention with RoPE, RMSNorm, SwiGLU) ->
RMSNorm -> lm_head (tied to the embedding or not). Parameter names are Hugging Face's minus
the `model.` prefix, so `speechlm.interop.hf_llama` loads and saves `LlamaForCausalLM` /
`Qwen2ForCausalLM` directories with a rename (`CausalLM.from_hf`, `lm.save_hf`).

Three ways in:
    lm.forward_embeds(embeds (B, L, D), attention_mask (B, L) True=real | None, state=None)
        -> (logits (B, L, V), state)     a speech-LLM feeds spliced embeddings here
    lm.logits(ids (B, L)) -> (B, L, V)
    state = lm.init_state(n, device); log_probs, state = lm.step(tokens (N,), state);
    state = CausalLM.select_state(state, index)      the incremental protocol of every speechlm LM

A token's position is the count of real tokens before it in its row (padding on the left or
on the right gives the same numbers as an unpadded row), continued from the state's
`positions` when a state is given. Training on text (`python -m speechlm.bin.train
experiment=causal_lm`) is `LanguageModel`'s: `bos w1 .. wn` -> `w1 .. wn eos`, mean NLL.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from speechlm.models.lm import LanguageModel, _no_audio_parts
from speechlm.nn.causal_attention import GroupedQueryAttention, causal_padding_mask
from speechlm.nn.norm import LlamaRMSNorm
from speechlm.nn.rotary import LlamaRotaryEmbedding
from speechlm.nn.swiglu import SwiGLU


@dataclass
class CausalLMConfig:
    """Sizes and options; the field names are `CausalLM`'s keyword arguments."""

    vocab_size: int
    hidden_size: int = 64
    intermediate_size: int = 176
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int | None = None  # None: num_heads (plain multi-head attention)
    head_dim: int | None = None  # None: hidden_size // num_heads
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # HF's dict: {rope_type: linear|dynamic|llama3|yarn, factor, ...}
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # biases on q/k/v (Qwen2: True)
    output_bias: bool = False  # bias on o_proj (LLaMA with attention_bias: True; Qwen2: False)
    max_position_embeddings: int = 2048
    bos_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None
    attention_dropout: float = 0.0


class CausalLMState(NamedTuple):
    """KV cache of N rows after C positions (padding included)."""

    keys: list[Tensor]  # per layer (N, H_kv, C, head_dim), rotated
    values: list[Tensor]  # per layer (N, H_kv, C, head_dim)
    mask: Tensor  # (N, C) bool: which cached positions are real tokens
    positions: Tensor  # (N,) long: the next real token's position (real tokens so far)


class DecoderLayer(nn.Module):
    """x + attn(norm(x)); x + mlp(norm(x)) — HF's `LlamaDecoderLayer`."""

    def __init__(self, cfg: CausalLMConfig):
        super().__init__()
        self.self_attn = GroupedQueryAttention(cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                                               cfg.attention_bias, cfg.output_bias, cfg.attention_dropout)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)
        self.input_layernorm = LlamaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, past_keys: Tensor | None,
                past_values: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        h, keys, values = self.self_attn(self.input_layernorm(x), cos, sin, mask, past_keys, past_values)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), keys, values


class CausalLM(LanguageModel):
    """LLaMA / Qwen2-shaped decoder-only LM. `special_ids` (a tokenizer's: sos/eos/pad) fill
    bos_id/eos_id/pad_id when those are not given; without either, bos = eos = the last id."""

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int = 64,
        intermediate_size: int = 176,
        num_layers: int = 2,
        num_heads: int = 4,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        rope_theta: float = 10000.0,
        rope_scaling: dict | None = None,
        rms_norm_eps: float = 1e-6,
        tie_word_embeddings: bool = False,
        attention_bias: bool = False,
        output_bias: bool = False,
        max_position_embeddings: int = 2048,
        bos_id: int | None = None,
        eos_id: int | None = None,
        pad_id: int | None = None,
        attention_dropout: float = 0.0,
        special_ids: dict[str, int] | None = None,
        frontend: Any = None,
        specaug: Any = None,
        normalize: Any = None,
    ):
        _no_audio_parts("CausalLM", frontend=frontend, specaug=specaug, normalize=normalize)
        special = dict(special_ids or {})
        if bos_id is not None:
            special["sos"] = bos_id
        if eos_id is not None:
            special["eos"] = eos_id
        super().__init__(vocab_size, special)
        pad_id = pad_id if pad_id is not None else special.get("pad")
        self.config = CausalLMConfig(
            vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
            num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads or num_heads,
            head_dim=head_dim or hidden_size // num_heads, rope_theta=float(rope_theta),
            rope_scaling=dict(rope_scaling) if rope_scaling else None,  # a plain dict, also from a DictConfig
            rms_norm_eps=rms_norm_eps, tie_word_embeddings=tie_word_embeddings, attention_bias=attention_bias,
            output_bias=output_bias, max_position_embeddings=max_position_embeddings, bos_id=self.sos,
            eos_id=self.eos, pad_id=None if pad_id is None else int(pad_id), attention_dropout=attention_dropout)
        cfg = self.config
        self.embed_tokens = nn.Embedding(vocab_size, hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(num_layers))
        self.norm = LlamaRMSNorm(hidden_size, rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling, max_position_embeddings)
        self.lm_head = nn.Linear(hidden_size, vocab_size, bias=False)
        self.reset_parameters()
        if tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def reset_parameters(self, std: float = 0.02) -> None:
        """HF's LLaMA initialisation: normal(0, 0.02) weights, zero biases, unit norms."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    @classmethod
    def from_hf(cls, path: str | Path, dtype: torch.dtype | None = None) -> "CausalLM":
        """A `LlamaForCausalLM` / `Qwen2ForCausalLM` directory (config.json + safetensors);
        `source_path` remembers it (a speech-LLM's checkpoint refers to it)."""
        from speechlm.interop.hf_llama import load_hf_causal_lm

        lm = load_hf_causal_lm(path, dtype=dtype)
        lm.source_path = str(path)
        return lm

    def save_hf(self, path: str | Path, arch: str | None = None) -> Path:
        """Write a directory `transformers.AutoModelForCausalLM.from_pretrained` loads."""
        from speechlm.interop.hf_llama import save_hf_causal_lm

        return save_hf_causal_lm(self, path, arch=arch)

    # -- forward ----------------------------------------------------------------------------
    def embed(self, ids: Tensor) -> Tensor:
        """ids (B, L) -> (B, L, D)."""
        return self.embed_tokens(ids)

    def forward_embeds(self, embeds: Tensor, attention_mask: Tensor | None = None,
                       state: CausalLMState | None = None,
                       logits_at: Tensor | None = None) -> tuple[Tensor, CausalLMState]:
        """embeds (B, L, D), attention_mask (B, L) True = real (None: all real), optional state
        of B rows -> (logits (B, L, V), the state with these L positions appended).
        `logits_at` (B, L) bool: the logits of those positions only, (K, V) in row-major
        order (as transformers' `logits_to_keep`: with a 150k vocabulary, logits of every
        position of a long prompt cost more memory than the model's activations)."""
        b, length = embeds.shape[:2]
        device = embeds.device
        real = (torch.ones(b, length, dtype=torch.bool, device=device) if attention_mask is None
                else attention_mask.to(device=device, dtype=torch.bool))
        if state is None:
            cached, start, past = real.new_zeros(b, 0), torch.zeros(b, dtype=torch.long, device=device), None
        else:
            cached, start, past = state.mask, state.positions, state
        # positions as transformers' generate makes them: real tokens counted, padding at 0
        positions = (start[:, None] + real.long().cumsum(1) - 1).masked_fill(~real, 0)
        cos, sin = self.rotary_emb(positions)
        mask = causal_padding_mask(real, cached)
        x, keys, values = embeds, [], []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, cos, sin, mask, past.keys[i] if past else None, past.values[i] if past else None)
            keys.append(k)
            values.append(v)
        hidden = self.norm(x)
        logits = self.lm_head(hidden if logits_at is None else hidden[logits_at.to(device)])
        return logits, CausalLMState(keys, values, torch.cat([cached, real], dim=1), start + real.sum(1))

    def logits(self, inputs: Tensor) -> Tensor:
        """inputs (B, L) -> (B, L, V); right padding changes nothing before it."""
        return self.forward_embeds(self.embed(inputs))[0]

    # -- incremental protocol -----------------------------------------------------------------
    def init_state(self, n: int, device: torch.device | str | None = None) -> CausalLMState:
        cfg = self.config
        dtype = self.embed_tokens.weight.dtype
        empty = torch.zeros(n, cfg.num_kv_heads, 0, cfg.head_dim, device=device, dtype=dtype)
        return CausalLMState([empty] * cfg.num_layers, [empty] * cfg.num_layers,
                             torch.zeros(n, 0, dtype=torch.bool, device=device),
                             torch.zeros(n, dtype=torch.long, device=device))

    def step(self, tokens: Tensor, state: CausalLMState) -> tuple[Tensor, CausalLMState]:
        """tokens (N,) -> next-token log-probabilities (N, V) float32 and the state including them."""
        logits, state = self.forward_embeds(self.embed(tokens[:, None]), None, state)
        return logits[:, -1].float().log_softmax(dim=-1), state

    @staticmethod
    def select_state(state: CausalLMState, index: Tensor) -> CausalLMState:
        """Rows `index` (N',) of the state (beams kept / reordered)."""
        return CausalLMState([k.index_select(0, index) for k in state.keys],
                             [v.index_select(0, index) for v in state.values],
                             state.mask.index_select(0, index), state.positions.index_select(0, index))
