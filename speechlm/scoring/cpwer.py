"""Concatenated minimum-permutation WER (cpWER) of multi-talker transcripts (CHiME-6,
Watanabe et al. 2020): per recording, each speaker's words are one stream; hypothesis
streams are assigned to reference streams by the permutation with the fewest word errors
(a side with fewer streams is padded with empty ones: a missed speaker's words are all
deletions, an extra hypothesis stream's words all insertions); cpWER = the errors summed
over recordings / the reference words.

    refs = split_speakers("one two <sc> three")          # [["one", "two"], ["three"]]
    s = score_cp("rec1", refs, split_speakers("three <|sc|> one too"))
    s.utterance.counts                                   # ErrorCounts: 1 sub, 3 words
    s.assignment                                         # ((0, 1), (1, 0)): (ref, hyp) streams

Each (reference, hypothesis) pair is aligned by one of `speechlm.scoring.align`'s aligners
and costs that alignment's S + D + I; the total is separable over pairs, so the best
permutation is a linear assignment (scipy's Hungarian solver, scipy comes with librosa),
exact for any number of speakers. With `aligner="levenshtein"` the errors equal
meeteval's `cp_word_error_rate` (tests compare them); with sclite's alignment (the
default, as `speechlm.bin.score`) a pair may count more errors than its edit distance.

Serialized output training (SOT, Kanda et al. 2020) writes one recording's speakers in one
line separated by a speaker-change token (`<sc>`, or `<|sc|>` as Whisper-style tokenizers
render it); `split_speakers` cuts such a line into streams. Every stream counts as its own
speaker: a reference in which one speaker talks twice should be scored from per-speaker
references (streams already joined per speaker) instead.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from speechlm.scoring.align import ALIGNERS, CORRECT, DELETION, INSERTION
from speechlm.scoring.wer import UtteranceScore

SPEAKER_CHANGE_TOKENS = ("<|sc|>", "<sc>")


def split_speakers(text: str, speaker_change: Iterable[str] = SPEAKER_CHANGE_TOKENS) -> list[list[str]]:
    """Words of `text` in streams cut at every speaker-change token, in order: "a <sc> b c"
    -> [["a"], ["b", "c"]]; "" -> [[]]. Empty streams ("a <sc> <sc> b") are kept; they
    change no score."""
    marks = set(speaker_change)
    streams: list[list[str]] = [[]]
    for word in text.split():
        if word in marks:
            streams.append([])
        else:
            streams[-1].append(word)
    return streams


@dataclass(frozen=True)
class CpScore:
    """One recording. `assignment` pairs (reference stream, hypothesis stream) indices,
    None for the empty stream a missing one is scored against; reference order first, then
    hypothesis streams no reference got. `utterance` is the whole recording as one aligned
    sentence: the streams' tokens and operations concatenated in `assignment` order, so its
    `counts` are the recording's cpWER counts (one sentence)."""

    utterance: UtteranceScore
    assignment: tuple[tuple[int | None, int | None], ...]

    @property
    def id(self) -> str:
        return self.utterance.id


def score_cp(uid: str, refs: Sequence[Sequence[str]], hyps: Sequence[Sequence[str]],
             aligner: str = "sclite") -> CpScore:
    """cpWER of one recording: `refs` and `hyps` are lists of token streams."""
    align = ALIGNERS[aligner]
    n = max(len(refs), len(hyps), 1)
    ref = [list(refs[i]) if i < len(refs) else [] for i in range(n)]
    hyp = [list(hyps[j]) if j < len(hyps) else [] for j in range(n)]
    ops = [[align(r, h) if r and h else [DELETION] * len(r) + [INSERTION] * len(h) for h in hyp] for r in ref]
    cost = np.array([[sum(op != CORRECT for op in pair) for pair in row] for row in ops])
    rows, cols = linear_sum_assignment(cost)
    # Reference streams in their order, then the extra hypothesis streams in theirs.
    pairs = sorted(zip(rows.tolist(), cols.tolist()),
                   key=lambda p: (p[0] >= len(refs), p[0] if p[0] < len(refs) else p[1]))
    assignment = tuple((i if i < len(refs) else None, j if j < len(hyps) else None) for i, j in pairs
                       if i < len(refs) or j < len(hyps))
    utterance = UtteranceScore(
        uid,
        tuple(w for i, _ in pairs for w in ref[i]),
        tuple(w for _, j in pairs for w in hyp[j]),
        tuple(op for i, j in pairs for op in ops[i][j]),
    )
    return CpScore(utterance, assignment)


def score_cp_corpus(pairs: Iterable[tuple[str, str, str]], speaker_change: Iterable[str] = SPEAKER_CHANGE_TOKENS,
                    aligner: str = "sclite") -> list[CpScore]:
    """Score `(id, ref_text, hyp_text)` SOT triples, speakers cut at `speaker_change` tokens."""
    marks = tuple(speaker_change)
    return [score_cp(uid, split_speakers(ref, marks), split_speakers(hyp, marks), aligner) for uid, ref, hyp in pairs]
