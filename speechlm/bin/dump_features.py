"""Dump frame features of a data dir for k-means: HuBERT's offline targets, step 1.

    python -m speechlm.bin.dump_features data/train dump/mfcc --mfcc
    python -m speechlm.bin.dump_features data/train dump/mfcc_10pc --mfcc --percent 10 --seed 0
    python -m speechlm.bin.dump_features data/train dump/l6 --model exp/hubert_it1/model.avg.ckpt --layer 6

`--mfcc` gives HuBERT's first-iteration features, as fairseq's `dump_mfcc_feature.py`:
13 Kaldi MFCCs (25 ms windows every 10 ms, no energy, `torchaudio.compliance.kaldi.mfcc`)
with deltas and delta-deltas (`torchaudio.functional.compute_deltas`): 39 dims at 100 Hz.
`--model CKPT --layer N` gives the output of encoder layer N (1-based) of a speechlm
checkpoint, as `speechlm.models.encode.encode_speech` computes it in eval mode. Each
utterance is encoded alone (`encode_each`): run as one padded batch, a Conformer's
subsampling and convolutions let the padding reach the real frames, so an utterance's
features would depend on its batch. `--max-seconds` bounds the audio read per batch.

`--percent P` keeps a random P% of the utterances (fairseq's `learn_kmeans.py --percent`,
for learning k-means on a subset), the same ones for the same `--seed`.

Writes OUT_DIR/feats.npy ((frames, dims) float32: every utterance's frames, in the data
dir's order), OUT_DIR/utt2num_frames (`utt frames`, the rows of each utterance) and
OUT_DIR/info.json (source, layer, dims, frame rate in Hz, ...), each written atomically.
An utterance that cannot be read (or gives no frames) is named on stderr and left out; the
rest are dumped and the exit status is 1 (0 if all worked).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torchaudio
from tqdm import tqdm

from speechlm.atomic import atomic_path, atomic_write_text
from speechlm.data.audio import AudioReadError
from speechlm.data.dataset import load_utterance
from speechlm.data.kaldi_dir import DataDir, DataDirError, write_table
from speechlm.encoders.base import EncoderOutput
from speechlm.models.encode import encode_each, encode_speech

MFCC_FRAME_RATE = 100  # Hz: Kaldi's 10 ms frame shift


def mfcc_features(audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """(T,) waveform in [-1, 1] -> (frames, 39): MFCC + deltas + delta-deltas, exactly as
    fairseq's `examples/hubert/simple_kmeans/dump_mfcc_feature.py`."""
    mfccs = torchaudio.compliance.kaldi.mfcc(waveform=audio.reshape(1, -1).float(), sample_frequency=sample_rate,
                                            use_energy=False)  # (time, 13)
    mfccs = mfccs.transpose(0, 1)  # compute_deltas works along the last axis
    deltas = torchaudio.functional.compute_deltas(mfccs)
    ddeltas = torchaudio.functional.compute_deltas(deltas)
    return torch.cat([mfccs, deltas, ddeltas], dim=0).transpose(0, 1).contiguous()


