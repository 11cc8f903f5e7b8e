"""Multilingual synthetic digits: word times from espeak-ng against the audio, the digit words
of each language as espeak says them, and egs/digits/multitask's data dirs (utt2lang, text.en,
ctm; test voices held out)."""
from __future__ import annotations

import ctypes
import random
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechlm.data import espeak, synth
from speechlm.data.digits import DIGITS
from speechlm.data.kaldi_dir import read_table
from speechlm.data.multilingual_digits import (ACCENTS, DIGIT_WORDS, LANGUAGES, language_of,
                                               multilingual_digit_utterances, random_voices, to_english)
from speechlm.data.espeak import list_voices, speak, speak_with_word_times
from speechlm.data.validate import validate_data_dir

ROOT = Path(__file__).resolve().parents[2]
PREPARE = ROOT / "egs" / "digits" / "multitask" / "local" / "prepare_data.py"
TEXTS = {  # no geminates (it 'otto'): their ~100 ms closure would split a word in the energy
    "en": "seven zero two eight", "de": "drei null acht fünf", "fr": "quatre sept huit un",
    "es": "dos cero seis nueve", "it": "tre zero cinque due",
}
FRAME = 0.005


def sound_runs(audio: np.ndarray, sample_rate: int, min_silence: float = 0.15) -> list[tuple[float, float]]:
    """(start, end) seconds of stretches of sound (5 ms frames within 55 dB of the loudest)
    separated by at least `min_silence` of quiet: independent of espeak's events."""
    hop = int(FRAME * sample_rate)
    energy = (audio[:len(audio) // hop * hop].reshape(-1, hop).astype(np.float64) ** 2).mean(axis=1)
    loud = np.flatnonzero(energy > energy.max() * 10 ** -5.5)
    breaks = np.flatnonzero(np.diff(loud) * FRAME > min_silence)
    starts, ends = loud[np.r_[0, breaks + 1]], loud[np.r_[breaks, len(loud) - 1]] + 1
    return [(s * FRAME, e * FRAME) for s, e in zip(starts, ends)]


# ---- word times --------------------------------------------------------------------------

@pytest.mark.parametrize("lang", LANGUAGES)
def test_word_gaps_fall_between_the_word_spans(lang):
    # m1, f1 and klatt3 have no echo: all their sound is the words', pauses are silent
    for voice in (f"{ACCENTS[lang][0]}+m1", f"{ACCENTS[lang][-1]}+f1", f"{ACCENTS[lang][0]}+klatt3"):
        audio, sample_rate, words = speak_with_word_times(TEXTS[lang], voice, rate=160, word_gap=30)
        np.testing.assert_array_equal(audio, speak(TEXTS[lang], voice, rate=160, word_gap=30)[0])
        assert [w.word for w in words] == TEXTS[lang].split()
        for a, b in zip(words, words[1:]):
            assert b.start - a.end > 0.25, (voice, a, b)  # the 300 ms pause, less nothing but closures
        runs = sound_runs(audio, sample_rate)
        assert len(runs) == len(words), (voice, runs, words)
        for w, (start, end) in zip(words, runs):
            assert abs(w.start - start) < 0.02 and abs(w.end - end) < 0.02, (voice, w, start, end)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_sound_is_in_a_word_span_and_every_span_sounds(lang):
    for voice, word_gap in ((f"{ACCENTS[lang][-1]}+m3", 0), (f"{ACCENTS[lang][0]}+klatt", 5)):
        audio, sample_rate, words = speak_with_word_times(TEXTS[lang], voice, rate=200, word_gap=word_gap)
        spans = [(round(w.start * sample_rate), round(w.end * sample_rate)) for w in words]
        assert spans[0][0] >= 0 and spans[-1][1] <= len(audio)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans
        inside = np.zeros(len(audio), dtype=bool)
        for start, end in spans:
            inside[start:end] = True
            loudness = np.sqrt(np.mean(audio[start:end] ** 2)) / np.abs(audio).max()
            assert end - start > 0.05 * sample_rate and loudness > 0.02, (voice, start, end)
        assert np.abs(audio[~inside]).max() < 1e-3, voice  # silent outside: pauses, closures, the end


def test_word_times_follow_the_text_through_punctuation_and_numbers():
    text = "  one. two, 42   three"  # after a full stop espeak reports the position of the space
    audio, sample_rate, words = speak_with_word_times(text, "en-us")
    assert [w.word for w in words] == ["one.", "two,", "42", "three"]
    assert all(0 <= a.start < a.end <= b.start < b.end <= len(audio) / sample_rate for a, b in zip(words, words[1:]))
    assert words[2].end - words[2].start > 0.5  # 'forty two' is one word of the text
    with pytest.raises(ValueError, match="no word for ','"):
        speak_with_word_times("one , two")


def test_data_dir_ctm_holds_the_words_with_their_times(tmp_path):
    utts = [synth.SynthUtterance("a-1", "a", "null  eins", "de", word_gap=20),
            synth.SynthUtterance("a-0", "a", "six", "fr+f2")]
    out = synth.write_synth_data_dir(tmp_path / "d", utts, ctm=True)
    lines = (out / "ctm").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["a-0", "a-1", "a-1"]
    _, _, words = speak_with_word_times("null  eins", "de", word_gap=20)
    for line, w in zip(lines[1:], words):
        utt, channel, start, dur, word = line.split()
        assert (channel, word) == ("1", w.word) and len(start.split(".")[1]) == 3
        assert abs(float(start) - w.start) < 6e-4 and abs(float(start) + float(dur) - w.end) < 6e-4
    assert not (synth.write_synth_data_dir(tmp_path / "e", utts[1:]) / "ctm").exists()


# ---- languages ---------------------------------------------------------------------------

def ipa(words, voice: str) -> list[str]:
    """espeak-ng's IPA for each of `words` as `voice` would say it."""
    with espeak._fresh_espeak() as (lib, _):
        espeak._set_voice(lib, voice)
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        # text UTF-8 (1), phonemes in IPA (2)
        return [lib.espeak_TextToPhonemes(ctypes.byref(ctypes.c_char_p(w.encode())), 1, 2).decode() for w in words]


PRONUNCIATIONS = {  # espeak-ng 1.52's IPA (it writes French ɥ as y); es-419 has s for θ
    "de": "nˈʊl ˈaɪns tsvˈaɪ dɾˈaɪ fˈiːɾ fˈʏnf zˈɛks zˈiːbən ˈaxt nˈɔøn",
    "fr": "zeʁˈo ˈœ̃ dˈø tʁwˈa kˈatʁ sˈɛ̃k sˈis sˈɛt yˈit nˈœf",
    "es": "θˈeɾo ˈuno dˈos tɾˈes kwˈatɾo θˈinko sˈeɪs sjˈete ˈotʃo nwˈeβe",
    "it": "dzˈɛro ˈuno dˈue trˈe kwˈatːro tʃˈinkwe sˈɛi sˈɛtːe ˈɔtːo nˈɔve",
    "en": "zˈiəɹoʊ wˌʌn tˈuː θɹˈiː fˈɔːɹ fˈaɪv sˈɪks sˈɛvən ˈeɪt nˈaɪn",
}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_digit_words_are_said_as_intended_in_every_accent(lang):
    for accent in ACCENTS[lang]:
        said = ipa(DIGIT_WORDS[lang], accent)
        expected = PRONUNCIATIONS[lang].split()
        if accent == "es-419":
            expected = [p.replace("θ", "s") for p in expected]
        if lang != "en":  # English accents differ (en: fˈɔː, wˌɒn); each word is still one word
            assert said == expected, accent
        text = " ".join(DIGIT_WORDS[lang])
        assert [w.word for w in speak_with_word_times(text, f"{accent}+m2", rate=250)[2]] == text.split()
    assert set(ACCENTS[lang]) == set(list_voices(lang)) - {"en-shaw"}
    assert ipa(DIGIT_WORDS["en"], "en-us") == PRONUNCIATIONS["en"].split()


def test_translation_language_and_prompts():
    assert to_english("null eins neun", "de") == "zero one nine"
    assert to_english("zéro un", "fr") == "zero one" and to_english("zero uno", "it") == "zero one"
    assert all(to_english(" ".join(DIGIT_WORDS[lang]), lang) == " ".join(DIGITS) for lang in LANGUAGES)
    with pytest.raises(ValueError, match="'eins' is not a fr digit word"):
        to_english("un eins", "fr")
    voices = ("en-gb-x-rp+m4", "es-419+f2", "fr-ch", "it+Mr serious")
    assert [language_of(v) for v in voices] == ["en", "es", "fr", "it"]
    voices = random_voices("fr", 12, random.Random(0), ["m1", "f3", "klatt", "Mr serious"])
    assert len(set(voices)) == 12 and {v.split("+")[0] for v in voices} == {"fr", "fr-be", "fr-ch"}
    utts = multilingual_digit_utterances(["de+m3", "es-419+Mr serious"], 30, random.Random(1), "tr", word_gaps=(0, 8))
    assert utts == multilingual_digit_utterances(["de+m3", "es-419+Mr serious"], 30, random.Random(1), "tr",
                                                 word_gaps=(0, 8))
    for u in utts:
        assert u.utt_id.startswith(u.speaker + "-tr") and u.speaker in ("de_m3", "es_419_Mr_serious")
        assert set(u.text.split()) <= set(DIGIT_WORDS[language_of(u.voice)]) and 1 <= len(u.text.split()) <= 7
    assert {u.word_gap for u in utts} == set(range(9))


# ---- egs/digits/multitask/local/prepare_data.py ------------------------------------------

@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("multitask") / "data"
    argv = sys.argv
    sys.argv = [str(PREPARE), "--tiny", "--out", str(out), "--num-workers", "1"]
    try:
        script = runpy.run_path(str(PREPARE), run_name="__main__")
    finally:
        sys.argv = argv
    return out, script["TEST_VOICES"]


def test_prepared_dirs_are_valid_and_consistent(tiny_corpus):
    data, _ = tiny_corpus
    for name in ("train", "dev", "test"):
        d = data / name
        assert validate_data_dir(d, audio=True, sample_rate=16000) == []
        text, text_en, utt2lang = read_table(d / "text"), read_table(d / "text.en"), read_table(d / "utt2lang")
        utt2dur, wav = read_table(d / "utt2dur"), read_table(d / "wav.scp")
        assert set(utt2lang.values()) == set(LANGUAGES) and text.keys() == text_en.keys() == utt2lang.keys()
        ctm: dict[str, list[tuple[float, float, str]]] = {}
        for line in (d / "ctm").read_text(encoding="utf-8").splitlines():
            utt, channel, start, dur, word = line.split(" ")
            assert channel == "1" and float(dur) > 0
            ctm.setdefault(utt, []).append((float(start), float(start) + float(dur), word))
        assert list(ctm) == list(text)  # every utterance, in the same (C) order
        for utt, words in ctm.items():
            lang = utt2lang[utt]
            assert " ".join(w for _, _, w in words) == text[utt] and to_english(text[utt], lang) == text_en[utt]
            assert set(text[utt].split()) <= set(DIGIT_WORDS[lang])
            assert 0 <= words[0][0] and words[-1][1] <= float(utt2dur[utt])
            assert all(a[1] <= b[0] + 1e-9 for a, b in zip(words, words[1:]))  # may touch
            audio, sample_rate = sf.read(wav[utt], dtype="float32")
            inside = np.zeros(len(audio), dtype=bool)
            for start, end, _ in words:
                inside[round(start * sample_rate):round(end * sample_rate)] = True
            # 25 dB SNR: speech is loud inside the spans, only noise (and echoes) outside
            assert np.mean(audio[inside] ** 2) > 10 * np.mean(audio[~inside] ** 2), utt


def test_test_voices_are_held_out_of_training(tiny_corpus):
    data, test_voices = tiny_corpus
    speakers = {name: set(read_table(data / name / "utt2spk").values()) for name in ("train", "dev", "test")}
    assert speakers["dev"] <= speakers["train"]
    held_out = {v.split("+")[1] for voices in test_voices.values() for v in voices}
    assert held_out == {"m8", "klatt4", "f4", "m6"}
    assert {s.rsplit("_", 1)[1] for s in speakers["test"]} == held_out
    assert not any(s.endswith(tuple(f"_{v}" for v in held_out)) for s in speakers["train"])
    assert all(language_of(v) == lang for lang, voices in test_voices.items() for v in voices)
