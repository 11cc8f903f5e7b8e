"""Acoustic features: Kaldi-compatible fbank, ESPnet-compatible STFT log-mel, global and
per-utterance CMVN, SpecAugment."""

from speechlm.features.cmvn import CMVNStats, GlobalCMVN
from speechlm.features.fbank import Fbank
from speechlm.features.log_mel import LogMelFbank
from speechlm.features.specaug import SpecAugment
from speechlm.features.utterance_mvn import UtteranceMVN

__all__ = ["CMVNStats", "Fbank", "GlobalCMVN", "LogMelFbank", "SpecAugment", "UtteranceMVN"]
