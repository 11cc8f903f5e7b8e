"""Synthetic connected-digit corpus: digit strings ("one seven three ...", 1-7 digits)
spoken by espeak-ng voices with random rate and pitch, white noise at 25 dB SNR.

A speaker is an espeak-ng accent + variant ('en-gb-scotland+f2'). Training speakers are
random pairs of the 8 English accents and ~100 variants; dev uses held-in speakers; test
speakers use variants that no training speaker has (unseen voices, seen accents).

    python local/prepare_data.py --out data [--train-voices 300] [--seed 0]
"""
from __future__ import annotations

import argparse
import random

from speechlm.data.digits import digit_string_utterances, random_voices
from speechlm.data.espeak import list_variants
from speechlm.data.synth import write_synth_data_dir

TEST_VOICES = ("en-us-nyc+m8", "en-gb-x-gbclan+klatt4", "en-us+f4", "en-gb-x-rp+m6")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data")
    p.add_argument("--train-voices", type=int, default=300, help="random accent+variant speakers")
    p.add_argument("--train-per-voice", type=int, default=2)
    p.add_argument("--dev-voices", type=int, default=60, help="held-in speakers, 1 utterance each")
    p.add_argument("--test-per-voice", type=int, default=30)
    p.add_argument("--snr", type=float, default=25.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=2)
    args = p.parse_args()
    rng = random.Random(args.seed)
    held_out = {v.split("+")[1] for v in TEST_VOICES}
    train_voices = random_voices(args.train_voices, rng, [v for v in list_variants() if v not in held_out])
    sets = {
        "train": digit_string_utterances(train_voices, args.train_per_voice, rng, "tr"),
        "dev": digit_string_utterances(rng.sample(train_voices, args.dev_voices), 1, rng, "dv"),
        "test": digit_string_utterances(TEST_VOICES, args.test_per_voice, rng, "te"),
    }
    for name, utts in sets.items():
        write_synth_data_dir(f"{args.out}/{name}", utts, sample_rate=16000, noise_snr_db=args.snr,
                             seed=args.seed, num_workers=args.num_workers)
        print(f"{args.out}/{name}: {len(utts)} utterances from {len({u.voice for u in utts})} voices")


if __name__ == "__main__":
    main()
