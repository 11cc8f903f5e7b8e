"""Synthetic overlapped speech for serialized output training (SOT, Kanda et al. 2020):
espeak-ng utterances of different speakers mixed with partial overlap, transcribed
first-in-first-out.

A mixture's first speaker starts at 0 s; each next one starts a random offset (10-ms steps,
`offset_range` seconds) after the previous one started, while that one is still speaking
(at least `min_overlap` s before its end), at a level within `max_level_diff_db` of the
first speaker's (RMS over the whole utterance). Its `text` is the speakers' transcripts in
order of start time joined by " <sc> ", the speaker-change token that Whisper-style
tokenizers map to their `speaker_change` id (rendered `<|sc|>`).

    mixtures = plan_mixtures(voices, 100, random.Random(0), "tr", single_share=0.2)
    write_sot_data_dir("data/train", mixtures, noise_snr_db=25.0)

The data dir is an ordinary Kaldi one (wav.scp, text, utt2spk, spk2utt, utt2dur), each
mixture its own speaker as Kaldi's multi-talker recipes do, plus `stm` (NIST segment time
marks, `MIX 1 SPEAKER START END WORDS`, one line per speaker, in order of start time): the
per-speaker references with the true speaker ids and times, which meeteval's cpWER reads.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from speechlm.atomic import atomic_path, atomic_write_text
from speechlm.data.digits import DIGITS, speaker_id
from speechlm.data.kaldi_dir import spk2utt_from_utt2spk, write_table
from speechlm.data.synth import SynthUtterance, _check_utterances, _utterance_rng, add_noise, render_utterance

SPEAKER_CHANGE = "<sc>"
RATES, PITCHES = (130, 210), (30, 70)  # espeak words per minute, pitch 0..100: as digit_string_utterances
FRAME = 0.01  # offsets are whole 10-ms frames: exact in stm, whole samples at 16 kHz


@dataclass(frozen=True)
class SotMixture:
    """What to mix. `sources` in order of start time (FIFO); `level_db[k]`: the level of
    source k relative to source 0 (0.0 for it); `offset_u[k - 1]` in [0, 1): where in its
    allowed range source k starts (the range depends on the previous source's duration,
    known only once it is spoken)."""

    utt_id: str
    sources: tuple[SynthUtterance, ...]
    level_db: tuple[float, ...]
    offset_u: tuple[float, ...]

    @property
    def text(self) -> str:
        return f" {SPEAKER_CHANGE} ".join(" ".join(s.text.split()) for s in self.sources)


def plan_mixtures(voices: Sequence[str], n: int, rng: random.Random, tag: str, single_share: float = 0.2,
                  max_level_diff_db: float = 3.0, first_digits: tuple[int, int] = (4, 7),
                  max_digits: int = 7) -> list[SotMixture]:
    """`n` mixtures `<tag><index>` of digit strings: round(single_share * n) of them (at random
    positions) one speaker, the others two distinct `voices`. The first speaker of a
    mixture says `first_digits` digits (long enough to be overlapped); every other
    utterance 1..max_digits, with random rate and pitch as `digit_string_utterances`."""
    if not 0.0 <= single_share <= 1.0:
        raise ValueError(f"single_share must be in [0, 1], got {single_share}")
    if len(set(voices)) < 2 and single_share < 1.0:
        raise ValueError("two-speaker mixtures need at least 2 distinct voices")
    singles = set(rng.sample(range(n), round(single_share * n)))
    out = []
    for i in range(n):
        mix_id = f"{tag}{i:05d}"
        chosen = rng.sample(sorted(set(voices)), 1 if i in singles else 2)
        sources = []
        for k, voice in enumerate(chosen):
            spk = speaker_id(voice)
            lo, hi = first_digits if k == 0 and len(chosen) > 1 else (1, max_digits)
            words = [rng.choice(DIGITS) for _ in range(rng.randint(lo, hi))]
            sources.append(SynthUtterance(f"{spk}-{mix_id}s{k}", spk, " ".join(words), voice,
                                          rate=rng.randint(*RATES), pitch=rng.randint(*PITCHES)))
        levels = (0.0,) + tuple(rng.uniform(-max_level_diff_db, max_level_diff_db) for _ in chosen[1:])
        out.append(SotMixture(mix_id, tuple(sources), levels, tuple(rng.random() for _ in chosen[1:])))
    return out


@dataclass(frozen=True)
class MixedAudio:
    """A rendered mixture: `audio` (T,) float32 = sum over k of gains[k] * (source k at
    offsets[k]) (+ noise). Offsets and durations in seconds; a source is
    `render_utterance(mix.sources[k], sample_rate)`."""

    audio: np.ndarray
    offsets: tuple[float, ...]
    durations: tuple[float, ...]
    gains: tuple[float, ...]


def _frames(seconds: float, rounding) -> int:
    return int(rounding(seconds / FRAME + (1e-9 if rounding is math.floor else -1e-9)))


def render_mixture(mix: SotMixture, sample_rate: int = 16000, offset_range: tuple[float, float] = (0.5, 1.5),
                   min_overlap: float = 0.5, noise_snr_db: float | None = None, seed: int = 0) -> MixedAudio:
    """Speak every source and mix them. Source k starts offset_range[0]..offset_range[1]
    s after source k-1 did and at least `min_overlap` s before that one ends (a previous
    source shorter than offset_range[0] + min_overlap gets offset_range[0]). With
    `noise_snr_db`, white noise at that SNR (of the mixture), seeded by (seed, utt_id).
    The mixture is scaled down (never clipped) if it peaks above 1."""
    lo, hi = _frames(offset_range[0], math.ceil), _frames(offset_range[1], math.floor)
    if not 0 <= lo <= hi:
        raise ValueError(f"offset_range must be 0 <= min <= max (at least one 10-ms step), got {offset_range}")
    audio = [render_utterance(u, sample_rate) for u in mix.sources]
    starts = [0]  # frames
    for k in range(1, len(audio)):
        up = max(lo, min(hi, _frames(len(audio[k - 1]) / sample_rate - min_overlap, math.floor)))
        starts.append(starts[-1] + lo + int(mix.offset_u[k - 1] * (up - lo + 1)))
    first = [round(f * FRAME * sample_rate) for f in starts]  # samples
    rms = [float(np.sqrt(np.mean(a.astype(np.float64) ** 2))) for a in audio]
    gains = [10.0 ** (db / 20.0) * rms[0] / r for db, r in zip(mix.level_db, rms)]
    out = np.zeros(max(s + len(a) for s, a in zip(first, audio)), dtype=np.float64)
    for s, a, g in zip(first, audio, gains):
        out[s:s + len(a)] += g * a
    if noise_snr_db is not None:
        out = add_noise(out, noise_snr_db, _utterance_rng(seed, mix.utt_id)).astype(np.float64)
    peak = float(np.max(np.abs(out)))
    if peak > 1.0:
        out, gains = out / peak, [g / peak for g in gains]
    return MixedAudio(out.astype(np.float32), tuple(f * FRAME for f in starts),
                      tuple(len(a) / sample_rate for a in audio), tuple(gains))


def _write_mixture(job: tuple) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """Render one mixture and write its WAV atomically: (samples, offsets, durations)."""
    mix, wav_path, sample_rate, kwargs = job
    m = render_mixture(mix, sample_rate, **kwargs)
    with atomic_path(wav_path) as tmp:
        sf.write(tmp, m.audio, sample_rate, subtype="PCM_16", format="WAV")
    return len(m.audio), m.offsets, m.durations


def _init_worker() -> None:
    import torch
    torch.set_num_threads(1)  # one process per core already


def write_sot_data_dir(out_dir: str | os.PathLike, mixtures: Sequence[SotMixture], sample_rate: int = 16000,
                       offset_range: tuple[float, float] = (0.5, 1.5), min_overlap: float = 0.5,
                       noise_snr_db: float | None = None, seed: int = 0, num_workers: int = 1) -> Path:
    """Render `mixtures` (see `render_mixture`) into a Kaldi data dir and return its path:
    wav/<id>.wav (16-bit PCM), wav.scp (absolute paths), text (FIFO, " <sc> "-joined),
    utt2spk and spk2utt (each mixture its own speaker), utt2dur, stm. `num_workers` > 1
    renders in a spawn process pool (a calling script needs the `__main__` guard)."""
    mixtures = list(mixtures)
    for m in mixtures:
        if not m.utt_id or any(c.isspace() or c in "/-()" for c in m.utt_id):
            raise ValueError(f"mixture id {m.utt_id!r}: empty, or has whitespace, '/', '-' or parentheses "
                             f"(it is also the speaker id of sclite's SPEAKER-UTT trn ids)")
        if not (len(m.sources) == len(m.level_db) == len(m.offset_u) + 1):
            raise ValueError(f"mixture {m.utt_id}: {len(m.sources)} sources need as many levels and one offset fewer")
    if len({m.utt_id for m in mixtures}) != len(mixtures):
        raise ValueError("duplicate mixture ids")
    _check_utterances([s for m in mixtures for s in m.sources])  # ids, voices and prosody, before any audio
    out_dir = Path(out_dir).resolve()
    (out_dir / "wav").mkdir(parents=True, exist_ok=True)
    kwargs = {"offset_range": offset_range, "min_overlap": min_overlap, "noise_snr_db": noise_snr_db, "seed": seed}
    jobs = [(m, out_dir / "wav" / f"{m.utt_id}.wav", sample_rate, kwargs) for m in mixtures]
    if num_workers > 1 and len(jobs) > 1:
        # spawn, not fork: the parent may hold torch threads and espeak's lock.
        with multiprocessing.get_context("spawn").Pool(min(num_workers, len(jobs)), _init_worker) as pool:
            rendered = pool.map(_write_mixture, jobs, chunksize=max(1, len(jobs) // (4 * num_workers)))
    else:
        rendered = [_write_mixture(job) for job in jobs]

    write_table(out_dir / "wav.scp", {m.utt_id: str(job[1]) for m, job in zip(mixtures, jobs)})
    write_table(out_dir / "text", {m.utt_id: m.text for m in mixtures})
    utt2spk = {m.utt_id: m.utt_id for m in mixtures}
    write_table(out_dir / "utt2spk", utt2spk)
    write_table(out_dir / "spk2utt", spk2utt_from_utt2spk(utt2spk))
    write_table(out_dir / "utt2dur", {m.utt_id: f"{n / sample_rate:.4f}" for m, (n, _, _) in zip(mixtures, rendered)})
    stm = [f"{m.utt_id} 1 {s.speaker} {start:.4f} {start + dur:.4f} {' '.join(s.text.split())}\n"
           for m, (_, offsets, durs) in sorted(zip(mixtures, rendered), key=lambda r: r[0].utt_id)
           for s, start, dur in zip(m.sources, offsets, durs)]
    atomic_write_text(out_dir / "stm", "".join(stm))
    return out_dir
