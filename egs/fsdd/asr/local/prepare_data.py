"""Connected-digit utterances from FSDD's isolated digits: one speaker's recordings
concatenated with random 50-300 ms gaps (deterministic per seed), resampled 8 -> 16 kHz.

Splits: test = the --test-speakers (held out entirely); dev = the other speakers' takes
0-4 (FSDD's own test convention); train = their takes 5-49. Derived audio keeps FSDD's
licence, CC BY-SA 4.0 (Zohar Jackson and contributors).

FSDD's speakers were recorded at very different levels (mean RMS: jackson -21 dBFS,
george -25, nicolas -27, yweweler -39, theo -42), and a model trained on four of them
follows level more than it should (theo's test WER moved from 38% to 9% with a x0.5 or x2
gain). So every recording is scaled to `--level-dbfs` RMS (-25 by default; `none` keeps
the original levels) before concatenation, a recording-level gain normalisation that uses
no transcript; and each training utterance (synthetic ones too) is then moved by a random
gain within +-`--train-level-jitter` dB (10), volume perturbation as Kaldi's
perturb_data_dir_volume.sh, so that the model does not learn one level either. Dev and
test stay at `--level-dbfs`.

Four training speakers are few to generalise to a fifth from. `--synth-voices N` adds
espeak-ng digit strings from N random synthetic speakers (accent + variant, as
egs/digits) to train, rendered at 8 kHz and upsampled like FSDD's recordings so that both
have the same bandwidth; dev and test stay real speech.

    python local/prepare_data.py --fsdd-dir downloads/fsdd --out data --test-speakers theo
"""
from __future__ import annotations

import argparse
import random
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from speechlm.data.audio import resample
from speechlm.data.combine import combine_data_dirs
from speechlm.data.digits import DIGITS, digit_string_utterances, random_voices
from speechlm.data.kaldi_dir import DataDir
from speechlm.data.espeak import list_variants
from speechlm.data.synth import write_synth_data_dir

RATE = 16000


def recordings(fsdd: Path) -> dict[str, list[tuple[int, int, Path]]]:
    """speaker -> [(digit, take, path)]"""
    by_speaker = defaultdict(list)
    for path in sorted((fsdd / "recordings").glob("*.wav")):
        m = re.fullmatch(r"(\d)_([a-z]+)_(\d+)", path.stem)
        if m is None:
            raise ValueError(f"{path}: not an FSDD file name (digit_speaker_take.wav)")
        by_speaker[m.group(2)].append((int(m.group(1)), int(m.group(3)), path))
    if not by_speaker:
        raise FileNotFoundError(f"{fsdd}/recordings: no FSDD recordings")
    return by_speaker


def set_level(audio: np.ndarray, level_dbfs: float | None) -> np.ndarray:
    """Scale to an RMS of `level_dbfs` dB re full scale (None: unchanged), clipped to [-1, 1]."""
    if level_dbfs is None:
        return audio
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    if rms == 0.0:
        return audio
    return np.clip(audio * (10 ** (level_dbfs / 20) / rms), -1.0, 1.0).astype(np.float32)


def make_split(pool: dict[str, list], per_speaker: int, rng: random.Random, out: Path, tag: str,
               max_digits: int, level_dbfs: float | None, jitter_db: float, level_rng: random.Random) -> DataDir:
    """`per_speaker` utterances per speaker of `pool`; each at level_dbfs moved by a gain
    uniform in +-jitter_db (drawn from level_rng, so that the picks do not depend on it)."""
    wav_scp, text, utt2spk = {}, {}, {}
    (out / "wav").mkdir(parents=True, exist_ok=True)
    for spk, recs in sorted(pool.items()):
        for i in range(per_speaker):
            picks = [rng.choice(recs) for _ in range(rng.randint(1, max_digits))]
            # no draw without jitter: dev and test leave level_rng as train left it
            jitter = level_rng.uniform(-jitter_db, jitter_db) if jitter_db else 0.0
            level = None if level_dbfs is None else level_dbfs + jitter
            pieces = []
            for n, (_, _, path) in enumerate(picks):
                audio, sr = sf.read(path, dtype="float32")
                if n:
                    pieces.append(np.zeros(int(sr * rng.uniform(0.05, 0.3)), dtype=np.float32))
                pieces.append(set_level(audio, level))
            wav = resample(torch.from_numpy(np.concatenate(pieces)), sr, RATE).numpy()
            utt = f"{spk}-{tag}{i:04d}"
            path = (out / "wav" / f"{utt}.wav").resolve()
            sf.write(path, wav, RATE, subtype="PCM_16")
            wav_scp[utt], utt2spk[utt] = str(path), spk
            text[utt] = " ".join(DIGITS[d] for d, _, _ in picks)
    dd = DataDir(wav_scp=wav_scp, utt2spk=utt2spk, text=text)
    dd.save(out)
    return dd


