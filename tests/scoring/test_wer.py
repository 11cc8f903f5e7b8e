from __future__ import annotations

import random

import jiwer
import pytest

from speechlm.scoring.wer import (
    ErrorCounts,
    char_tokens,
    counts_by_speaker,
    format_alignment,
    score_corpus,
    sum_counts,
)


def test_char_tokens_put_one_space_token_between_words_as_espnet():
    assert char_tokens("ab  c") == ["a", "b", "<space>", "c"]
    assert char_tokens("日本 語", space=None) == ["日", "本", "語"]
    assert char_tokens("") == []


def test_counts_of_one_corpus():
    rows = [("s1-a", "one two three", "one too three four"), ("s1-b", "five", ""), ("s2-c", "", ""),
            ("s2-d", "", "six"), ("s2-e", "seven", "seven")]
    scores = score_corpus(rows)
    total = sum_counts(scores)
    # Snt Wrd Corr Sub Del Ins Err S.Err
    assert total.as_row() == (5, 5, 3, 1, 1, 2, 4, 3)
    assert total.error_rate == pytest.approx(80.0)
    assert total.sentence_error_rate == pytest.approx(60.0)
    assert counts_by_speaker(scores) == {"s1": ErrorCounts(2, 4, 2, 1, 1, 1, 2),
                                         "s2": ErrorCounts(3, 1, 1, 0, 0, 1, 1)}
    assert ErrorCounts().error_rate == 0.0  # no reference words


def test_cer_counts_spaces():
    (s,) = score_corpus([("s-1", "ab cd", "abcd")], unit="char")
    assert s.ref == ("a", "b", "<space>", "c", "d")
    assert s.counts.as_row() == (1, 5, 4, 0, 1, 0, 1, 1)
    (s,) = score_corpus([("s-1", "ab cd", "abcd")], unit="char", space=None)
    assert s.counts.as_row() == (1, 4, 4, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError):
        score_corpus([], unit="phone")


def test_levenshtein_aligner_gives_jiwer_corpus_counts():
    rng = random.Random(3)
    vocab = "a b c d e".split()
    refs = [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 8))) for _ in range(50)]
    hyps = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 8))) for _ in range(50)]
    total = sum_counts(score_corpus([(f"s-{i}", r, h) for i, (r, h) in enumerate(zip(refs, hyps))],
                                    aligner="levenshtein"))
    out = jiwer.process_words(refs, hyps)
    assert (total.correct, total.substitutions, total.deletions, total.insertions) == \
        (out.hits, out.substitutions, out.deletions, out.insertions)
    assert total.error_rate == pytest.approx(100 * out.wer)
    # sclite's alignment: same reference length, never fewer errors
    sc = sum_counts(score_corpus([(f"s-{i}", r, h) for i, (r, h) in enumerate(zip(refs, hyps))]))
    assert sc.words == total.words and sc.errors >= total.errors


def test_alignment_listing():
    (s,) = score_corpus([("s1-u1", "a b c", "a x c d")])
    assert format_alignment(s) == ("id: (s1-u1)\nScores: (#C #S #D #I) 2 1 0 1\n"
                                   "REF:  a B c *\nHYP:  a X c D\nEval:   S   I\n")
