"""Transcribe audio files with a trained model; one `path<TAB>text` line per file.

    python -m speechlm.bin.transcribe --model exp/conformer_fast/model.avg.ckpt a.wav b.flac ...
    python -m speechlm.bin.transcribe --model m.ckpt --search ctc_greedy a.wav
    python -m speechlm.bin.transcribe --model m.ckpt --beam-size 4 --set search.maxlenratio=0.5 a.wav
    python -m speechlm.bin.transcribe --model tiny.pt --language de --task translate --output-format srt a.mp3

`--model` is a speechlm checkpoint or an OpenAI Whisper checkpoint file (`tiny.pt`, as the
`whisper` command takes). A Whisper-style model with 30-s windows (OpenAI's, or one trained
here with `frontend=whisper_mel`) transcribes files of any length as `whisper.transcribe` does
(`speechlm.search.whisper_longform`: seek over 30-s windows, timestamps, the previous text as
prompt), with every file's current window decoded in one batch. `--language` (default:
detected), `--task transcribe|translate`, `--timestamps` (segment times in the txt lines),
`--output-format txt|srt|vtt|json` (srt/vtt/json: one file per input in --output-dir).

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
import json
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from tqdm import tqdm

from speechlm.atomic import atomic_write_text
from speechlm.data.audio import AudioReadError, read_audio, resample
from speechlm.data.collate import collate_audio
from speechlm.search.decoding import build_search, decode_batch
from speechlm.search.whisper import WhisperSearch
from speechlm.search.whisper_longform import transcribe_long
from speechlm.train.pretrained import load_pretrained, model_sample_rate

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
               sample_rate: int, encode_each: bool = True, progress=None) -> tuple[dict[int, dict], dict[int, str]]:
    """(results, errors) by index; a result is {text, segments} (segments: [{start, end,
    text}], one per file unless the model gives timestamps). A batch that fails is retried
    file by file, so one bad file costs only itself."""
    texts, errors = {}, {}
    durations = {i: len(a) / sample_rate for i, a in audio.items()}
    long_form = isinstance(search, WhisperSearch) and getattr(model.frontend, "chunk_seconds", None) == 30

    def run(ids: list[int]) -> None:
        if long_form:
            from speechlm.features.whisper_mel import log_mel_spectrogram

            for i, result in zip(ids, transcribe_long(model, search, [audio[i] for i in ids], log_mel_spectrogram,
                                                      model.frontend.n_mels)):
                texts[i] = {"text": result["text"].strip(), "language": result["language"],
                            "segments": [{k: s[k] for k in ("start", "end", "text")} for s in result["segments"]]}
        else:
            batch = collate_audio([{"id": str(i), "audio": audio[i]} for i in ids])
            for i, tokens in zip(ids, decode_batch(model, search, batch, encode_each)):
                text = tokenizer.decode(tokens)
                texts[i] = {"text": text, "segments": [{"start": 0.0, "end": durations[i], "text": text}]}
        if progress is not None:
            progress(len(ids))

    # long-form decoding batches the files' 30-s windows itself: all files in one call
    groups = [sorted(audio, key=durations.get)] if long_form and audio else batches(durations, batch_seconds)
    for ids in groups:
        try:
            run(ids)
        except Exception:
            for i in ids:
                try:
                    run([i])
                except Exception as e:  # noqa: BLE001 - reported per file, the rest go on
                    errors[i] = f"decoding failed: {type(e).__name__}: {e}"
    return texts, errors


def format_timestamp(seconds: float, always_hours: bool = False, decimal: str = ".") -> str:
    """`[HH:]MM:SS.mmm` as whisper's writers print it."""
    ms = round(seconds * 1000.0)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    hh = f"{hours:02d}:" if always_hours or hours > 0 else ""
    return f"{hh}{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def subtitles(segments: list[dict], fmt: str) -> str:
    """SubRip (srt) or WebVTT (vtt) text of the segments."""
    if fmt == "srt":
        return "".join(f"{n}\n{format_timestamp(s['start'], True, ',')} --> {format_timestamp(s['end'], True, ',')}\n"
                       f"{s['text'].strip()}\n\n" for n, s in enumerate(segments, start=1))
    return "WEBVTT\n\n" + "".join(f"{format_timestamp(s['start'])} --> {format_timestamp(s['end'])}\n{s['text'].strip()}\n\n"
                                   for s in segments)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model.avg.ckpt, any training checkpoint, or an OpenAI Whisper .pt")
    p.add_argument("files", nargs="+", help="audio files")
    p.add_argument("--search", help="a search of conf/search/ (joint, ctc_greedy, transducer_greedy, modified_beam, "
                                    "graves_beam, whisper); default: the model's own")
    p.add_argument("--beam-size", type=int, help="search.beam_size")
    p.add_argument("--ctc-weight", type=float, help="search.ctc_weight")
    p.add_argument("--penalty", type=float, help="search.penalty")
    p.add_argument("--language", help="search.language of a multitask model (default: detected)")
    p.add_argument("--task", choices=("transcribe", "translate"), help="search.task of a multitask model")
    p.add_argument("--timestamps", action="store_true",
                   help="segment times in the txt output (and timestamp tokens for a multitask model's search)")
    p.add_argument("--output-format", choices=("txt", "srt", "vtt", "json"), default="txt",
                   help="txt: path<TAB>text lines on stdout; srt, vtt, json: a file per input in --output-dir")
    p.add_argument("--output-dir", default=".", help="where srt/vtt/json files go (default: .)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other field of conf/decode.yaml, e.g. search.maxlenratio=0.5 or encode_each=false")
    p.add_argument("--batch-seconds", type=float, help="audio per batch (default: conf/decode.yaml's batch_seconds)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_flush_denormal(True)
    overrides = [f"search={args.search}"] if args.search else []
    for name in ("beam_size", "ctc_weight", "penalty", "language", "task"):
        if getattr(args, name) is not None:
            overrides.append(f"search.{name}={getattr(args, name)}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="decode", overrides=overrides + args.set)
    model, tokenizer, config = load_pretrained(args.model, args.device)
    search = build_search(model, cfg.search, config.get("search"), tokenizer)
    if isinstance(search, WhisperSearch) and (args.timestamps or args.output_format in ("srt", "vtt", "json")):
        search.timestamps = True
    if isinstance(search, WhisperSearch) and getattr(model.frontend, "chunk_seconds", None) == 30:
        search.timestamps = True  # whisper.transcribe's long-form decoding seeks by timestamps
    sample_rate = model_sample_rate(model, config)
    audio, errors = {}, {}
    for i, path in enumerate(args.files):
        try:
            audio[i] = load_mono(path, sample_rate).to(args.device)
        except AudioReadError as e:
            errors[i] = str(e)
    batch_seconds = cfg.batch_seconds if args.batch_seconds is None else args.batch_seconds
    with tqdm(total=len(audio), unit="file", disable=None, file=sys.stderr) as bar:
        results, decode_errors = transcribe(model, tokenizer, audio, search, batch_seconds, sample_rate,
                                            cfg.encode_each, progress=bar.update)
    errors.update(decode_errors)
    out_dir = Path(args.output_dir)
    for i, path in enumerate(args.files):
        if i in errors:
            print(f"transcribe: error: {path}: {errors[i]}", file=sys.stderr)
        elif args.output_format == "txt":
            if args.timestamps:
                for s in results[i]["segments"]:
                    print(f"{path}\t[{format_timestamp(s['start'])} --> {format_timestamp(s['end'])}]\t{s['text'].strip()}")
            else:
                print(f"{path}\t{results[i]['text']}")
        else:
            target = out_dir / f"{Path(path).stem}.{args.output_format}"
            body = (json.dumps({"file": path, **results[i]}, ensure_ascii=False, indent=1) + "\n"
                    if args.output_format == "json" else subtitles(results[i]["segments"], args.output_format))
            atomic_write_text(target, body)
            print(f"{path}\t{target}")
    if errors:
        print(f"transcribe: {len(errors)} of {len(args.files)} file(s) failed", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
