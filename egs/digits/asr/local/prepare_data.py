"""Synthetic connected-digit corpus: digit strings ("one seven three ...", 1-7 digits)
spoken by espeak-ng voices with random rate and pitch, white noise at 20-30 dB SNR.
Train and dev share voices; test uses held-out voices.

    python local/prepare_data.py --out data [--train-per-voice 60] [--seed 0]
"""
from __future__ import annotations

import argparse
import random

from speechlm.data.digits import digit_string_utterances
from speechlm.data.synth import DEFAULT_VOICES, write_synth_data_dir

TEST_VOICES = DEFAULT_VOICES[-2:]  # en-us-nyc+m8, en-gb-x-gbclan+klatt4: never heard in training
TRAIN_VOICES = DEFAULT_VOICES[:-2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data")
    p.add_argument("--train-per-voice", type=int, default=60)
    p.add_argument("--dev-per-voice", type=int, default=5)
    p.add_argument("--test-per-voice", type=int, default=50)
    p.add_argument("--snr", type=float, default=25.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=2)
    args = p.parse_args()
    rng = random.Random(args.seed)
    sets = {
        "train": digit_string_utterances(TRAIN_VOICES, args.train_per_voice, rng, "tr"),
        "dev": digit_string_utterances(TRAIN_VOICES, args.dev_per_voice, rng, "dv"),
        "test": digit_string_utterances(TEST_VOICES, args.test_per_voice, rng, "te"),
    }
    for name, utts in sets.items():
        write_synth_data_dir(f"{args.out}/{name}", utts, sample_rate=16000, noise_snr_db=args.snr,
                             seed=args.seed, num_workers=args.num_workers)
        print(f"{args.out}/{name}: {len(utts)} utterances from {len({u.voice for u in utts})} voices")


if __name__ == "__main__":
    main()
