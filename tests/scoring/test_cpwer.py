"""speechlm.scoring.cpwer: concatenated minimum-permutation WER on hand-made cases, and
against meeteval's cpWER (the CHiME-6/7/8 scoring tool) on random ones."""
from __future__ import annotations

import itertools
import random

import pytest

from speechlm.scoring.cpwer import score_cp, score_cp_corpus, split_speakers
from speechlm.scoring.wer import format_alignment, score_tokens, sum_counts


def cp(refs: list[str], hyps: list[str], aligner: str = "sclite"):
    return score_cp("rec", [r.split() for r in refs], [h.split() for h in hyps], aligner)


def test_split_speakers_at_either_speaker_change_token():
    assert split_speakers("one two <sc> three") == [["one", "two"], ["three"]]
    assert split_speakers("one <|sc|> two <sc> three") == [["one"], ["two"], ["three"]]
    assert split_speakers("a <sc> <sc> b") == [["a"], [], ["b"]]
    assert split_speakers("") == [[]]
    assert split_speakers("a [SC] b", ["[SC]"]) == [["a"], ["b"]]
    assert split_speakers("a <sc> b", ["[SC]"]) == [["a", "<sc>", "b"]]


@pytest.mark.parametrize("aligner", ["sclite", "levenshtein"])
def test_swapped_speaker_order_costs_nothing(aligner):
    s = cp(["one two three", "four five"], ["four five", "one two three"], aligner)
    assert s.utterance.counts.as_row() == (1, 5, 5, 0, 0, 0, 0, 0)
    assert s.assignment == ((0, 1), (1, 0))
    assert s.utterance.ref == s.utterance.hyp == ("one", "two", "three", "four", "five")


def test_errors_are_counted_under_the_best_assignment():
    s = cp(["one two three", "four five"], ["four fife", "one too three"])
    assert s.utterance.counts.as_row() == (1, 5, 3, 2, 0, 0, 2, 1)
    # the serialized WER of the same texts, speakers in the wrong order, is far worse
    assert score_tokens("x", "one two three four five".split(), "four fife one too three".split()).counts.errors > 2


def test_a_missing_speaker_counts_all_its_words_as_deletions():
    s = cp(["one two three", "four five"], ["four five"])
    assert s.utterance.counts.as_row() == (1, 5, 2, 0, 3, 0, 3, 1)
    assert s.assignment == ((0, None), (1, 0))
    assert cp(["one two", "three"], []).utterance.counts.deletions == 3


def test_an_extra_stream_counts_insertions():
    s = cp(["one two"], ["one two", "six seven eight"])
    assert s.utterance.counts.as_row() == (1, 2, 2, 0, 0, 3, 3, 1)
    assert s.assignment == ((0, 0), (None, 1))
    # ... and extra streams come after the reference's, in hypothesis order
    s = cp(["one two"], ["x", "one two", "y z"])
    assert s.assignment == ((0, 1), (None, 0), (None, 2))
    assert s.utterance.hyp == ("one", "two", "x", "y", "z")
    assert cp([], ["a b"]).utterance.counts.as_row() == (1, 0, 0, 0, 0, 2, 2, 1)


def test_three_speakers():
    refs = ["one two three", "four five", "six seven eight nine"]
    hyps = ["six seven eight", "one two three", "for five"]
    s = cp(refs, hyps)
    assert s.assignment == ((0, 1), (1, 2), (2, 0))
    assert s.utterance.counts.as_row() == (1, 9, 7, 1, 1, 0, 2, 1)
    # the best of all 6 permutations, by brute force
    best = min(sum(score_tokens("x", r.split(), hyps[j].split()).counts.errors for r, j in zip(refs, perm))
               for perm in itertools.permutations(range(3)))
    assert s.utterance.counts.errors == best


def test_alignment_dump_shows_the_streams_in_assignment_order():
    s = cp(["one two", "three"], ["three", "one too"])
    text = format_alignment(s.utterance)
    assert "REF:  one TWO three" in text and "HYP:  one TOO three" in text


def test_corpus_sums_recordings():
    rows = [("s-1", "one two <sc> three", "three <|sc|> one two"),
            ("s-2", "four", "four <|sc|> five"),
            ("s-3", "six <sc> seven", "six")]
    scores = score_cp_corpus(rows)
    assert [s.id for s in scores] == ["s-1", "s-2", "s-3"]
    assert sum_counts(s.utterance for s in scores).as_row() == (3, 6, 5, 0, 1, 1, 2, 2)


def _random_streams(rng: random.Random, n: int) -> list[str]:
    words = "one two three four five six seven eight nine".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 8))) for _ in range(n)]


def test_parity_with_meeteval_cpwer():
    meeteval_cp = pytest.importorskip("meeteval.wer").cp_word_error_rate
    rng = random.Random(0)
    for case in range(200):
        refs = _random_streams(rng, rng.randint(1, 4))
        hyps = _random_streams(rng, rng.randint(0, 4))
        theirs = meeteval_cp({f"r{i}": t for i, t in enumerate(refs)}, {f"h{j}": t for j, t in enumerate(hyps)})
        ours = cp(refs, hyps, aligner="levenshtein").utterance.counts
        assert (ours.errors, ours.words) == (theirs.errors, theirs.length), (case, refs, hyps)
        # sclite's alignment never finds fewer errors than the edit distance
        assert cp(refs, hyps).utterance.counts.errors >= theirs.errors
