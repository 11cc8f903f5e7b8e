"""Connected digits in five languages for egs/digits/multitask: the digit words, the
espeak-ng voices of each language, prompts, and their English translation.

A speaker is a language's espeak-ng voice + a variant ('fr-be+m3', 'de+f2'), as in the
English corpus (`speechlm.data.digits`); the variant sets the timbre in every language.

    utts = multilingual_digit_utterances(["de+m3", "fr-ch+f2"], 2, random.Random(0), "tr")
    to_english("null eins", "de")  # 'zero one'
"""
from __future__ import annotations

import random
from dataclasses import replace
from typing import Sequence

from speechlm.data import digits
from speechlm.data.synth import SynthUtterance

LANGUAGES = ("en", "de", "fr", "es", "it")

# Digits 0..9. espeak-ng 1.52 says each as intended in its language's voices, e.g. de 'sechs'
# zˈɛks, fr 'six' sˈis, es 'cero' θˈeɾo (es) / sˈeɾo (es-419), it 'zero' dzˈɛro (tests check).
DIGIT_WORDS: dict[str, tuple[str, ...]] = {
    "en": digits.DIGITS,
    "de": ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"),
    "fr": ("zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"),
    "es": ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"),
    "it": ("zero", "uno", "due", "tre", "quattro", "cinque", "sei", "sette", "otto", "nove"),
}

# The voices (accents) of each language in the bundled espeak-ng data: list_voices(language)
# less other languages' matches (es-419 is Latin American Spanish; en-shaw writes Shavian).
ACCENTS: dict[str, tuple[str, ...]] = {
    "en": digits.ACCENTS,
    "de": ("de",),
    "fr": ("fr", "fr-be", "fr-ch"),
    "es": ("es", "es-419"),
    "it": ("it",),
}


def language_of(voice: str) -> str:
    """The language code of an espeak voice: 'fr-be+m3' -> 'fr', 'es-419' -> 'es'."""
    return voice.split("+", 1)[0].split("-", 1)[0]


def to_english(text: str, language: str) -> str:
    """The English digit words of a digit string in `language`: ('null eins', 'de') -> 'zero one'."""
    index = {w: i for i, w in enumerate(DIGIT_WORDS[language])}
    try:
        return " ".join(digits.DIGITS[index[w]] for w in text.split())
    except KeyError as e:
        raise ValueError(f"{e.args[0]!r} is not a {language} digit word ({' '.join(DIGIT_WORDS[language])})") from None


def random_voices(language: str, n: int, rng: random.Random, variants: Sequence[str]) -> list[str]:
    """`n` distinct 'accent+variant' speakers of `language`, drawn from its accents x `variants`."""
    return digits.random_voices(n, rng, variants, ACCENTS[language])


def multilingual_digit_utterances(voices: Sequence[str], per_voice: int, rng: random.Random, tag: str = "",
                                  max_digits: int = 7, word_gaps: tuple[int, int] = (0, 0)) -> list[SynthUtterance]:
    """`per_voice` random digit strings per voice in the voice's language, with random rate and
    pitch (as `digits.digit_string_utterances`) and a random word gap in `word_gaps` (10 ms
    units: pauses between the words); utterance ids `<speaker>-<tag><index>`."""
    out = []
    for voice in voices:
        utts = digits.digit_string_utterances([voice], per_voice, rng, tag, max_digits,
                                              words=DIGIT_WORDS[language_of(voice)])
        out += [replace(u, word_gap=rng.randint(*word_gaps)) for u in utts]
    return out
