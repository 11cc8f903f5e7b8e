"""Transcribe audio files with a trained model; one `path<TAB>text` line per file.

    python -m speechlm.bin.transcribe --model exp/conformer_fast/model.avg.ckpt a.wav b.flac ...
    python -m speechlm.bin.transcribe --model m.ckpt --search ctc_greedy a.wav
    python -m speechlm.bin.transcribe --model m.ckpt --beam-size 4 --set search.maxlenratio=0.5 a.wav

Any format libsndfile reads (wav, flac, ogg, mp3 ...) at any sample rate: audio is mixed
down to mono and resampled to the model's rate. The search and its options come from the
same config as `speechlm.bin.decode` (conf/decode.yaml: the model's own search unless
`--search NAME`; `--set KEY=VALUE` for any other field), and the same code path decodes
(`speechlm.search.decoding`): files in duration-sorted batches, each file encoded alone, so
its text never depends on the others. Lines are printed in the order given. A file that cannot be read or decoded gets an error line on stderr
naming it; the others are still transcribed, and the exit status is 1 (0 if all worked).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from speechlm.data.audio import AudioReadError, read_audio, resample
from speechlm.data.collate import collate_audio
from speechlm.search.decoding import build_search, decode_batch
from speechlm.train.pretrained import load_pretrained

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


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
               sample_rate: int, encode_each: bool = True) -> tuple[dict[int, str], dict[int, str]]:
    """(texts, errors) by index. A batch that fails is retried file by file, so one bad
    file costs only itself."""
    texts, errors = {}, {}
    durations = {i: len(a) / sample_rate for i, a in audio.items()}

    def run(ids: list[int]) -> None:
        batch = collate_audio([{"id": str(i), "audio": audio[i]} for i in ids])
        for i, tokens in zip(ids, decode_batch(model, search, batch, encode_each)):
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
    p.add_argument("--search", help="a search of conf/search/ (joint, ctc_greedy, transducer_greedy, modified_beam, "
                                    "graves_beam); default: the model's own")
    p.add_argument("--beam-size", type=int, help="search.beam_size")
    p.add_argument("--ctc-weight", type=float, help="search.ctc_weight")
    p.add_argument("--penalty", type=float, help="search.penalty")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other field of conf/decode.yaml, e.g. search.maxlenratio=0.5 or encode_each=false")
    p.add_argument("--batch-seconds", type=float, help="audio per batch (default: conf/decode.yaml's batch_seconds)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_flush_denormal(True)
    overrides = [f"search={args.search}"] if args.search else []
    for name in ("beam_size", "ctc_weight", "penalty"):
        if getattr(args, name) is not None:
            overrides.append(f"search.{name}={getattr(args, name)}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="decode", overrides=overrides + args.set)
    model, tokenizer, config = load_pretrained(args.model, args.device)
    search = build_search(model, cfg.search, config.get("search"))
    sample_rate = int(config["frontend"]["sample_rate"])
    audio, errors = {}, {}
    for i, path in enumerate(args.files):
        try:
            audio[i] = load_mono(path, sample_rate).to(args.device)
        except AudioReadError as e:
            errors[i] = str(e)
    batch_seconds = cfg.batch_seconds if args.batch_seconds is None else args.batch_seconds
    texts, decode_errors = transcribe(model, tokenizer, audio, search, batch_seconds, sample_rate, cfg.encode_each)
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
