"""Synthetic speech corpora from espeak-ng (`speechlm.data.espeak`): render utterances
(resampled, optionally with noise at a given SNR) and write them as a Kaldi data directory,
with the words' times from the synthesis as a CTM if asked.

    write_synth_data_dir("data/synth", [SynthUtterance("spk1-0001", "spk1", "hello", "en-us")])
    python -m speechlm.data.synth "one two" "three" --voice en-us+f2 --out data/synth
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from speechlm.atomic import atomic_path, atomic_write_text
from speechlm.data.espeak import DEFAULT_VOICES, WordTime, check_prosody, check_voice, speak_with_word_times
from speechlm.data.kaldi_dir import spk2utt_from_utt2spk, write_table


@dataclass(frozen=True)
class SynthUtterance:
    """One utterance to synthesise. Kaldi requires `speaker` to be a prefix of `utt_id`."""

    utt_id: str
    speaker: str
    text: str
    voice: str
    rate: int = 175
    pitch: int = 50
    word_gap: int = 0  # extra pause between words, units of 10 ms


NOISE_COLORS = ("white", "pink")


def _noise(rng: np.random.Generator, n: int, color: str) -> np.ndarray:
    white = rng.standard_normal(n)
    if color == "white":
        return white
    if color == "pink":  # 1/f power: scale the spectrum by 1/sqrt(f), drop DC
        spectrum = np.fft.rfft(white)
        spectrum[0] = 0.0
        spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
        return np.fft.irfft(spectrum, n)
    raise ValueError(f"noise_color must be one of {NOISE_COLORS}, got {color!r}")


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator,
              noise_color: str = "white") -> np.ndarray:
    """audio + noise scaled so that 10*log10(mean(audio**2) / mean(noise**2)) == snr_db."""
    noise = _noise(rng, len(audio), noise_color)
    signal_power = float(np.mean(audio.astype(np.float64) ** 2))
    noise *= np.sqrt(signal_power / (np.mean(noise ** 2) * 10.0 ** (snr_db / 10.0)))
    return (audio + noise).astype(np.float32)


def _utterance_rng(seed: int, utt_id: str) -> np.random.Generator:
    # Seeded from (seed, utt_id), not from a running generator, so the noise of one
    # utterance does not depend on the order or the worker that renders it.
    digest = hashlib.sha256(f"{seed}\0{utt_id}".encode()).digest()
    return np.random.default_rng(np.frombuffer(digest, dtype=np.uint32))


def render_utterance(utt: SynthUtterance, sample_rate: int = 16000, noise_snr_db: float | None = None,
                     seed: int = 0, noise_color: str = "white") -> np.ndarray:
    """Speak, resample to `sample_rate` and optionally add noise: (T,) float32, peak <= 1."""
    return _render(utt, sample_rate, noise_snr_db, seed, noise_color)[0]


def _render(utt: SynthUtterance, sample_rate: int, noise_snr_db: float | None, seed: int,
            noise_color: str) -> tuple[np.ndarray, list[WordTime]]:
    """`render_utterance` and the word times (seconds: resampling and noise leave them)."""
    import torch  # heavy; only the data-dir path needs it

    audio, espeak_rate, words = speak_with_word_times(utt.text, voice=utt.voice, rate=utt.rate, pitch=utt.pitch,
                                                      word_gap=utt.word_gap)
    if sample_rate != espeak_rate:
        with torch.no_grad():
            audio = _resampler(espeak_rate, sample_rate)(torch.from_numpy(audio)).numpy()
    if noise_snr_db is not None:
        audio = add_noise(audio, noise_snr_db, _utterance_rng(seed, utt.utt_id), noise_color)
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if peak > 1.0:  # scale rather than clip: keeps the SNR and avoids clipping distortion
        audio = audio / peak
    return audio.astype(np.float32), words


@functools.lru_cache(maxsize=4)
def _resampler(orig_freq: int, new_freq: int):
    """torchaudio.functional.resample's filter, made once (it costs more than the resampling);
    float32 like resample's for float32 audio, so the output is the same."""
    import torch
    import torchaudio
    return torchaudio.transforms.Resample(orig_freq, new_freq, dtype=torch.float32)


def _write_wav(job: tuple) -> tuple[int, list[WordTime]]:
    """Render one utterance and write its WAV atomically; returns (number of samples, word times)."""
    utt, wav_path, sample_rate, noise_snr_db, seed, noise_color = job
    audio, words = _render(utt, sample_rate, noise_snr_db, seed, noise_color)
    with atomic_path(wav_path) as tmp:
        sf.write(tmp, audio, sample_rate, subtype="PCM_16", format="WAV")
    return len(audio), words


def _init_worker() -> None:
    import torch
    torch.set_num_threads(1)  # one process per core already


