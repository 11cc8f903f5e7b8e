"""Data for the LM-fusion experiment: the acoustic model learns from random digit strings,
the test set and the LM's text follow a grammar the acoustic model never saw.

Grammar ("arithmetic runs"): a start digit, a step of 1, 2 or 3 and 3-7 digits, each the
previous one plus the step, modulo 10 ("two five eight one"). 150 sentences in all; once
the first two digits are heard the LM knows every other one, so a substituted, dropped or
inserted digit later in the string is what fusion can repair.

    data/train, data/dev   random 1-7 digit strings (as egs/digits/asr), training voices
    data/test              grammar strings, 4 held-out voices (egs/digits/asr's TEST_VOICES)
    data/lm_train/text, data/lm_valid/text
                           grammar strings, text only (Kaldi text: utt-id + words)

    python local/prepare_data.py --out data [--train-voices 300] [--lm-lines 20000]
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

from speechlm.data.digits import DIGITS, digit_string_utterances, random_voices, speaker_id
from speechlm.data.espeak import list_variants
from speechlm.data.synth import SynthUtterance, write_synth_data_dir

TEST_VOICES = ("en-us-nyc+m8", "en-gb-x-gbclan+klatt4", "en-us+f4", "en-gb-x-rp+m6")
STEPS = (1, 2, 3)
LENGTHS = (3, 7)


def grammar_sentence(rng: random.Random) -> str:
    start, step, n = rng.randrange(10), rng.choice(STEPS), rng.randint(*LENGTHS)
    return " ".join(DIGITS[(start + i * step) % 10] for i in range(n))


def grammar_utterances(voices, per_voice: int, rng: random.Random, tag: str) -> list[SynthUtterance]:
    out = []
    for voice in voices:
        spk = speaker_id(voice)
        for i in range(per_voice):
            out.append(SynthUtterance(f"{spk}-{tag}{i:04d}", spk, grammar_sentence(rng), voice,
                                      rate=rng.randint(130, 210), pitch=rng.randint(30, 70)))
    return out


def write_text(path: Path, lines: list[str], tag: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{tag}{i:06d} {line}\n" for i, line in enumerate(lines)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data")
    p.add_argument("--train-voices", type=int, default=300)
    p.add_argument("--train-per-voice", type=int, default=2)
    p.add_argument("--dev-voices", type=int, default=30)
    p.add_argument("--test-per-voice", type=int, default=30)
    p.add_argument("--lm-lines", type=int, default=20000, help="grammar sentences for the LM (text only)")
    p.add_argument("--snr", type=float, default=25.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=1)
    args = p.parse_args()
    rng = random.Random(args.seed)
    held_out = {v.split("+")[1] for v in TEST_VOICES}
    train_voices = random_voices(args.train_voices, rng, [v for v in list_variants() if v not in held_out])
    sets = {
        "train": digit_string_utterances(train_voices, args.train_per_voice, rng, "tr"),
        "dev": digit_string_utterances(rng.sample(train_voices, min(args.dev_voices, len(train_voices))), 1, rng,
                                       "dv"),
        "test": grammar_utterances(TEST_VOICES, args.test_per_voice, rng, "te"),
    }
    for name, utts in sets.items():
        write_synth_data_dir(f"{args.out}/{name}", utts, sample_rate=16000, noise_snr_db=args.snr,
                             seed=args.seed, num_workers=args.num_workers)
        print(f"{args.out}/{name}: {len(utts)} utterances from {len({u.voice for u in utts})} voices")
    out = Path(args.out)
    write_text(out / "lm_train" / "text", [grammar_sentence(rng) for _ in range(args.lm_lines)], "lmtr")
    write_text(out / "lm_valid" / "text", [grammar_sentence(rng) for _ in range(max(args.lm_lines // 40, 20))], "lmdv")
    print(f"{out}/lm_train/text: {args.lm_lines} grammar sentences (text only)")


if __name__ == "__main__":
    main()
