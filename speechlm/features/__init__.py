"""Acoustic features: Kaldi-compatible fbank, global CMVN, SpecAugment."""

from speechlm.features.fbank import Fbank

__all__ = ["Fbank"]
