"""Our counts against Debian's `sctk sclite` on the same trn files: Snt, Wrd, Corr, Sub,
Del, Ins, Err and S.Err must be identical, in total and per speaker."""
from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from speechlm.scoring.results import format_summary
from speechlm.scoring.trn import write_trn
from speechlm.scoring.wer import (
    char_tokens,
    counts_by_speaker,
    score_corpus,
    sum_counts,
)

SCTK = shutil.which("sctk")
needs_sctk = pytest.mark.skipif(SCTK is None, reason="sctk not installed: apt-get install sctk")

# Plain ASCII and multi-byte words; a small vocabulary so that hypotheses often share words
# with their references and the alignment has ties to break.
VOCAB = ["one", "two", "three", "four", "five", "six", "seven", "oh", "café", "naïve", "straße",
         "日本", "語", "Ωmega", "ok", "a", "ab", "ba"]


def sclite_counts(ref: Path, hyp: Path, *extra: str) -> dict[str, tuple[int, ...]]:
    """Per-speaker and "Sum" rows of `sclite -o rsum`: (Snt, Wrd, Corr, Sub, Del, Ins, Err, S.Err)."""
    cmd = [SCTK, "sclite", "-r", str(ref), "trn", "-h", str(hyp), "trn", "-i", "rm", "-s", "-e", "utf-8",
           *extra, "-o", "rsum", "stdout"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = {}
    for m in re.finditer(r"^\s*\| (\S+)\s*\|\s*(\d+)\s+(\d+)\s*\|((?:\s+\d+){6})\s*\|\s*$", out, re.MULTILINE):
        rows[m[1]] = tuple(int(x) for x in (m[2], m[3], *m[4].split()))
    assert "Sum" in rows, out
    return rows


def random_corpus(seed: int, n: int = 60) -> list[tuple[str, str, str]]:
    """(id, ref, hyp) with substitutions, insertions, deletions, empty hypotheses, empty
    references and unrelated hypotheses, over four speakers."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        spk = f"spk{'ABCD'[i % 4]}"
        ref = [rng.choice(VOCAB) for _ in range(rng.choice([0, 1, 2, 3, 5, 8, 13]))]
        kind = rng.random()
        if kind < 0.1:
            hyp = []
        elif kind < 0.2:
            hyp = [rng.choice(VOCAB) for _ in range(rng.randint(1, 10))]
        else:
            hyp = []
            for w in ref:
                r = rng.random()
                if r < 0.1:
                    continue  # deletion
                hyp.append(rng.choice(VOCAB) if r < 0.25 else w)
                if rng.random() < 0.1:
                    hyp.append(rng.choice(VOCAB))  # insertion
        rows.append((f"{spk}-utt{i:03d}", " ".join(ref), " ".join(hyp)))
    return rows


def ours(rows, **kw) -> dict[str, tuple[int, ...]]:
    scores = score_corpus(rows, **kw)
    out = {spk: c.as_row() for spk, c in counts_by_speaker(scores).items()}
    out["Sum"] = sum_counts(scores).as_row()
    return out


@needs_sctk
@pytest.mark.parametrize("seed", range(4))
def test_word_counts_match_sclite(tmp_path, seed):
    rows = random_corpus(seed)
    write_trn(tmp_path / "ref.trn", [(u, r) for u, r, _ in rows])
    write_trn(tmp_path / "hyp.trn", [(u, h) for u, _, h in rows])
    assert ours(rows) == sclite_counts(tmp_path / "ref.trn", tmp_path / "hyp.trn")


@needs_sctk
@pytest.mark.parametrize("seed", range(2))
def test_cer_with_space_tokens_matches_sclite_on_character_trn(tmp_path, seed):
    # ESPnet's CER: sclite scores trn files whose "words" are characters and <space>.
    rows = random_corpus(100 + seed, n=30)
    write_trn(tmp_path / "ref.trn", [(u, " ".join(char_tokens(r))) for u, r, _ in rows])
    write_trn(tmp_path / "hyp.trn", [(u, " ".join(char_tokens(h))) for u, _, h in rows])
    assert ours(rows, unit="char") == sclite_counts(tmp_path / "ref.trn", tmp_path / "hyp.trn")


@needs_sctk
def test_cer_without_spaces_matches_sclite_dash_c(tmp_path):
    # `sclite -c` splits words into characters itself (UTF-8 aware with -e utf-8), no spaces.
    rows = random_corpus(200, n=30)
    write_trn(tmp_path / "ref.trn", [(u, r) for u, r, _ in rows])
    write_trn(tmp_path / "hyp.trn", [(u, h) for u, _, h in rows])
    assert ours(rows, unit="char", space=None) == sclite_counts(tmp_path / "ref.trn", tmp_path / "hyp.trn", "-c")


@needs_sctk
def test_sclite_alignment_differs_from_levenshtein_where_sclite_says_so(tmp_path):
    # sclite's costs (sub 4, ins/del 3) prefer 3 del + 3 ins to 5 substitutions here; a
    # plain minimum-edit WER (jiwer) would report 5 errors, sclite reports 6.
    rows = [("s1-u1", "a b c d e", "d e x y z")]
    write_trn(tmp_path / "ref.trn", [(u, r) for u, r, _ in rows])
    write_trn(tmp_path / "hyp.trn", [(u, h) for u, _, h in rows])
    theirs = sclite_counts(tmp_path / "ref.trn", tmp_path / "hyp.trn")["Sum"]
    assert theirs == ours(rows)["Sum"] == (1, 5, 2, 0, 3, 3, 6, 1)
    assert ours(rows, aligner="levenshtein")["Sum"] == (1, 5, 0, 5, 0, 0, 5, 1)


@needs_sctk
def test_empty_references_count_as_sclite_counts_them(tmp_path):
    rows = [("s1-u1", "", "extra words"), ("s1-u2", "", ""), ("s2-u3", "a", "")]
    write_trn(tmp_path / "ref.trn", [(u, r) for u, r, _ in rows])
    write_trn(tmp_path / "hyp.trn", [(u, h) for u, _, h in rows])
    got = ours(rows)
    assert got == sclite_counts(tmp_path / "ref.trn", tmp_path / "hyp.trn")
    assert got["s1"] == (2, 0, 0, 0, 0, 2, 2, 1)


@needs_sctk
def test_tie_breaking_matches_sclite_on_many_short_sentences(tmp_path):
    # Four-letter vocabulary, short sentences: many equal-cost alignments, so any
    # difference in sclite's sub > del > ins preference shows up in the counts.
    rng = random.Random(7)
    rows = [(f"s{i % 7}-u{i:04d}", " ".join(rng.choice("abc") for _ in range(rng.randint(0, 6))),
             " ".join(rng.choice("abcd") for _ in range(rng.randint(0, 6)))) for i in range(3000)]
    rows += [("t0-u1", "a c c a", "b d d a c"), ("t1-u2", "c c c a b", "a b d a")]  # found by search
    write_trn(tmp_path / "ref.trn", [(u, r) for u, r, _ in rows])
    write_trn(tmp_path / "hyp.trn", [(u, h) for u, _, h in rows])
    assert ours(rows) == sclite_counts(tmp_path / "ref.trn", tmp_path / "hyp.trn")


@needs_sctk
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("raw, report", [(False, "sum"), (True, "rsum")])
def test_summary_box_is_sclites_text(tmp_path, seed, raw, report):
    # Every sentence has reference words: sclite marks a speaker with none with '*'.
    rows = [r for r in random_corpus(10 + seed, n=40) if r[1]]
    write_trn(tmp_path / "ref.trn", [(u, r) for u, r, _ in rows])
    write_trn(tmp_path / "hyp.trn", [(u, h) for u, _, h in rows])
    cmd = [SCTK, "sclite", "-r", "ref.trn", "trn", "-h", "hyp.trn", "trn", "-i", "rm", "-s", "-e", "utf-8",
           "-o", report, "stdout"]  # relative paths: a long title would widen sclite's box
    theirs = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    mine = format_summary(counts_by_speaker(score_corpus(rows)), "hyp.trn", raw=raw)

    def lines(s):
        return [line.rstrip() for line in s.splitlines() if line.strip()]

    assert lines(mine) == lines(theirs)
