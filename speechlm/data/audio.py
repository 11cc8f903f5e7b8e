"""Audio I/O for `wav.scp` entries: files libsndfile reads (wav, flac, ogg, ...) and
Kaldi `cmd |` pipes, optionally cut to a segment and resampled with torchaudio."""
from __future__ import annotations

import functools
import io
import subprocess

import numpy as np
import soundfile as sf
import torch
import torchaudio


class AudioReadError(RuntimeError):
    """A recording could not be read; the message names the entry and why."""


def is_pipe(entry: str) -> bool:
    return entry.rstrip().endswith("|")


def _run_pipe(entry: str) -> bytes:
    cmd = entry.rstrip()[:-1].strip()
    proc = subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioReadError(f"pipe '{cmd}' exited with {proc.returncode}: {err[-1] if err else 'no message'}")
    if not proc.stdout:
        raise AudioReadError(f"pipe '{cmd}' produced no output")
    return proc.stdout


def audio_source(entry: str):
    """What soundfile should open for an entry: a path, or the bytes a pipe wrote."""
    return io.BytesIO(_run_pipe(entry)) if is_pipe(entry) else entry.strip()


def iter_blocks(f: sf.SoundFile, block_frames: int = 1 << 16):
    """Decode `(n, C)` float32 blocks until the stream really ends. Unlike
    `SoundFile.blocks`, this does not trust the header's frame count, which is bogus
    for audio written to a pipe."""
    while True:
        block = f.read(block_frames, dtype="float32", always_2d=True)
        if len(block):
            yield block
        if len(block) < block_frames:
            return


def audio_info(entry: str) -> tuple[int, int]:
    """(num_frames, sample_rate) of a recording. Cheap for files (header only); a pipe
    has to run."""
    try:
        info = sf.info(audio_source(entry))
    except AudioReadError:
        raise
    except Exception as e:  # soundfile raises RuntimeError/LibsndfileError/OSError variants
        raise AudioReadError(f"cannot read '{entry}': {e}") from None
    return info.frames, info.samplerate


def read_audio(
    entry: str,
    start: float = 0.0,
    end: float | None = None,
    channel: int | None = 0,
) -> tuple[np.ndarray, int]:
    """Read a `wav.scp` entry as float32 in [-1, 1].

    Returns `(samples, sample_rate)`; samples is `(T,)` for a single `channel` (default
    the first, as Kaldi's `extract-segments` does) or `(T, C)` with `channel=None`.
    `start`/`end` are seconds (a `segments` line); only that span is decoded for files.
    """
    try:
        src = audio_source(entry)
        with sf.SoundFile(src) as f:
            sr = f.samplerate
            first = int(round(start * sr))
            if is_pipe(entry):
                # A pipe's header often cannot know the length (sox/flac to stdout):
                # decode to the end, then cut.
                data = np.concatenate(list(iter_blocks(f)))
                data = data[first:] if end is None else data[first:int(round(end * sr))]
            else:
                last = f.frames if end is None else min(int(round(end * sr)), f.frames)
                if first > f.frames:
                    raise AudioReadError(f"segment starts at {start:.3f}s, past the end ({f.frames / sr:.3f}s)")
                f.seek(first)
                data = f.read(max(last - first, 0), dtype="float32", always_2d=True)
    except AudioReadError:
        raise
    except Exception as e:
        raise AudioReadError(f"cannot read '{entry}': {e}") from None
    if channel is None:
        return data, sr
    if channel >= data.shape[1]:
        raise AudioReadError(f"'{entry}' has {data.shape[1]} channel(s); channel {channel} requested")
    return np.ascontiguousarray(data[:, channel]), sr


@functools.lru_cache(maxsize=16)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    # The transform precomputes its sinc kernel once; a data loader reuses it per rate pair.
    return torchaudio.transforms.Resample(orig, new)


def resample(samples: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Band-limited resampling (torchaudio's windowed sinc) along the last dimension."""
    if orig_sr == new_sr:
        return samples
    with torch.no_grad():
        return _resampler(int(orig_sr), int(new_sr))(samples)
