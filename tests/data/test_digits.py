"""Digit-string prompts: sclite-safe speaker ids, Kaldi speaker prefixes, determinism."""
from __future__ import annotations

import random

from speechlm.data.digits import DIGITS, digit_string_utterances, speaker_id


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
