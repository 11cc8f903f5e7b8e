"""Transcribe audio files with a trained model; one `path<TAB>text` line per file.

    python -m speechlm.bin.transcribe --model exp/conformer_fast/model.avg.ckpt a.wav b.flac ...

Any format libsndfile reads (wav, flac, ogg, mp3 ...) at any sample rate: audio is mixed
down to mono and resampled to the model's rate. Files are decoded in duration-sorted
batches with the joint CTC/attention beam search (as `speechlm.bin.decode`; each file is
encoded alone, so its text never depends on the others), and printed in the order given. A file that cannot be read or decoded gets an error line on stderr
naming it; the others are still transcribed, and the exit status is 1 (0 if all worked).
"""
from __future__ import annotations

import argparse
import sys
from types import SimpleNamespace

import torch

from speechlm.bin.decode import ATTENTION_METHODS, TRANSDUCER_METHODS, decode_batch
from speechlm.data.audio import AudioReadError, read_audio, resample
from speechlm.data.collate import collate_audio
from speechlm.train.pretrained import load_pretrained


def load_mono(path: str, sample_rate: int) -> torch.Tensor:
    """(T,) float32 at `sample_rate`, channels averaged."""
    if path.rstrip().endswith("|"):  # read_audio would run it as a Kaldi pipe
        raise AudioReadError(f"'{path}' is not a file name")
    samples, sr = read_audio(path, channel=None)
    if len(samples) == 0:
        raise AudioReadError(f"'{path}' has no samples")
    return resample(torch.from_numpy(samples.mean(axis=1)), sr, sample_rate)


def batches(durations: dict[int, float], batch_seconds: float) -> list[list[int]]:
    """Indices sorted by duration, grouped so that a batch's padded audio stays within
    `batch_seconds` (a longer file is a batch of its own)."""
    out: list[list[int]] = []
    for i in sorted(durations, key=durations.get):
        if out and durations[i] * (len(out[-1]) + 1) <= batch_seconds:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def transcribe(model, tokenizer, audio: dict[int, torch.Tensor], search, batch_seconds: float,
               sample_rate: int) -> tuple[dict[int, str], dict[int, str]]:
    """(texts, errors) by index. A batch that fails is retried file by file, so one bad
    file costs only itself."""
    texts, errors = {}, {}
    durations = {i: len(a) / sample_rate for i, a in audio.items()}

    def run(ids: list[int]) -> None:
        batch = collate_audio([{"id": str(i), "audio": audio[i]} for i in ids])
        for i, tokens in zip(ids, decode_batch(model, batch, search)):
            texts[i] = tokenizer.decode(tokens)

    for ids in batches(durations, batch_seconds):
        try:
            run(ids)
        except Exception:
            for i in ids:
                try:
                    run([i])
                except Exception as e:  # noqa: BLE001 - reported per file, the rest go on
                    errors[i] = f"decoding failed: {type(e).__name__}: {e}"
    return texts, errors


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model.avg.ckpt or any training checkpoint")
    p.add_argument("files", nargs="+", help="audio files")
    p.add_argument("--method", choices=("auto",) + ATTENTION_METHODS + TRANSDUCER_METHODS, default="auto",
                   help="auto: joint CTC/attention beam search, or modified beam search for a transducer")
    p.add_argument("--beam-size", type=int, default=10)
    p.add_argument("--ctc-weight", type=float, default=0.3)
    p.add_argument("--penalty", type=float, default=0.0)
    p.add_argument("--batch-seconds", type=float, default=100.0)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_flush_denormal(True)
    model, tokenizer, config = load_pretrained(args.model, args.device)
    sample_rate = int(config["frontend"]["sample_rate"])
    search = SimpleNamespace(method=args.method, beam_size=args.beam_size, ctc_weight=args.ctc_weight,
                             penalty=args.penalty, maxlenratio=0.0, minlenratio=0.0, max_symbols_per_frame=1,
                             encode_each=True)
    audio, errors = {}, {}
    for i, path in enumerate(args.files):
        try:
            audio[i] = load_mono(path, sample_rate).to(args.device)
        except AudioReadError as e:
            errors[i] = str(e)
    texts, decode_errors = transcribe(model, tokenizer, audio, search, args.batch_seconds, sample_rate)
    errors.update(decode_errors)
    for i, path in enumerate(args.files):
        if i in errors:
            print(f"transcribe: error: {path}: {errors[i]}", file=sys.stderr)
        else:
            print(f"{path}\t{texts[i]}")
    if errors:
        print(f"transcribe: {len(errors)} of {len(args.files)} file(s) failed", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
