"""Synthetic two-talker connected digits for serialized output training (SOT): espeak-ng
digit strings of two speakers, the second starting 0.5-1.5 s into the first at a level
within 3 dB of it, plus a share (20%) of one-speaker utterances; white noise at 25 dB SNR.
`text` holds the speakers' transcripts in order of start time joined by " <sc> "; `stm`
the per-speaker references (speaker ids and times) for cpWER. See speechlm.data.sot.
With --sources, each set's sources are also written alone into <set>_single (one
utterance per source, noise at the same SNR): single-talker training data for a baseline,
and single-speaker test input.

Speakers are drawn as in egs/digits/asr: training speakers are random espeak-ng
accent+variant pairs, dev mixes held-in (training) speakers, test mixes the same 4 voices
egs/digits/asr holds out, whose variants no training speaker has.

    python local/prepare_data.py --out data [--train-mixtures 1500] [--seed 0] [--sources]
    python local/prepare_data.py --out data --tiny    # a few mixtures per set, for smoke tests
"""
from __future__ import annotations

import argparse
import random

import torch

from speechlm.data.digits import random_voices
from speechlm.data.sot import plan_mixtures, write_sot_data_dir
from speechlm.data.espeak import list_variants
from speechlm.data.synth import write_synth_data_dir

# egs/digits/asr/local/prepare_data.py's held-out test voices.
TEST_VOICES = ("en-us-nyc+m8", "en-gb-x-gbclan+klatt4", "en-us+f4", "en-gb-x-rp+m6")
TINY = dict(train_mixtures=10, dev_mixtures=5, test_mixtures=5, train_voices=6, dev_voices=3)


def snr(value: str) -> float | None:
    return None if value.lower() == "none" else float(value)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data")
    p.add_argument("--train-mixtures", type=int, default=1500)
    p.add_argument("--dev-mixtures", type=int, default=100)
    p.add_argument("--test-mixtures", type=int, default=200)
    p.add_argument("--train-voices", type=int, default=300, help="random accent+variant speakers")
    p.add_argument("--dev-voices", type=int, default=60, help="held-in speakers that dev mixes")
    p.add_argument("--single-share", type=float, default=0.2, help="share of one-speaker utterances")
    p.add_argument("--offset-min", type=float, default=0.5, help="second speaker's earliest start (s)")
    p.add_argument("--offset-max", type=float, default=1.5, help="... and latest (s), while the first still speaks")
    p.add_argument("--max-level-diff", type=float, default=3.0, help="dB between the speakers, at most")
    p.add_argument("--snr", type=snr, default=25.0, help="white noise SNR in dB, or 'none'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--sources", action="store_true",
                   help="also write every set's sources alone into <set>_single (single-speaker data dirs)")
    p.add_argument("--tiny", action="store_true", help=f"smoke-test sizes, overriding the others: {TINY}")
    args = p.parse_args()
    torch.set_num_threads(1)  # resampling second-long clips: threads only contend (workers are processes)
    if args.tiny:
        vars(args).update(TINY)
    rng = random.Random(args.seed)
    held_out = {v.split("+")[1] for v in TEST_VOICES}
    train_voices = random_voices(args.train_voices, rng, [v for v in list_variants() if v not in held_out])
    plan = dict(rng=rng, single_share=args.single_share, max_level_diff_db=args.max_level_diff)
    sets = {
        "train": plan_mixtures(train_voices, args.train_mixtures, tag="tr", **plan),
        "dev": plan_mixtures(rng.sample(train_voices, args.dev_voices), args.dev_mixtures, tag="dv", **plan),
        "test": plan_mixtures(TEST_VOICES, args.test_mixtures, tag="te", **plan),
    }
    for name, mixtures in sets.items():
        write_sot_data_dir(f"{args.out}/{name}", mixtures, sample_rate=16000,
                           offset_range=(args.offset_min, args.offset_max), noise_snr_db=args.snr,
                           seed=args.seed, num_workers=args.num_workers)
        two = sum(len(m.sources) == 2 for m in mixtures)
        print(f"{args.out}/{name}: {len(mixtures)} utterances ({two} two-speaker mixtures, "
              f"{len(mixtures) - two} one-speaker) from {len({s.voice for m in mixtures for s in m.sources})} voices")
        if args.sources:
            sources = [s for m in mixtures for s in m.sources]
            write_synth_data_dir(f"{args.out}/{name}_single", sources, sample_rate=16000, noise_snr_db=args.snr,
                                 seed=args.seed, num_workers=args.num_workers)
            print(f"{args.out}/{name}_single: {len(sources)} single-speaker utterances (the sources)")


if __name__ == "__main__":
    main()
