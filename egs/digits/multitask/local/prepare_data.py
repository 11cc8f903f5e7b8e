"""Synthetic multilingual connected digits with word times: digit strings (1-7 digits) in
English, German, French, Spanish and Italian, spoken by espeak-ng voices of that language
with random rate, pitch and pauses between words, white noise at 25 dB SNR.

A speaker is a language's accent + an espeak variant ('fr-be+m3'). Training speakers are
random accent+variant pairs; dev uses held-in speakers; test speakers use variants that no
training speaker has, in any language (unseen voices, seen accents).

Each of data/{train,dev,test} is a Kaldi data dir (16 kHz wav) with, besides wav.scp, text
(the spoken language's words), utt2spk, spk2utt and utt2dur:
    utt2lang  en, de, fr, es or it
    text.en   the English digit words (the translation target)
    ctm       `<utt> 1 <start> <duration> <word>`: each word of `text` and when it sounds,
              seconds from the utterance start, from the synthesis itself

    python local/prepare_data.py --out data [--train-speakers 100] [--train-per-speaker 3] [--tiny]
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

from speechlm.data.kaldi_dir import write_table
from speechlm.data.multilingual_digits import (LANGUAGES, language_of, multilingual_digit_utterances,
                                               random_voices, to_english)
from speechlm.data.espeak import list_variants
from speechlm.data.synth import write_synth_data_dir

# Test speakers, held out: their variants are in no language's training pool. English is
# egs/digits/asr's test set.
TEST_VOICES = {
    "en": ("en-us-nyc+m8", "en-gb-x-gbclan+klatt4", "en-us+f4", "en-gb-x-rp+m6"),
    "de": ("de+m8", "de+klatt4", "de+f4", "de+m6"),
    "fr": ("fr+m8", "fr-be+klatt4", "fr-ch+f4", "fr+m6"),
    "es": ("es+m8", "es-419+klatt4", "es+f4", "es-419+m6"),
    "it": ("it+m8", "it+klatt4", "it+f4", "it+m6"),
}
TINY = dict(train_speakers=2, train_per_speaker=1, dev_speakers=1, test_per_voice=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data")
    p.add_argument("--languages", default=",".join(LANGUAGES), help="comma-separated, of " + ",".join(LANGUAGES))
    p.add_argument("--train-speakers", type=int, default=100,
                   help="random accent+variant speakers per language (de and it have ~100)")
    p.add_argument("--train-per-speaker", type=int, default=3)
    p.add_argument("--dev-speakers", type=int, default=20, help="held-in speakers per language, 1 utterance each")
    p.add_argument("--test-per-voice", type=int, default=10, help="utterances per test voice (4 per language)")
    p.add_argument("--max-digits", type=int, default=7)
    p.add_argument("--max-word-gap", type=int, default=10, help="pauses between words: 0..this x 10 ms")
    p.add_argument("--snr", type=float, default=25.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="a few utterances per language (smoke tests): "
                   + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in TINY.items()))
    args = p.parse_args()
    if args.tiny:
        vars(args).update(TINY)
    languages = args.languages.split(",")
    if unknown := set(languages) - set(LANGUAGES):
        p.error(f"unknown language(s) {sorted(unknown)}; choose from {','.join(LANGUAGES)}")

    held_out = {v.split("+", 1)[1] for voices in TEST_VOICES.values() for v in voices}
    train_variants = [v for v in list_variants() if v not in held_out]
    sets: dict[str, list] = {"train": [], "dev": [], "test": []}
    for lang in languages:
        # one generator per language: a language's data does not depend on which others are made
        rng = random.Random(f"{args.seed}-{lang}")

        def utterances(voices, per_voice, tag):
            return multilingual_digit_utterances(voices, per_voice, rng, tag, args.max_digits, (0, args.max_word_gap))

        train_voices = random_voices(lang, args.train_speakers, rng, train_variants)
        sets["train"] += utterances(train_voices, args.train_per_speaker, "tr")
        sets["dev"] += utterances(rng.sample(train_voices, args.dev_speakers), 1, "dv")
        sets["test"] += utterances(TEST_VOICES[lang], args.test_per_voice, "te")

    for name, utts in sets.items():
        out = write_synth_data_dir(Path(args.out) / name, utts, sample_rate=16000, noise_snr_db=args.snr,
                                   seed=args.seed, num_workers=args.num_workers, ctm=True)
        write_table(out / "utt2lang", {u.utt_id: language_of(u.voice) for u in utts})
        write_table(out / "text.en", {u.utt_id: to_english(u.text, language_of(u.voice)) for u in utts})
        counts = ", ".join(f"{lang} {sum(language_of(u.voice) == lang for u in utts)}" for lang in languages)
        print(f"{out}: {len(utts)} utterances ({counts}) from {len({u.voice for u in utts})} voices")


if __name__ == "__main__":
    main()
