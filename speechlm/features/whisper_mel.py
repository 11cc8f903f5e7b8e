"""OpenAI Whisper's log-mel frontend (`whisper.audio.log_mel_spectrogram`), batched.

    power    = |STFT(wav)|^2         torch.stft, n_fft 400, hop 160, periodic Hann window,
                                     centred frames with reflect padding; last frame dropped
    mel      = filters @ power       librosa's Slaney filterbank (what whisper's
                                     assets/mel_filters.npz holds), 80 or 128 bins
    log_spec = log10(max(mel, 1e-10))
    log_spec = max(log_spec, log_spec.max() - 8)    the max over the utterance's own frames
    feats    = (log_spec + 4) / 4

A Whisper model sees 30-s windows: each utterance is zero-padded (or cut) to 480000 samples
first (`whisper.pad_or_trim`), 3000 frames. With `chunk_seconds=None` each utterance keeps
its own length (T // 160 frames), as `log_mel_spectrogram(wav[:T])` would give it.

A batch is one STFT call: every row is reflect-padded at its own end (gathered by index),
so a short row never sees the zero padding after it and its features do not depend on the
batch.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30.0
LOG_FLOOR = 1e-10  # mel energies are floored here before the log10
DYNAMIC_RANGE = 8.0  # log10 units kept below each utterance's maximum (80 dB)


@cache
def mel_filters(n_mels: int, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float32: `librosa.filters.mel` with its defaults (Slaney scale
    and area normalisation), the call that made whisper's mel_filters.npz."""
    import librosa.filters  # ~1 s to import, so only when a filterbank is built

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)


def log_mel_spectrogram(audio: Tensor | np.ndarray, n_mels: int = 80, padding: int = 0) -> Tensor:
    """`whisper.log_mel_spectrogram`: audio (T,) or (B, T) at 16 kHz -> (n_mels, T // 160)
    or (B, n_mels, T // 160), after `padding` zero samples are appended.

    As whisper's, the max - 8 clamp uses the maximum of the whole input (all rows of a
    batch); for per-utterance features of a padded batch use `WhisperLogMel`.
    """
    audio = torch.as_tensor(audio)
    if padding > 0:
        audio = F.pad(audio, (0, padding))
    window = torch.hann_window(N_FFT, device=audio.device)
    stft = torch.stft(audio, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2
    filters = torch.from_numpy(mel_filters(n_mels)).to(audio.device)
    log_spec = (filters @ power).clamp(min=LOG_FLOOR).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - DYNAMIC_RANGE)
    return (log_spec + 4.0) / 4.0


