"""Rotary position embedding as LLaMA / Qwen2 use it (Su et al. 2021), with the context-length
scalings of Hugging Face's `rope_scaling` dict (transformers' `modeling_rope_utils.py`), so a
checkpoint's q/k rotations are reproduced exactly:

    none / "default"  inv_freq = 1 / theta^(2i/d)
    "linear"          inv_freq / factor  (position interpolation)
    "dynamic"         NTK-aware: theta grows with the sequence once it exceeds
                      max_position_embeddings (computed per call from the largest position)
    "llama3"          low frequencies / factor, high ones kept, a smooth ramp between
    "yarn"            NTK-by-parts ramp + attention (cos/sin) scaling

Positions are explicit (B, L) ids, so left-padded rows and KV-cached continuation rotate
each real token by its own count of real tokens before it."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

SUPPORTED = ("default", "linear", "dynamic", "llama3", "yarn")


def default_inv_freq(theta: float, dim: int) -> Tensor:
    """(dim // 2,) float32 on the CPU: 1 / theta^(2i/dim)."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").float() / dim))


def rope_type(rope_scaling: dict | None) -> str:
    """The scaling's name ("type" in older configs); None -> "default"."""
    if not rope_scaling:
        return "default"
    kind = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
    if kind not in SUPPORTED:
        raise ValueError(f"rope_scaling type {kind!r} is not supported (supported: {', '.join(SUPPORTED)})")
    return kind


def llama3_inv_freq(inv_freq: Tensor, factor: float, low_freq_factor: float, high_freq_factor: float,
                    original_max_position_embeddings: int) -> Tensor:
    """Llama 3.1's: wavelengths above old_len/low are divided by `factor`, below old_len/high
    kept, interpolated between (transformers' `_compute_llama3_parameters`)."""
    old_len = original_max_position_embeddings
    low_wavelen, high_wavelen = old_len / low_freq_factor, old_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


def yarn_inv_freq(theta: float, dim: int, scaling: dict, max_position_embeddings: int) -> tuple[Tensor, float]:
    """(inv_freq, attention factor) of YaRN (Peng et al. 2023), transformers' `_compute_yarn_parameters`."""
    factor = scaling.get("factor")
    original = scaling.get("original_max_position_embeddings", max_position_embeddings)
    if factor is None:
        factor = max_position_embeddings / original

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        m, m_all = scaling.get("mscale"), scaling.get("mscale_all_dim")
        attention_factor = float(mscale(factor, m) / mscale(factor, m_all)) if m and m_all else mscale(factor)
    beta_fast, beta_slow = scaling.get("beta_fast") or 32, scaling.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # as transformers: no zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32, device="cpu") - low) / (high - low)).clamp(0, 1)
    pos_freqs = theta ** (torch.arange(0, dim, 2, device="cpu").float() / dim)
    extrapolation = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq, attention_factor


class LlamaRotaryEmbedding(nn.Module):
    """positions (B, L) -> (cos, sin) each (B, L, head_dim) in float32, the half-split layout
    (`rotate_half`) of Hugging Face's LLaMA port; `rope_scaling` is HF's dict or None.
    No parameters: nothing of it is in a state dict."""

    def __init__(self, head_dim: int, rope_theta: float = 10000.0, rope_scaling: dict | None = None,
                 max_position_embeddings: int = 2048):
        super().__init__()
        self.head_dim, self.theta = head_dim, float(rope_theta)
        self.scaling = dict(rope_scaling or {})
        self.kind = rope_type(rope_scaling)
        self.max_position_embeddings = max_position_embeddings
        self.attention_factor = 1.0
        inv_freq = default_inv_freq(self.theta, head_dim)
        if self.kind == "linear":
            inv_freq = inv_freq / self.scaling["factor"]
        elif self.kind == "llama3":
            inv_freq = llama3_inv_freq(
                inv_freq, self.scaling["factor"], self.scaling["low_freq_factor"], self.scaling["high_freq_factor"],
                self.scaling.get("original_max_position_embeddings", max_position_embeddings))
        elif self.kind == "yarn":
            inv_freq, self.attention_factor = yarn_inv_freq(self.theta, head_dim, self.scaling, max_position_embeddings)
        # a float32 attribute, not a buffer: `model.to(torch.bfloat16)` must not round the
        # frequencies (transformers computes the angles in float32 too), and a model built on
        # the meta device still has them
        self.inv_freq = inv_freq

    def dynamic_inv_freq(self, seq_len: int) -> Tensor:
        """NTK-aware base for a sequence of `seq_len` (no change up to max_position_embeddings)."""
        if seq_len <= self.max_position_embeddings:
            return self.inv_freq
        factor, dim = self.scaling["factor"], self.head_dim
        base = self.theta * ((factor * seq_len / self.max_position_embeddings) - (factor - 1)) ** (dim / (dim - 2))
        return default_inv_freq(base, dim)

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        inv_freq = self.inv_freq
        if self.kind == "dynamic" and positions.numel():
            # transformers recomputes theta from the largest position of the call (+1)
            inv_freq = self.dynamic_inv_freq(int(positions.max()) + 1)
        freqs = positions[..., None].float() * inv_freq.to(positions.device)
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos() * self.attention_factor, emb.sin() * self.attention_factor


def rotate_half(x: Tensor) -> Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, H, L, d) rotated by cos/sin (B, L, d), computed in x's dtype as transformers does."""
    cos, sin = cos.unsqueeze(1).to(x.dtype), sin.unsqueeze(1).to(x.dtype)
    return x * cos + rotate_half(x) * sin
