"""Quantizers that turn frames into discrete pretraining targets.

`GumbelVectorQuantizer`: wav2vec 2.0's product quantizer (Baevski et al. 2020, sec. 2), as
fairseq's `GumbelVectorQuantizer` (combine_groups False, weight_proj_depth 1). A Linear maps a
frame to G groups of V logits; each group picks one of its V codevectors, by a hard
Gumbel-softmax in training (straight-through: the forward value is the one-hot choice, the
gradient that of the soft sample) and by argmax in eval; the G picks are concatenated. The
Gumbel temperature decays per update, max_t * decay^n floored at min_t; n is the buffer
`num_updates`, counted by training-mode forwards (one per optimizer step unless gradients are
accumulated), so a state dict resumes the schedule. The diversity loss
(G*V - prob_perplexity) / (G*V) pushes the batch-averaged soft code distribution towards
uniform: 0 at uniform use, 1 - 1/V when every group uses a single code.

`RandomProjectionQuantizer`: BEST-RQ's targets (Chiu et al. 2022): a frozen random projection
and frozen random codebooks; a frame's target is the codebook entry nearest to its
L2-normalised projection. The paper normalises the input features (mean 0, std 1) first,
which keeps the codes from collapsing onto a few entries; that is the caller's job (global
CMVN). `stack_frames` brings features to the encoder's frame rate (BEST-RQ stacks 4).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class QuantizerOutput(NamedTuple):
    quantized: Tensor        # (N, code_dim): one codevector per group, concatenated
    code_perplexity: Tensor  # perplexity of the argmax codes' usage, summed over groups (a stat)
    prob_perplexity: Tensor  # perplexity of the batch-averaged soft probabilities, summed over groups
    num_vars_total: int      # G * V
    temperature: float       # the Gumbel temperature this forward used
    codes: Tensor            # (N, G) long: the chosen entry of each group


def _perplexity(probs: Tensor) -> Tensor:
    """probs (G, V), each row a distribution -> sum over groups of exp(entropy); fairseq's +1e-7
    inside the log keeps the gradient finite where a code has probability 0."""
    return torch.exp(-(probs * torch.log(probs + 1e-7)).sum(dim=-1)).sum()


class GumbelVectorQuantizer(nn.Module):
    """(N, input_dim) -> QuantizerOutput; leading dims other than N are flattened and restored.

    Parameters `codevectors` (1, G*V, code_dim/G), uniform on [0, 1) as fairseq, and
    `weight_proj` (Linear input_dim -> G*V, weight N(0, 1), bias 0).
    """

    def __init__(self, input_dim: int, num_groups: int = 2, num_vars: int = 320, code_dim: int = 256,
                 temperature: tuple[float, float, float] = (2.0, 0.5, 0.999995)):
        super().__init__()
        if code_dim % num_groups:
            raise ValueError(f"code_dim {code_dim} is not divisible by num_groups {num_groups}")
        self.num_groups, self.num_vars, self.code_dim = num_groups, num_vars, code_dim
        self.max_temperature, self.min_temperature, self.temperature_decay = temperature
        self.codevectors = nn.Parameter(torch.empty(1, num_groups * num_vars, code_dim // num_groups))
        self.weight_proj = nn.Linear(input_dim, num_groups * num_vars)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.codevectors)
        nn.init.normal_(self.weight_proj.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)

    @property
    def temperature(self) -> float:
        """max_t * decay^num_updates, at least min_t."""
        return max(self.max_temperature * self.temperature_decay ** int(self.num_updates), self.min_temperature)

    def forward(self, x: Tensor) -> QuantizerOutput:
        lead = x.shape[:-1]
        groups, num_vars = self.num_groups, self.num_vars
        logits = self.weight_proj(x.reshape(-1, x.shape[-1])).float().view(-1, groups, num_vars)  # (N, G, V)
        temperature = self.temperature

        with torch.no_grad():
            greedy = logits.argmax(dim=-1)  # (N, G)
            code_perplexity = _perplexity(F.one_hot(greedy, num_vars).float().mean(dim=0))
        prob_perplexity = _perplexity(logits.softmax(dim=-1).mean(dim=0))

        if self.training:
            gumbels = -torch.empty_like(logits).exponential_().log()
            soft = ((logits + gumbels) / temperature).softmax(dim=-1)
            codes = soft.argmax(dim=-1)
            # Straight-through: the value is exactly one-hot (soft - soft.detach() is 0), the
            # gradient is the soft sample's.
            choice = F.one_hot(codes, num_vars).to(soft.dtype) + (soft - soft.detach())
            with torch.no_grad():
                self.num_updates += 1
        else:
            codes = greedy
            choice = F.one_hot(codes, num_vars).float()

        codebook = self.codevectors.view(groups, num_vars, -1)
        quantized = torch.einsum("ngv,gvd->ngd", choice.to(codebook.dtype), codebook)
        return QuantizerOutput(
            quantized=quantized.reshape(*lead, self.code_dim),
            code_perplexity=code_perplexity,
            prob_perplexity=prob_perplexity,
            num_vars_total=groups * num_vars,
            temperature=temperature,
            codes=codes.reshape(*lead, groups),
        )


def diversity_loss(out: QuantizerOutput) -> Tensor:
    """wav2vec 2.0's codebook diversity penalty, (G*V - prob_perplexity) / (G*V), in [0, 1 - 1/V]."""
    return (out.num_vars_total - out.prob_perplexity) / out.num_vars_total


