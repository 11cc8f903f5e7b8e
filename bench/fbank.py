"""Batched `Fbank` vs a per-utterance loop of `torchaudio.compliance.kaldi.fbank`.

32 speech-like utterances of 2-8 s at 16 kHz. Both sides are timed in the same process,
interleaved repetition by repetition so that load from other jobs hits both alike; medians
are printed with the ratio ours/torchaudio (lower is better) and the largest absolute
difference between the two outputs. Exits 1 if that difference exceeds 1e-3.

    .venv/bin/python bench/fbank.py [--reps 7] [--batch 32] [--threads N]
"""

import argparse
import math
import statistics
import sys
import time

import torch
from torchaudio.compliance.kaldi import fbank as torchaudio_fbank

from speechlm.features import Fbank

SAMPLE_RATE = 16000
TOLERANCE = 1e-3


def speech_like(num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """A voiced-sounding signal (num_samples,): a gliding harmonic series under a syllabic
    envelope, plus a little noise, so that spectra have the dynamic range of speech."""
    t = torch.arange(num_samples, dtype=torch.float64) / SAMPLE_RATE
    f0 = 110 + 40 * torch.rand((), generator=generator, dtype=torch.float64)
    pitch = f0 * (1 + 0.15 * torch.sin(2 * math.pi * 0.6 * t))  # intonation
    phase = 2 * math.pi * torch.cumsum(pitch, 0) / SAMPLE_RATE
    voiced = sum(torch.sin(k * phase) / k for k in range(1, 25))
    envelope = torch.sin(math.pi * 3.5 * t).abs() ** 1.5  # ~ 7 syllables a second
    noise = torch.randn(num_samples, generator=generator, dtype=torch.float64)
    return (0.08 * voiced * envelope + 0.002 * noise).float()


def make_batch(batch_size: int, seed: int = 0):
    """(B, T) zero-padded waveforms and their (B,) lengths, 2-8 s each."""
    generator = torch.Generator().manual_seed(seed)
    seconds = 2 + 6 * torch.rand(batch_size, generator=generator)
    lengths = (seconds * SAMPLE_RATE).long()
    wav = torch.zeros(batch_size, int(lengths.max()))
    for b, n in enumerate(lengths.tolist()):
        wav[b, :n] = speech_like(n, generator)
    return wav, lengths


def loop_of_torchaudio(wav: torch.Tensor, lengths: torch.Tensor, n_mels: int):
    return [
        torchaudio_fbank(wav[b : b + 1, :n], num_mel_bins=n_mels, sample_frequency=SAMPLE_RATE)
        for b, n in enumerate(lengths.tolist())
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n-mels", type=int, default=80)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    wav, lengths = make_batch(args.batch)
    ours = Fbank(sample_rate=SAMPLE_RATE, n_mels=args.n_mels).eval()

    with torch.inference_mode():
        ours(wav, lengths), loop_of_torchaudio(wav, lengths, args.n_mels)  # warm-up
        times_ours, times_torchaudio = [], []
        for _ in range(args.reps):
            start = time.perf_counter()
            feats, feat_lengths = ours(wav, lengths)
            times_ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            references = loop_of_torchaudio(wav, lengths, args.n_mels)
            times_torchaudio.append(time.perf_counter() - start)

    max_diff = max(
        (feats[b, : ref.shape[0]] - ref).abs().max().item() for b, ref in enumerate(references)
    )
    counts_match = feat_lengths.tolist() == [ref.shape[0] for ref in references]
    median_ours, median_torchaudio = statistics.median(times_ours), statistics.median(times_torchaudio)
    audio_seconds = lengths.sum().item() / SAMPLE_RATE
    print(f"batch: {args.batch} utterances, {audio_seconds:.1f} s of audio, padded to {tuple(wav.shape)}; "
          f"{args.reps} interleaved reps, torch threads {torch.get_num_threads()}")
    print(f"ours (batched Fbank)      median {median_ours * 1e3:8.1f} ms")
    print(f"torchaudio (per-utt loop) median {median_torchaudio * 1e3:8.1f} ms")
    print(f"ratio ours/torchaudio     {median_ours / median_torchaudio:.3f}  (lower is better)")
    print(f"max abs difference        {max_diff:.3g}  (tolerance {TOLERANCE:g}); "
          f"frame counts match: {counts_match}")
    return 0 if (max_diff <= TOLERANCE and counts_match) else 1


if __name__ == "__main__":
    sys.exit(main())
