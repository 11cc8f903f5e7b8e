"""Acoustic features: Kaldi-compatible fbank, ESPnet-compatible STFT log-mel, Whisper's
log-mel, global and per-utterance CMVN, SpecAugment."""

from speechlm.features.cmvn import CMVNStats, GlobalCMVN
from speechlm.features.fbank import Fbank
from speechlm.features.log_mel import LogMelFbank
from speechlm.features.specaug import SpecAugment
from speechlm.features.utterance_mvn import UtteranceMVN
from speechlm.features.whisper_mel import WhisperLogMel

__all__ = ["CMVNStats", "Fbank", "GlobalCMVN", "LogMelFbank", "SpecAugment", "UtteranceMVN", "WhisperLogMel"]
