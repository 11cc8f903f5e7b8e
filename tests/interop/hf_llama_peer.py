"""Tiny random Hugging Face LLaMA / Qwen2 models (the peer of speechlm.decoders.causal_lm),
covering what the families vary: grouped-query heads, tied and untied embeddings, q/k/v
(Qwen2) and q/k/v/o (LLaMA attention_bias) biases, a head_dim other than hidden/heads, and
the RoPE scalings llama3, linear and dynamic (max_position_embeddings 16, so the dynamic
model's longer inputs really rescale)."""
from __future__ import annotations

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])
VOCAB = 97
COMMON = dict(vocab_size=VOCAB, intermediate_size=112, num_hidden_layers=2, bos_token_id=1, eos_token_id=2,
              pad_token_id=0)
MODELS = {
    # Llama 3.1-style: GQA 4 -> 2, tied embeddings, llama3 frequency scaling, theta 500000
    "llama3_tied": (LlamaConfig, LlamaForCausalLM, dict(
        COMMON, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
        max_position_embeddings=64, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
    # Qwen2: q/k/v biases, GQA 4 -> 1, untied, linear position interpolation
    "qwen2_linear": (Qwen2Config, Qwen2ForCausalLM, dict(
        COMMON, hidden_size=64, num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=False,
        max_position_embeddings=64, rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0})),
    # LLaMA with biases on q/k/v/o, head_dim 16 != 48 / 4, dynamic NTK scaling beyond 16 positions
    "llama_dynamic": (LlamaConfig, LlamaForCausalLM, dict(
        COMMON, hidden_size=48, num_attention_heads=4, num_key_value_heads=2, head_dim=16, attention_bias=True,
        tie_word_embeddings=False, max_position_embeddings=16,
        rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0})),
}


def random_hf(name: str, seed: int = 0, **overrides):
    """The model `name` in eval mode, every weight random (HF zero-initialises biases and sets
    norms to one, which would hide a bias or norm left out): linear weights and biases
    N(0, 0.2), norm weights 1 + N(0, 0.1), embeddings N(0, 0.3). At these scales greedy
    decoding is varied (larger embeddings make a tied model repeat its input token) and its
    top-2 logit gaps stay above ~1e-3, far over the implementations' ~1e-6 differences."""
    config_cls, model_cls, kwargs = MODELS[name]
    kwargs = {**kwargs, **overrides}
    rope = dict(kwargs.pop("rope_parameters"))
    if TRANSFORMERS_MAJOR >= 5:
        kwargs["rope_parameters"] = rope
    else:  # transformers 4 spells it rope_theta + rope_scaling
        kwargs.update(rope_theta=rope.pop("rope_theta"), rope_scaling=rope)
    torch.manual_seed(seed)
    model = model_cls(config_cls(**kwargs)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if "norm" in key:
                p.copy_(1 + 0.1 * noise)
            elif "embed_tokens" in key:
                p.copy_(0.3 * noise)
            else:
                p.copy_(0.2 * noise)
    return model


def padded_batch(length: int = 12, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (3, length), mask (3, length) bool): a left-padded row, a right-padded row, a full row."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (3, length), generator=generator)
    mask = torch.ones(3, length, dtype=torch.bool)
    mask[0, :4] = False
    mask[1, length - 3:] = False
    return ids.masked_fill(~mask, 0), mask


def hf_positions(mask: torch.Tensor) -> torch.Tensor:
    """transformers' generate positions: real tokens counted from 0, padding at 0."""
    return (mask.long().cumsum(1) - 1).masked_fill(~mask, 0)