class RandomProjectionQuantizer(nn.Module):
    """BEST-RQ targets: x (..., input_dim) -> (..., num_codebooks) long codebook indices.

    Buffers, never trained: `projection` (num_codebooks, input_dim, code_dim), each slice
    Xavier-uniform, and `codebooks` (num_codebooks, codebook_size, code_dim), standard normal
    then L2-normalised. Both come from `seed` alone, so every process and every restart builds
    the same quantizer; they are also in the state dict, so a checkpoint carries its targets.
    With several codebooks, each has its own projection (as NeMo's BEST-RQ quantizer), so the
    targets are independent views rather than one projection read against several codebooks.
    """

    def __init__(self, input_dim: int, code_dim: int = 16, codebook_size: int = 8192, num_codebooks: int = 1,
                 seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        projection = torch.empty(num_codebooks, input_dim, code_dim)
        for p in projection:
            nn.init.xavier_uniform_(p, generator=g)
        codebooks = F.normalize(torch.randn(num_codebooks, codebook_size, code_dim, generator=g), dim=-1)
        self.register_buffer("projection", projection)
        self.register_buffer("codebooks", codebooks)

    @torch.no_grad()
    def forward(self, x: Tensor, chunk_frames: int = 4096) -> Tensor:
        """Nearest codebook entry of the L2-normalised projection; on unit vectors the smallest
        L2 distance is the largest dot product. Frames go `chunk_frames` at a time, which caps
        the (frames, num_codebooks, codebook_size) score tensor."""
        lead = x.shape[:-1]
        frames = x.reshape(-1, x.shape[-1]).to(self.projection.dtype)
        codes = []
        for chunk in frames.split(chunk_frames):
            z = F.normalize(torch.einsum("nf,cfd->ncd", chunk, self.projection), dim=-1)
            codes.append(torch.einsum("ncd,cvd->ncv", z, self.codebooks).argmax(dim=-1))
        codes = torch.cat(codes) if codes else frames.new_zeros(0, self.codebooks.shape[0], dtype=torch.long)
        return codes.reshape(*lead, self.codebooks.shape[0])


def stack_frames(feats: Tensor, lengths: Tensor, stack: int) -> tuple[Tensor, Tensor]:
    """feats (B, T, F), lengths (B,) -> (B, T // stack, F * stack), lengths // stack.

    Output frame t is input frames t*stack .. t*stack + stack - 1 concatenated in order; a last
    incomplete group is dropped (as BEST-RQ's stacking of 4 frames to the encoder's 40 ms)."""
    batch, time, dim = feats.shape
    out_time = time // stack
    stacked = feats[:, : out_time * stack].reshape(batch, out_time, dim * stack)
    return stacked, torch.div(lengths, stack, rounding_mode="floor")
