"""ESPnet's default ASR frontend (`espnet2.asr.frontend.default.DefaultFrontend`): STFT power
spectrum -> mel filterbank -> log, over a padded batch of waveforms.

    power = |STFT(wav)|^2          torch.stft via torchaudio.functional.spectrogram: centred
                                   frames with reflect padding, a periodic torch window
    feats = log(max(power @ mel, 1e-10)),  frames past each utterance's length set to 0

The mel filterbank is `librosa.filters.mel` (Slaney mel scale and area normalisation by
default, HTK scale with `htk=True`), the very call ESPnet makes, so the features are
ESPnet's to float rounding. torchaudio's `melscale_fbanks(norm="slaney", mel_scale="slaney")`
builds the same triangles in float32, which moved log-mels by up to 8e-5, and it puts its
bins at k * (fs // 2) / (n_fft // 2), not librosa's k * fs / n_fft, so an odd n_fft or
sample rate gives a different filterbank (log-mel errors of 0.03 to 0.6).

As in ESPnet, the STFT runs over the padded batch as one signal, so the last frames of an
utterance shorter than the batch see the zero padding after it, where alone it would see
a reflection of its own end: the features of those frames depend on the batch.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import Tensor, nn

# ESPnet's LogMel floors mel energies here before the log.
MEL_FLOOR = 1e-10


class LogMelFbank(nn.Module):
    """ESPnet's `DefaultFrontend` (single channel): log-mel features of a padded batch.

    Arguments are ESPnet's `frontend_conf` (`fs` is `sample_rate` here): n_fft, win_length
    (default n_fft; the window is centred in the n_fft frame), hop_length, window (a torch
    window name: "hann", "hamming", "blackman", ...; None for rectangular), center,
    normalized (scale the STFT by n_fft^-0.5, torch.stft's `normalized`), n_mels, fmin
    (default 0), fmax (default sample_rate / 2), htk (HTK mel scale instead of Slaney's).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 512,
        win_length: int | None = None,
        hop_length: int = 128,
        window: str | None = "hann",
        center: bool = True,
        normalized: bool = False,
        n_mels: int = 80,
        fmin: float | None = None,
        fmax: float | None = None,
        htk: bool = False,
    ):
        super().__init__()
        import librosa.filters  # ~1 s to import, so only when a frontend is built

        win_length = n_fft if win_length is None else win_length
        if not 0 < win_length <= n_fft or hop_length < 1:
            raise ValueError(f"need 0 < win_length ({win_length}) <= n_fft ({n_fft}) and hop_length >= 1")
        if window is None:
            analysis_window = torch.ones(win_length)
        elif callable(getattr(torch, f"{window}_window", None)):  # ESPnet's rule for the name
            analysis_window = getattr(torch, f"{window}_window")(win_length)
        else:
            raise ValueError(f"window {window!r}: torch has no {window}_window")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.center = center
        self.normalized = normalized
        self.n_mels = n_mels
        mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=0.0 if fmin is None else fmin,
                                  fmax=sample_rate / 2 if fmax is None else fmax, htk=htk)  # (n_mels, F)
        # Derived from the options, so kept out of checkpoints (persistent=False).
        self.register_buffer("window", analysis_window, persistent=False)
        self.register_buffer("mel_banks", torch.from_numpy(mel.T).float().contiguous(), persistent=False)

    @property
    def output_dim(self) -> int:
        return self.n_mels

    def num_frames(self, lengths: Tensor) -> Tensor:
        """ESPnet's frame count: (B,) samples -> (B,) frames (1 + L // hop when centred on an
        even n_fft); never negative (ESPnet's is, for an uncentred utterance under n_fft)."""
        padded = lengths + 2 * (self.n_fft // 2) if self.center else lengths
        return (torch.div(padded - self.n_fft, self.hop_length, rounding_mode="trunc") + 1).clamp_min(0)

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """wav: (B, T) float, zero-padded; lengths: (B,) samples, default all T.

        Returns feats (B, T', n_mels), T' the frame count of T samples, and feat_lengths (B,);
        frames past each utterance's feat_length are zero.
        """
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long, device=wav.device)
        # ESPnet computes in float32 outside any mixed-precision region; so do we.
        with torch.autocast(device_type=wav.device.type, enabled=False):
            power = torchaudio.functional.spectrogram(
                wav.float(), pad=0, window=self.window, n_fft=self.n_fft, hop_length=self.hop_length,
                win_length=self.win_length, power=2.0, normalized="frame_length" if self.normalized else False,
                center=self.center, pad_mode="reflect", onesided=True,
            )  # (B, F, T')
            feats = (power.transpose(1, 2) @ self.mel_banks).clamp_min(MEL_FLOOR).log()  # (B, T', n_mels)
        feat_lengths = self.num_frames(lengths)
        padding = torch.arange(feats.shape[1], device=wav.device) >= feat_lengths.unsqueeze(-1)
        return feats.masked_fill(padding.unsqueeze(-1), 0.0), feat_lengths

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, win_length={self.win_length}, "
            f"hop_length={self.hop_length}, n_mels={self.n_mels}, center={self.center}, normalized={self.normalized}"
        )
