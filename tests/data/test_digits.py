"""Digit-string prompts: sclite-safe speaker ids, Kaldi speaker prefixes, determinism."""
from __future__ import annotations

import random

import pytest

from speechlm.data.digits import ACCENTS, DIGITS, digit_string_utterances, random_voices, speaker_id
from speechlm.data.espeak import list_variants


def test_prompts_are_valid_and_seeded():
    voices = ["en-us+m1", "en-gb-scotland+f5"]
    a = digit_string_utterances(voices, 20, random.Random(3), "tr")
    assert a == digit_string_utterances(voices, 20, random.Random(3), "tr")
    assert a != digit_string_utterances(voices, 20, random.Random(4), "tr")
    assert speaker_id("en-gb-scotland+f5") == "en_gb_scotland_f5"
    for u in a:
        assert "-" not in u.speaker and u.utt_id.startswith(u.speaker + "-tr")
        words = u.text.split()
        assert 1 <= len(words) <= 7 and set(words) <= set(DIGITS)
        assert 130 <= u.rate <= 210 and 30 <= u.pitch <= 70


def test_speaker_ids_of_every_variant_are_kaldi_safe():
    # named variants have spaces ('Mr serious'): a speaker id must be one token
    assert speaker_id("en+Mr serious") == "en_Mr_serious"
    for v in list_variants():
        spk = speaker_id(f"en-us-nyc+{v}")
        assert spk and not set(spk) & set(" \t-+/"), v


def test_random_voices_are_distinct_pairs_of_the_given_variants():
    variants = [v for v in list_variants() if v not in ("m8", "klatt4")]
    voices = random_voices(300, random.Random(0), variants)
    assert len(set(voices)) == 300
    assert {v.split("+", 1)[0] for v in voices} == set(ACCENTS)
    assert not {v.split("+", 1)[1] for v in voices} & {"m8", "klatt4"}
    assert voices == random_voices(300, random.Random(0), variants)
    with pytest.raises(ValueError, match="only 16 accent"):
        random_voices(17, random.Random(0), ["m1", "f1"])
