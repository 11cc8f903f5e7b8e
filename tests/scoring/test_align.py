"""The two aligners against the libraries: sclite's alignment is a minimum of sclite's
weighted cost (rapidfuzz computes that minimum independently), and the Levenshtein one
gives jiwer's counts."""
from __future__ import annotations

import random

import jiwer
import pytest
from rapidfuzz.distance import Levenshtein

from speechlm.scoring.align import levenshtein_align, sclite_align


def replay(ref, hyp, ops):
    """Check `ops` really turns ref into hyp; return (C, S, D, I)."""
    i = j = 0
    for op in ops:
        if op == "C":
            assert ref[i] == hyp[j]
        elif op == "S":
            assert ref[i] != hyp[j]
        i += op in "CSD"
        j += op in "CSI"
    assert (i, j) == (len(ref), len(hyp))
    return tuple(ops.count(x) for x in "CSDI")


def pairs(seed, n=400):
    rng = random.Random(seed)
    for _ in range(n):
        yield ([rng.choice("abcde") for _ in range(rng.randint(0, 9))],
               [rng.choice("abcdef") for _ in range(rng.randint(0, 9))])


@pytest.mark.parametrize("seed", range(3))
def test_sclite_alignment_has_minimal_sclite_cost(seed):
    for ref, hyp in pairs(seed):
        _, s, d, i = replay(ref, hyp, sclite_align(ref, hyp))
        # rapidfuzz weights are (insertion, deletion, substitution); sclite's are 3, 3, 4.
        assert 4 * s + 3 * (d + i) == Levenshtein.distance(ref, hyp, weights=(3, 3, 4)), (ref, hyp)


@pytest.mark.parametrize("seed", range(3))
def test_levenshtein_alignment_matches_jiwer(seed):
    for ref, hyp in pairs(seed):
        c, s, d, i = replay(ref, hyp, levenshtein_align(ref, hyp))
        out = jiwer.process_words(" ".join(ref), " ".join(hyp))
        assert (c, s, d, i) == (out.hits, out.substitutions, out.deletions, out.insertions)
        assert s + d + i == Levenshtein.distance(ref, hyp)
        # sclite never finds fewer errors than the minimum edit distance
        _, s2, d2, i2 = replay(ref, hyp, sclite_align(ref, hyp))
        assert s2 + d2 + i2 >= s + d + i


def test_known_alignments():
    assert sclite_align([], []) == []
    assert sclite_align([], ["a"]) == ["I"]
    assert sclite_align(["a", "b"], []) == ["D", "D"]
    assert sclite_align("a b c".split(), "a x c".split()) == ["C", "S", "C"]
    # what Debian sctk sclite 2.10 `-o pralign` prints for these
    assert sclite_align("a b c d e".split(), "d e x y z".split()) == list("DDDCCIII")
    assert sclite_align("a b".split(), "b c".split()) == list("DCI")
    assert sclite_align("a b c".split(), "c x y".split()) == list("SSS")
    assert levenshtein_align("a b c d e".split(), "d e x y z".split()) == list("SSSSS")
