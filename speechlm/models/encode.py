"""The acoustic half every ASR model shares: waveform -> features -> normalisation ->
SpecAugment (training only) -> encoder.

SpecAugment comes after normalisation here (ESPnet puts it before) because our SpecAugment
masks with 0.0, the mean of normalised features.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from speechlm.encoders.base import EncoderOutput


def encode_speech(encoder: nn.Module, audio: Tensor, lengths: Tensor, frontend: nn.Module | None = None,
                  normalize: nn.Module | None = None, specaug: nn.Module | None = None, training: bool = False,
                  layers: Sequence[int] = ()) -> EncoderOutput:
    """audio (B, T) waveforms, or (B, T, F) features without a frontend; lengths (B,)
    -> EncoderOutput(output (B, T', D), lengths (B,), intermediate {layer: (B, T', D)} for
    the 1-based `layers` asked for)."""
    audio = audio[:, : int(lengths.max())]
    feats, lengths = (audio, lengths) if frontend is None else frontend(audio, lengths)
    if normalize is not None:
        feats, lengths = normalize(feats, lengths)
    if specaug is not None and training:
        feats, lengths = specaug(feats, lengths)
    return encoder(feats, lengths, return_layers=layers) if layers else encoder(feats, lengths)
