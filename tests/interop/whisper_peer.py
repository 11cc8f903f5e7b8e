"""A random tiny openai-whisper model (the peer of the Whisper parity tests) and our parts
holding its weights. Every tensor is random, LayerNorms away from (1, 0), so that a swapped
or missing tensor cannot pass unnoticed."""
from __future__ import annotations

from dataclasses import asdict

import torch
from whisper.model import ModelDimensions, Whisper

from speechlm.decoders.multitask import MultitaskDecoder
from speechlm.encoders.whisper import WhisperEncoder
from speechlm.interop.whisper import openai_state_dict_to_ours

DIMS = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=4, n_audio_layer=2,
                       n_vocab=51865, n_text_ctx=448, n_text_state=64, n_text_head=4, n_text_layer=2)


def random_whisper(dims: ModelDimensions = DIMS, seed: int = 0) -> Whisper:
    torch.manual_seed(seed)
    ref = Whisper(dims).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("positional_embedding"):  # torch.empty in Whisper
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif name.endswith(("_ln.weight", "ln_post.weight", "decoder.ln.weight")):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return ref


def openai_checkpoint(ref: Whisper) -> dict:
    """What OpenAI's `tiny.pt` holds."""
    return {"dims": asdict(ref.dims), "model_state_dict": ref.state_dict()}


def part(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def our_encoder(ref: Whisper) -> WhisperEncoder:
    d = ref.dims
    enc = WhisperEncoder(d.n_mels, d.n_audio_state, d.n_audio_head, d.n_audio_layer, d.n_audio_ctx).eval()
    enc.load_state_dict(part(openai_state_dict_to_ours(ref.state_dict()), "encoder."))
    return enc


def our_decoder(ref: Whisper) -> MultitaskDecoder:
    d = ref.dims
    dec = MultitaskDecoder(d.n_vocab, d.n_text_state, d.n_text_head, d.n_text_layer, d.n_text_ctx).eval()
    dec.load_state_dict(part(openai_state_dict_to_ours(ref.state_dict()), "decoder."))
    return dec


def random_mel(batch: int = 2, frames: int = 3000, n_mels: int = 80, seed: int = 0) -> torch.Tensor:
    """(B, n_mels, frames): the range of Whisper's log-mel, (log10 + 4) / 4 in about [-1, 1.5]."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, n_mels, frames, generator=g) * 2.5 - 1.0)