def _check_utterances(utterances: Sequence[SynthUtterance]) -> None:
    """Fail before any audio is made: ids, the Kaldi speaker-prefix rule, voices, prosody."""
    seen: set[str] = set()
    for u in utterances:
        for what, value in (("utterance id", u.utt_id), ("speaker id", u.speaker)):
            if not value or any(c.isspace() for c in value) or "/" in value:
                raise ValueError(f"utterance '{u.utt_id}': bad {what} {value!r} (empty, whitespace or '/')")
        if u.utt_id in seen:
            raise ValueError(f"duplicate utterance id '{u.utt_id}'")
        seen.add(u.utt_id)
        if not u.utt_id.startswith(u.speaker):
            raise ValueError(f"utterance '{u.utt_id}': speaker id '{u.speaker}' is not a prefix of the "
                             f"utterance id (Kaldi sorts utt2spk and spk2utt consistently only then)")
        if not u.text.strip():
            raise ValueError(f"utterance '{u.utt_id}': text is empty")
        check_prosody(u.rate, u.pitch, 50, u.word_gap)
    for voice in sorted({u.voice for u in utterances}):
        check_voice(voice)


def write_synth_data_dir(out_dir: str | os.PathLike, utterances: Sequence[SynthUtterance],
                         sample_rate: int = 16000, noise_snr_db: float | None = None, seed: int = 0,
                         num_workers: int = 1, noise_color: str = "white", ctm: bool = False) -> Path:
    """Synthesise `utterances` into a Kaldi data directory and return its path.

    Writes out_dir/wav/<utt_id>.wav (16-bit PCM, mono, `sample_rate`) and wav.scp (absolute
    paths), text, utt2spk, spk2utt, utt2dur (seconds); with `ctm`, also `ctm`: the words of
    `text` with their times from the synthesis (see `speak_with_word_times`), Kaldi CTM lines
    `<utt> 1 <start> <duration> <word>`, seconds from the utterance start. With `noise_snr_db`,
    white or pink noise is added at that SNR, seeded by (seed, utt_id). `num_workers` > 1
    renders in a spawn process pool (so a calling script needs the `if __name__ == "__main__":`
    guard).
    """
    utterances = list(utterances)
    _check_utterances(utterances)
    if noise_color not in NOISE_COLORS:
        raise ValueError(f"noise_color must be one of {NOISE_COLORS}, got {noise_color!r}")
    out_dir = Path(out_dir).resolve()
    wav_dir = out_dir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(u, wav_dir / f"{u.utt_id}.wav", sample_rate, noise_snr_db, seed, noise_color) for u in utterances]
    if num_workers > 1 and len(jobs) > 1:
        # spawn, not fork: the parent may hold torch threads and the espeak lock.
        with multiprocessing.get_context("spawn").Pool(min(num_workers, len(jobs)), _init_worker) as pool:
            rendered = pool.map(_write_wav, jobs, chunksize=max(1, len(jobs) // (4 * num_workers)))
    else:
        rendered = [_write_wav(job) for job in jobs]
    lengths = [n for n, _ in rendered]

    write_table(out_dir / "wav.scp", {u.utt_id: str(job[1]) for u, job in zip(utterances, jobs)})
    write_table(out_dir / "text", {u.utt_id: " ".join(u.text.split()) for u in utterances})
    utt2spk = {u.utt_id: u.speaker for u in utterances}
    write_table(out_dir / "utt2spk", utt2spk)
    write_table(out_dir / "spk2utt", spk2utt_from_utt2spk(utt2spk))
    write_table(out_dir / "utt2dur", {u.utt_id: f"{n / sample_rate:.4f}" for u, n in zip(utterances, lengths)})
    if ctm:
        write_ctm(out_dir / "ctm", {u.utt_id: words for u, (_, words) in zip(utterances, rendered)})
    return out_dir


def write_ctm(path: str | os.PathLike, utt2words: dict[str, Sequence[WordTime]]) -> None:
    """Kaldi CTM, utterances in C order, words in time order: `<utt> 1 <start> <duration> <word>`
    (milliseconds; the duration is that of the rounded times, so start + duration is the end)."""
    lines = []
    for utt in sorted(utt2words):
        for w in sorted(utt2words[utt], key=lambda w: w.start):
            start, end = round(w.start, 3), round(w.end, 3)
            lines.append(f"{utt} 1 {start:.3f} {end - start:.3f} {w.word}\n")
    atomic_write_text(path, "".join(lines))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Speak every text with every --voice into a Kaldi data "
                                     "dir; speakers are spk01, spk02, ... in --voice order.")
    parser.add_argument("texts", nargs="+")
    parser.add_argument("--out", required=True, help="data directory to write")
    parser.add_argument("--voice", action="append", help=f"repeatable; default {DEFAULT_VOICES[0]}")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--snr", type=float, default=None, help="add white noise at this SNR (dB)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=1)
    args = parser.parse_args(argv)
    utterances = [SynthUtterance(f"spk{s:02d}-{i:04d}", f"spk{s:02d}", text, voice)
                  for s, voice in enumerate(args.voice or [DEFAULT_VOICES[0]], start=1)
                  for i, text in enumerate(args.texts, start=1)]
    out = write_synth_data_dir(args.out, utterances, args.sample_rate, args.snr, args.seed, args.num_workers)
    print(f"wrote {len(utterances)} utterances to {out}")


if __name__ == "__main__":
    main()
