"""Speed perturbation of a data dir, as Kaldi's utils/data/perturb_data_dir_speed_3way.sh.

Each factor f gives a copy whose utterance, speaker and recording ids get the prefix
`sp{f}-` (the 1.0 copy keeps the original ids), durations divided by f and segments
rescaled. Like sox's `speed`, tempo and pitch change together (a resampling).

The audio is either written to files (`audio_dir`, the default; no external tools at
training time) or, with `sox=True`, left as Kaldi `sox ... speed f |` pipes.
"""
from __future__ import annotations

import shlex
from pathlib import Path

import soundfile as sf
import torch

from speechlm.data.audio import is_pipe, read_audio, resample
from speechlm.data.combine import combine_data_dirs
from speechlm.data.kaldi_dir import DataDir, Segment


def speed_factor_prefix(factor: float) -> str:
    return f"sp{factor:g}-"


def perturb_audio(samples: torch.Tensor, sample_rate: int, factor: float) -> torch.Tensor:
    """Play `samples` `factor` times faster (shorter and higher for factor > 1).

    Resampling from rate sr*f to sr keeps 1/f samples per input sample; this is what
    sox's `speed` effect does."""
    return resample(samples, int(round(sample_rate * factor)), int(sample_rate))


def _perturb_copy(dd: DataDir, factor: float, audio_dir: Path | None, sox: bool) -> DataDir:
    pre = speed_factor_prefix(factor)
    wav_scp = {}
    for reco, entry in dd.wav_scp.items():
        if sox:
            src = entry.rstrip()[:-1].rstrip() + " | sox -t wav - -t wav -" if is_pipe(entry) else f"sox -t wav {shlex.quote(entry.strip())} -t wav -"
            wav_scp[pre + reco] = f"{src} speed {factor:g} |"
        else:
            samples, sr = read_audio(entry, channel=None)
            out = perturb_audio(torch.from_numpy(samples.T.copy()), sr, factor)
            path = (audio_dir / f"{pre}{reco}.wav").resolve()
            sf.write(path, out.T.numpy(), sr, subtype="PCM_16")
            wav_scp[pre + reco] = str(path)
    scale = lambda table: None if table is None else {pre + k: v / factor for k, v in table.items()}  # noqa: E731
    return DataDir(
        wav_scp=wav_scp,
        utt2spk={pre + u: pre + s for u, s in dd.utt2spk.items()},
        text=None if dd.text is None else {pre + u: t for u, t in dd.text.items()},
        segments=None if dd.segments is None else {
            pre + u: Segment(pre + s.recording, s.start / factor, s.end / factor, s.channel) for u, s in dd.segments.items()
        },
        utt2dur=scale(dd.utt2dur),
        reco2dur=scale(dd.reco2dur),
        utt2lang=None if dd.utt2lang is None else {pre + u: lang for u, lang in dd.utt2lang.items()},
    )


def perturb_speed(
    dd: DataDir,
    factors: tuple[float, ...] = (0.9, 1.0, 1.1),
    audio_dir: str | Path | None = None,
    sox: bool = False,
) -> DataDir:
    """The union of `dd` perturbed by each factor. Without `sox`, perturbed audio is
    written as 16-bit WAVs under `audio_dir` (required then)."""
    if not sox:
        if audio_dir is None:
            raise ValueError("perturb_speed needs audio_dir to write audio to (or sox=True for pipes)")
        audio_dir = Path(audio_dir)
        audio_dir.mkdir(parents=True, exist_ok=True)
    copies = [dd if f == 1.0 else _perturb_copy(dd, f, audio_dir, sox) for f in factors]
    combined, _ = combine_data_dirs(copies)  # ids are distinct by prefix: nothing is dropped
    return combined