def layer_encoder(model: torch.nn.Module, layer: int) -> Callable[[torch.Tensor, torch.Tensor], EncoderOutput]:
    """(B, T) audio, (B,) lengths -> EncoderOutput whose `output` is encoder layer `layer`."""
    def encode(audio: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        out = encode_speech(model.encoder, audio, lengths, model.frontend, model.normalize, layers=[layer])
        if layer not in out.intermediate:
            raise ValueError(f"the encoder has no layer {layer}")
        return EncoderOutput(out.intermediate[layer], out.lengths, {})
    return encode


def measure_frame_rate(encode: Callable, sample_rate: int, device: str) -> int:
    """Output frames per second of audio, from the output lengths of 5 s and 10 s of
    silence (their difference, so that the frames a subsampling loses at the ends cancel)."""
    frames = []
    for seconds in (5, 10):
        n = seconds * sample_rate
        frames.append(int(encode(torch.zeros(1, n, device=device), torch.tensor([n], device=device)).lengths[0]))
    return round((frames[1] - frames[0]) / 5)


def select_utterances(utts: list[str], percent: float | None, seed: int) -> list[str]:
    """A random `percent`% (rounded up) of `utts`, in their order; all without `percent`."""
    if percent is None:
        return utts
    count = math.ceil(len(utts) * percent / 100)
    keep = set(np.random.default_rng(seed).choice(len(utts), size=count, replace=False).tolist())
    return [u for i, u in enumerate(utts) if i in keep]


def read_batches(dd: DataDir, utts: list[str], sample_rate: int,
                 max_seconds: float) -> Iterator[list[tuple[str, torch.Tensor | str]]]:
    """Consecutive utterances, (id, audio (T,) or why it could not be read), in groups of
    at most `max_seconds` of audio (a longer utterance is a group of its own)."""
    batch, samples = [], 0
    for utt in utts:
        try:
            audio, _ = load_utterance(dd, utt, sample_rate)
            item = audio if audio.numel() else "no samples"
        except (AudioReadError, DataDirError) as e:
            item = str(e)
        n = item.numel() if isinstance(item, torch.Tensor) else 0
        if batch and samples + n > max_seconds * sample_rate:
            yield batch
            batch, samples = [], 0
        batch.append((utt, item))
        samples += n
    if batch:
        yield batch


class NpyWriter:
    """Rows appended to a (rows, dims) float32 .npy file whose header is written last.

    numpy's header leaves room for the row count to grow (`GROWTH_AXIS_MAX_DIGITS`), so
    the final shape is written over the first one in place: the features never need to
    fit in memory at once."""

    def __init__(self, f):
        self.f, self.rows, self.dims = f, 0, None

    def _header(self) -> None:
        self.f.seek(0)
        np.lib.format.write_array_header_1_0(self.f, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (self.rows, self.dims)})

    def append(self, rows: np.ndarray) -> None:
        if self.dims is None:
            self.dims = rows.shape[1]
            self._header()
            self.data_start = self.f.tell()
        self.f.write(np.ascontiguousarray(rows, dtype="<f4").tobytes())
        self.rows += len(rows)

    def close(self) -> None:
        end = self.f.tell()
        self._header()
        if self.f.tell() != self.data_start:
            raise RuntimeError("the .npy header changed size")
        self.f.seek(end)


def encode_utterances(encode: Callable, audio: dict[str, torch.Tensor], device: str,
                      errors: dict[str, str]) -> dict[str, torch.Tensor]:
    """{utt: (frames, D)} of a batch, each utterance encoded alone (`encode_each`); if the
    batch fails, utterance by utterance, so that one bad utterance costs only itself."""
    def run(ids: list[str]) -> dict[str, torch.Tensor]:
        lengths = torch.tensor([len(audio[u]) for u in ids], device=device)
        padded = torch.nn.utils.rnn.pad_sequence([audio[u] for u in ids], batch_first=True).to(device)
        out = encode_each(encode, padded, lengths)
        return {u: out.output[b, : int(out.lengths[b])] for b, u in enumerate(ids)}

    if not audio:
        return {}
    try:
        return run(list(audio))
    except Exception:  # noqa: BLE001 - retried alone below
        feats = {}
        for utt in audio:
            try:
                feats.update(run([utt]))
            except Exception as e:  # noqa: BLE001 - reported per utterance, the rest go on
                errors[utt] = f"encoding failed: {type(e).__name__}: {e}"
        return feats



def report(prog: str, errors: dict[str, str]) -> None:
    for utt, why in sorted(errors.items()):
        print(f"{prog}: error: {utt}: {why}", file=sys.stderr)

class NothingDumped(Exception):
    """No utterance gave features: there is no feats.npy to write."""


