"""Connected-digit prompts for the synthetic digits corpus (demo, egs/digits) and the
words FSDD's digits are transcribed with."""
from __future__ import annotations

import random
import re
from typing import Sequence

from speechlm.data.synth import SynthUtterance

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def speaker_id(voice: str) -> str:
    """A Kaldi/sclite-safe speaker id for an espeak voice: sclite's `(spk-utt)` ids split
    at the first '-', so the speaker id must not contain one (nor whitespace: 'en+Mr serious')."""
    return re.sub(r"[^0-9A-Za-z_]", "_", voice)


def digit_string_utterances(voices: Sequence[str], per_voice: int, rng: random.Random, tag: str = "",
                            max_digits: int = 7, rates: tuple[int, int] = (130, 210),
                            pitches: tuple[int, int] = (30, 70),
                            words: Sequence[str] = DIGITS) -> list[SynthUtterance]:
    """`per_voice` random digit strings (1..max_digits digits) per voice, each with a random
    speaking rate and pitch; utterance ids `<speaker>-<tag><index>`. `words`: the digit words
    0..9 (another language's, see `speechlm.data.multilingual_digits`)."""
    out = []
    for voice in voices:
        spk = speaker_id(voice)
        for i in range(per_voice):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(1, max_digits)))
            out.append(SynthUtterance(f"{spk}-{tag}{i:04d}", spk, text, voice,
                                      rate=rng.randint(*rates), pitch=rng.randint(*pitches)))
    return out


# espeak-ng's English accents ('en' is British English; en-shaw writes Shavian, left out).
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd",
           "en-029", "en-us-nyc")


def random_voices(n: int, rng: random.Random, variants: Sequence[str],
                  accents: Sequence[str] = ACCENTS) -> list[str]:
    """`n` distinct 'accent+variant' speakers drawn at random from accents x variants."""
    pool = [f"{a}+{v}" for a in accents for v in variants]
    if n > len(pool):
        raise ValueError(f"asked for {n} voices, only {len(pool)} accent+variant pairs exist")
    return rng.sample(pool, n)