def synthetic_split(n_voices: int, per_voice: int, rng: random.Random, out: Path, seed: int,
                    level_dbfs: float | None, jitter_db: float, level_rng: random.Random) -> DataDir:
    """espeak-ng digit strings at FSDD's 8 kHz, upsampled to RATE and set to `level_dbfs`
    +- jitter_db in place."""
    utts = digit_string_utterances(random_voices(n_voices, rng, list_variants()), per_voice, rng, "sy")
    write_synth_data_dir(out, utts, sample_rate=8000, noise_snr_db=30.0, seed=seed, num_workers=2)
    dd = DataDir.load(out)
    for path in dd.wav_scp.values():
        audio, sr = sf.read(path, dtype="float32")
        level = None if level_dbfs is None else level_dbfs + level_rng.uniform(-jitter_db, jitter_db)
        audio = set_level(resample(torch.from_numpy(audio), sr, RATE).numpy(), level)
        sf.write(path, audio, RATE, subtype="PCM_16")
    return dd


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fsdd-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("data"))
    p.add_argument("--test-speakers", default="theo", help="comma/space separated; held out of train and dev")
    p.add_argument("--train-per-speaker", type=int, default=300)
    p.add_argument("--dev-per-speaker", type=int, default=10)
    p.add_argument("--test-per-speaker", type=int, default=100)
    p.add_argument("--max-digits", type=int, default=7)
    p.add_argument("--synth-voices", type=int, default=0, help="synthetic speakers added to train")
    p.add_argument("--synth-per-voice", type=int, default=2)
    p.add_argument("--level-dbfs", default="-25", help="RMS level of every recording in dBFS; 'none': as recorded")
    p.add_argument("--train-level-jitter", type=float, default=10.0,
                   help="training utterances get a random gain within +- this many dB")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    level_rng = random.Random(args.seed + 1)
    level = None if args.level_dbfs.lower() == "none" else float(args.level_dbfs)
    rng = random.Random(args.seed)
    recs = recordings(args.fsdd_dir)
    test_speakers = set(re.split(r"[,\s]+", args.test_speakers.strip()))
    unknown = test_speakers - set(recs)
    if unknown:
        raise SystemExit(f"--test-speakers: no recordings for {sorted(unknown)}; speakers: {sorted(recs)}")
    train_pool = {s: [r for r in v if r[1] >= 5] for s, v in recs.items() if s not in test_speakers}
    dev_pool = {s: [r for r in v if r[1] < 5] for s, v in recs.items() if s not in test_speakers}
    test_pool = {s: v for s, v in recs.items() if s in test_speakers}
    for name, pool, n in (("train", train_pool, args.train_per_speaker), ("dev", dev_pool, args.dev_per_speaker),
                          ("test", test_pool, args.test_per_speaker)):
        jitter = args.train_level_jitter if name == "train" else 0.0
        dd = make_split(pool, n, rng, args.out / name, name[:2], args.max_digits, level, jitter, level_rng)
        print(f"{args.out / name}: {len(dd)} utterances from {len(pool)} speakers")
    if args.synth_voices:
        synth = synthetic_split(args.synth_voices, args.synth_per_voice, rng, args.out / "train_synth", args.seed,
                                level, args.train_level_jitter, level_rng)
        real = DataDir.load(args.out / "train")
        combined, report = combine_data_dirs([real, synth])
        for line in report.summary():  # e.g. utt2dur, which only the synthetic dir has
            print(f"combining train and train_synth: {line}")
        if len(combined) != len(real) + len(synth):
            raise SystemExit(f"combining train and train_synth: {len(real)} + {len(synth)} utterances in, "
                             f"{len(combined)} out")
        combined.save(args.out / "train")
        print(f"{args.out / 'train'}: + {len(synth)} synthetic utterances from {args.synth_voices} espeak-ng voices")


if __name__ == "__main__":
    main()