def dump(dd: DataDir, utts: list[str], sample_rate: int, max_seconds: float, encode: Callable | None, device: str,
         writer: NpyWriter, num_frames: dict[str, int], errors: dict[str, str],
         progress: Callable[[int], object]) -> None:
    """Features of `utts` appended to `writer` in their order, with their frame counts in
    `num_frames`, and why an utterance failed in `errors`; MFCCs without `encode`."""
    for batch in read_batches(dd, utts, sample_rate, max_seconds):
        readable = {utt: audio for utt, audio in batch if not isinstance(audio, str)}
        errors.update({utt: why for utt, why in batch if isinstance(why, str)})
        if encode is not None:
            feats = encode_utterances(encode, readable, device, errors)
        else:
            feats = {}
            for utt, audio in readable.items():
                try:
                    feats[utt] = mfcc_features(audio, sample_rate)
                except Exception as e:  # noqa: BLE001 - reported per utterance, the rest go on
                    errors[utt] = f"feature extraction failed: {type(e).__name__}: {e}"
        for utt in readable:
            if utt in feats and len(feats[utt]) == 0:
                errors[utt] = f"no frames from {len(readable[utt])} samples"
            elif utt in feats:
                writer.append(feats[utt].float().cpu().numpy())
                num_frames[utt] = len(feats[utt])
        progress(len(batch))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m speechlm.bin.dump_features", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--mfcc", action="store_true", help="MFCC + deltas + delta-deltas (HuBERT iteration 1)")
    source.add_argument("--model", help="a speechlm checkpoint whose encoder layer --layer to dump")
    p.add_argument("--layer", type=int, help="1-based encoder layer (with --model)")
    p.add_argument("--sample-rate", type=int,
                   help="audio is resampled to this rate (default: 16000 for --mfcc, the model's own rate)")
    p.add_argument("--max-seconds", type=float, default=100.0, help="audio seconds read per batch")
    p.add_argument("--percent", type=float, help="dump only a random PERCENT%% of the utterances")
    p.add_argument("--seed", type=int, default=0, help="which utterances --percent picks")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.model is not None and (args.layer is None or args.layer < 1):
        p.error("--model needs --layer N (1-based)")
    if args.mfcc and args.layer is not None:
        p.error("--layer goes with --model, not --mfcc")
    if args.percent is not None and not 0 < args.percent <= 100:
        p.error(f"--percent must be in (0, 100], got {args.percent}")

    prog = "dump_features"
    try:
        dd = DataDir.load(args.data_dir)
    except DataDirError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    info = {"data_dir": str(args.data_dir), "percent": args.percent, "seed": args.seed if args.percent else None}
    if args.mfcc:
        sample_rate = args.sample_rate or 16000
        info.update(source="mfcc", layer=None, frame_rate=MFCC_FRAME_RATE)
        encode = None
    else:
        from speechlm.train.pretrained import load_pretrained, model_sample_rate

        model, _, config = load_pretrained(args.model, args.device)
        model_rate = model_sample_rate(model, config)
        if args.sample_rate not in (None, model_rate):
            p.error(f"--sample-rate {args.sample_rate}: the model takes {model_rate} Hz audio")
        if model.frontend is None:
            print(f"{prog}: error: {args.model}: the model has no frontend (it takes features, not audio)",
                  file=sys.stderr)
            return 1
        sample_rate, encode = model_rate, layer_encoder(model, args.layer)
        try:
            with torch.inference_mode():
                frame_rate = measure_frame_rate(encode, sample_rate, args.device)
        except ValueError as e:
            print(f"{prog}: error: {args.model}: {e}", file=sys.stderr)
            return 1
        info.update(source=str(args.model), layer=args.layer, frame_rate=frame_rate)
    info["sample_rate"] = sample_rate

    utts = select_utterances(dd.utterances, args.percent, args.seed)
    num_frames, errors, start = {}, {}, time.time()
    out = args.out_dir / "feats.npy"
    try:
        with atomic_path(out) as tmp, open(tmp, "wb") as f, \
                tqdm(total=len(utts), unit="utt", disable=None, file=sys.stderr) as bar, torch.inference_mode():
            writer = NpyWriter(f)
            dump(dd, utts, sample_rate, args.max_seconds, encode, args.device, writer, num_frames, errors, bar.update)
            if not num_frames:
                raise NothingDumped  # atomic_path removes the temporary file
            writer.close()
    except NothingDumped:
        report(prog, errors)
        print(f"{prog}: error: no utterance of {args.data_dir} gave features; nothing written", file=sys.stderr)
        return 1
    write_table(args.out_dir / "utt2num_frames", num_frames)
    info.update(dims=writer.dims, utterances=len(num_frames), frames=writer.rows)
    atomic_write_text(args.out_dir / "info.json", json.dumps(info, indent=1) + "\n")
    report(prog, errors)
    if errors:
        print(f"{prog}: {len(errors)} of {len(utts)} utterance(s) failed", file=sys.stderr)
    print(f"{out}: {writer.rows} frames of dim {writer.dims} ({info['frame_rate']} Hz) from {len(num_frames)} "
          f"utterances in {time.time() - start:.1f}s", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
