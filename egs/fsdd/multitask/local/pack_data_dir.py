"""Pack a data dir's utterances into longer ones, as Whisper's training windows are 30 s of
running speech: each packed utterance is 1..--max-utts random utterances of SRC (each used
once per pass, in a new order every pass) joined by 0.1-0.5 s of silence, at most
--max-seconds long, its text theirs in order.

A Whisper-architecture model pays for its full 30-s window whatever the utterance's length
(1500 encoder positions), so a window holding several utterances teaches it several times
as many words for the same computation; windows of one utterance (k = 1 is as likely as any
other k) keep it used to short input padded with silence, as the test utterances are.

    python local/pack_data_dir.py data/synth/train data/synth/train_packed [--passes 3] [--max-utts 8]
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import soundfile as sf

from speechlm.data.dataset import load_utterance
from speechlm.data.kaldi_dir import DataDir

RATE = 16000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--passes", type=int, default=3, help="every utterance of src is used once per pass")
    p.add_argument("--max-utts", type=int, default=8, help="utterances per packed one: uniform in 1 .. this")
    p.add_argument("--max-seconds", type=float, default=28.0,
                   help="a packed utterance's longest duration (one utterance alone may be longer)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = random.Random(args.seed)
    src = DataDir.load(args.src)
    if src.text is None:
        raise SystemExit(f"{args.src}: no text")
    audio = {u: load_utterance(src, u, RATE)[0].numpy() for u in src.utterances}
    (args.dst / "wav").mkdir(parents=True, exist_ok=True)
    wav_scp, text, utt2spk, utt2dur = {}, {}, {}, {}
    for n in range(args.passes):
        order = list(src.utterances)
        rng.shuffle(order)
        i = count = 0
        while i < len(order):
            want, pieces, texts, seconds = rng.randint(1, args.max_utts), [], [], 0.0
            while i < len(order) and len(texts) < want:
                gap = np.zeros(int(RATE * rng.uniform(0.1, 0.5)), dtype=np.float32) if pieces else None
                extra = len(audio[order[i]]) / RATE + (0.0 if gap is None else len(gap) / RATE)
                if pieces and seconds + extra > args.max_seconds:
                    break
                if gap is not None:
                    pieces.append(gap)
                pieces.append(audio[order[i]])
                texts.append(src.text[order[i]])
                seconds += extra
                i += 1
            utt, count = f"pack{n}x{count:05d}", count + 1
            path = (args.dst / "wav" / f"{utt}.wav").resolve()
            samples = np.concatenate(pieces)
            sf.write(path, samples, RATE, subtype="PCM_16")
            wav_scp[utt], text[utt], utt2spk[utt] = str(path), " ".join(texts), utt
            utt2dur[utt] = round(len(samples) / RATE, 4)
    DataDir(wav_scp=wav_scp, utt2spk=utt2spk, text=text, utt2dur=utt2dur).save(args.dst)
    counts = [len(text[u].split()) for u in text]
    print(f"{args.dst}: {len(text)} packed utterances from {len(src.utterances)} x {args.passes} "
          f"({sum(utt2dur.values()) / len(text):.1f} s, {sum(counts) / len(counts):.1f} words on average)")


if __name__ == "__main__":
    main()