class WhisperLogMel(nn.Module):
    """Whisper's log-mel features of a zero-padded batch (module docstring).

    Args:
        n_mels: 80 (Whisper up to large-v2) or 128 (large-v3); any count librosa can make.
        sample_rate, n_fft, hop_length: Whisper's 16000, 400, 160.
        chunk_seconds: each utterance padded/cut to this many seconds (Whisper's 30), or
            None for per-utterance lengths.
    """

    def __init__(self, n_mels: int = 80, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT,
                 hop_length: int = HOP_LENGTH, chunk_seconds: float | None = CHUNK_SECONDS):
        super().__init__()
        if n_fft < 2 or hop_length < 1:
            raise ValueError(f"need n_fft >= 2 and hop_length >= 1, got {n_fft}, {hop_length}")
        if chunk_seconds is not None and chunk_seconds * sample_rate < n_fft:
            raise ValueError(f"chunk_seconds={chunk_seconds} is shorter than one n_fft={n_fft} window")
        self.n_mels = n_mels
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.chunk_seconds = chunk_seconds
        self.chunk_samples = None if chunk_seconds is None else round(chunk_seconds * sample_rate)
        # Derived from the options, so kept out of checkpoints (persistent=False).
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        filters = torch.from_numpy(mel_filters(n_mels, sample_rate, n_fft))
        self.register_buffer("filters", filters, persistent=False)  # (n_mels, n_fft // 2 + 1)

    @property
    def output_dim(self) -> int:
        return self.n_mels

    def num_frames(self, lengths: Tensor) -> Tensor:
        """(B,) samples -> (B,) frames: T // hop (whisper drops the STFT's last frame); in
        chunk mode every utterance has the chunk's frame count."""
        if self.chunk_samples is not None:
            return torch.full_like(lengths, self.chunk_samples // self.hop_length)
        return torch.div(lengths, self.hop_length, rounding_mode="floor")

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """wav: (B, T) float; lengths: (B,) samples, default all T (samples past a row's
        length are ignored, whatever they hold).

        Returns feats (B, T', n_mels) and feat_lengths (B,); T' = chunk frames (3000) in
        chunk mode, else max(lengths) // hop; frames past a row's feat_length are 0.
        """
        if wav.dim() != 2:
            raise ValueError(f"wav must be (B, T), got shape {tuple(wav.shape)}")
        batch, num_samples = wav.shape
        if lengths is None:
            lengths = torch.full((batch,), num_samples, dtype=torch.long, device=wav.device)
        lengths = lengths.to(device=wav.device, dtype=torch.long)
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must be ({batch},) for wav of shape {tuple(wav.shape)}, "
                             f"got shape {tuple(lengths.shape)}")
        if batch and (lengths.min() < 0 or lengths.max() > num_samples):
            raise ValueError(f"lengths must lie in [0, {num_samples}] (the wav's T), got {lengths.tolist()}")
        # Whisper computes in float32 outside any mixed-precision region; so do we.
        with torch.autocast(device_type=wav.device.type, enabled=False):
            wav = wav.float()
            if self.chunk_samples is not None:  # whisper.pad_or_trim of each row
                span = torch.arange(num_samples, device=wav.device)
                wav = wav.masked_fill(span >= lengths.unsqueeze(-1), 0.0)
                wav = F.pad(wav, (0, max(0, self.chunk_samples - num_samples)))[:, : self.chunk_samples]
                lengths = torch.full_like(lengths, self.chunk_samples)
            return self._log_mel(wav, lengths)

    def _log_mel(self, wav: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        half = self.n_fft // 2
        if wav.shape[0] and lengths.min() <= half:  # torch.stft's reflect padding needs more
            raise ValueError(f"every utterance needs more than n_fft // 2 = {half} samples "
                             f"for whisper's reflect padding, got lengths {lengths.tolist()}")
        padded = reflect_pad_rows(wav, lengths, half)  # (B, T + 2 * half)
        stft = torch.stft(padded, self.n_fft, self.hop_length, window=self.window, center=False,
                          return_complex=True)  # (B, F, T // hop + 1)
        power = stft[..., :-1].abs() ** 2
        log_spec = (self.filters @ power).clamp(min=LOG_FLOOR).log10()  # (B, n_mels, T')
        feat_lengths = self.num_frames(lengths)
        padding = torch.arange(log_spec.shape[-1], device=wav.device) >= feat_lengths.unsqueeze(-1)  # (B, T')
        row_max = log_spec.masked_fill(padding.unsqueeze(1), float("-inf")).amax(dim=(1, 2), keepdim=True)
        log_spec = torch.maximum(log_spec, row_max - DYNAMIC_RANGE)
        feats = ((log_spec + 4.0) / 4.0).transpose(1, 2)  # (B, T', n_mels)
        return feats.masked_fill(padding.unsqueeze(-1), 0.0), feat_lengths

    def extra_repr(self) -> str:
        return (f"n_mels={self.n_mels}, sample_rate={self.sample_rate}, n_fft={self.n_fft}, "
                f"hop_length={self.hop_length}, chunk_seconds={self.chunk_seconds}")


def reflect_pad_rows(wav: Tensor, lengths: Tensor, pad: int) -> Tensor:
    """(B, T) -> (B, T + 2 pad): row b is `F.pad(wav[b, :lengths[b]], (pad, pad), "reflect")`
    followed by zeros. Needs every length > pad."""
    position = torch.arange(wav.shape[1] + 2 * pad, device=wav.device) - pad  # (T + 2 pad,)
    last = (lengths - 1).unsqueeze(-1)  # (B, 1)
    index = position.abs().unsqueeze(0).expand(wav.shape[0], -1)  # reflect at the start
    index = torch.where(index > last, 2 * last - index, index)  # reflect at each row's end
    keep = position.unsqueeze(0) < lengths.unsqueeze(-1) + pad
    return torch.gather(wav, 1, index.clamp(0, wav.shape[1] - 1)).masked_fill(~keep, 0.0)
