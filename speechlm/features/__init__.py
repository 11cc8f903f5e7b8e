"""Acoustic features: Kaldi-compatible fbank, global CMVN, SpecAugment."""

from speechlm.features.cmvn import CMVNStats, GlobalCMVN
from speechlm.features.fbank import Fbank
from speechlm.features.specaug import SpecAugment

__all__ = ["CMVNStats", "Fbank", "GlobalCMVN", "SpecAugment"]
