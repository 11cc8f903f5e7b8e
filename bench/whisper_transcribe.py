"""Transcribing many files: speechlm vs openai-whisper on the same OpenAI-format checkpoint
and the same files; identical text required.

    .venv/bin/python bench/whisper_transcribe.py [--checkpoint tiny.pt] [--beam 5] [--reps 1] [--threads N]

(a) 32 clips of 2-30 s (synthetic espeak-ng sentences, English and German), (b) two files
of ~3 min. openai-whisper transcribes one file at a time (`whisper.transcribe`, temperature
0, fp16 off as on CPU); ours (`speechlm.bin.transcribe`'s path: `transcribe_long`) decodes
the current 30-s window of every file in one batch. Both get the same audio arrays; the time
is the whole transcription (log-mel, encoder, search). Printed: whether every file's text
and segments are identical (exits 1 if not), each side's wall time and whisper / ours.

Without --checkpoint, the model is tests/whisper_tiny.py's: a small Whisper (d=64, 1+2
layers, OpenAI's full vocabulary) trained here for ~2 minutes with openai-whisper's own
classes, so that it decodes real words rather than random garbage. A bigger checkpoint
(e.g. OpenAI's tiny.pt, where available) can be given; the ratio then says more about
real use, since the decoder's share of the time grows with the model.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def corpus(seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(32 clips of 2-30 s, two files of ~3 min) built from the synthetic sentences."""
    from whisper_tiny import clips

    rng = np.random.default_rng(seed)
    pool = clips(seed)
    silence = lambda s: np.zeros(int(s * 16000), np.float32)  # noqa: E731

    def joined(seconds: float) -> np.ndarray:
        parts, total = [], 0.0
        while total < seconds:
            audio = pool[rng.integers(len(pool))][0]
            gap = silence(rng.uniform(0.2, 1.5))
            parts += [audio, gap]
            total += (len(audio) + len(gap)) / 16000
        out = np.concatenate(parts)
        return out[: int(seconds * 16000)] if seconds <= 30 else out

    short = [joined(float(s)) for s in rng.uniform(2.0, 30.0, 32)]
    long = [joined(180.0), joined(170.0)]
    return short, long


def run_whisper(model, audios, beam):
    import whisper

    options = dict(temperature=0.0, fp16=False, beam_size=beam) if beam else dict(temperature=0.0, fp16=False)
    return [whisper.transcribe(model, torch.from_numpy(a), **options) for a in audios]


def run_ours(model, tokenizer, audios, beam):
    from speechlm.features.whisper_mel import log_mel_spectrogram
    from speechlm.search.whisper import WhisperSearch
    from speechlm.search.whisper_longform import transcribe_long

    search = WhisperSearch(tokenizer, timestamps=True, beam_size=beam or None)
    return transcribe_long(model, search, [torch.from_numpy(a) for a in audios], log_mel_spectrogram,
                           model.frontend.n_mels, batch_size=32)


def same(mine: dict, theirs: dict) -> bool:
    return (mine["text"] == theirs["text"] and mine["language"] == theirs["language"]
            and [(s["tokens"], s["start"], s["end"]) for s in mine["segments"]]
            == [(s["tokens"], s["start"], s["end"]) for s in theirs["segments"]])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="an OpenAI-format Whisper .pt (default: train tests/whisper_tiny.py's)")
    p.add_argument("--beam", type=int, default=0, help="beam size (0: greedy, whisper's default)")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import whisper

    from speechlm.train.pretrained import load_pretrained

    with tempfile.TemporaryDirectory() as tmp:
        path = args.checkpoint
        if path is None:
            from whisper_tiny import train_tiny_whisper

            path = str(Path(tmp) / "tiny.pt")
            print("training the small test Whisper (~2 min) ...", flush=True)
            train_tiny_whisper(Path(path))
        theirs = whisper.load_model(path, device="cpu")
        ours, tokenizer, _ = load_pretrained(path)
    short, long = corpus()
    ok = True
    for name, audios in (("(a) 32 clips of 2-30 s", short), ("(b) 2 files of ~3 min", long)):
        seconds = sum(len(a) for a in audios) / 16000
        times = {"whisper": [], "ours": []}
        for _ in range(args.reps):
            start = time.perf_counter()
            want = run_whisper(theirs, audios, args.beam)
            times["whisper"].append(time.perf_counter() - start)
            start = time.perf_counter()
            got = run_ours(ours, tokenizer, audios, args.beam)
            times["ours"].append(time.perf_counter() - start)
        identical = sum(same(g, w) for g, w in zip(got, want))
        ok &= identical == len(audios)
        t_w, t_o = min(times["whisper"]), min(times["ours"])
        print(f"{name}: {seconds:.0f} s of audio; identical {identical}/{len(audios)}; "
              f"openai-whisper {t_w:.1f} s (RTF {t_w / seconds:.3f}), speechlm {t_o:.1f} s (RTF {t_o / seconds:.3f}); "
              f"whisper / ours = {t_w / t_o:.2f}x", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
