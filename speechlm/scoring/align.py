"""Align a hypothesis to its reference, token by token, into C/S/D/I operations.

Two aligners, and why there are two:

- `sclite_align` reproduces NIST sclite's word alignment (SCTK `net_dp.c`, costs from
  `word.c:wwd_WORD`): correct 0, substitution 4, insertion 3, deletion 3, and sclite's
  tie-break (substitution, then deletion, then insertion). Minimising 4S + 3(D + I) is *not*
  minimising S + D + I: for REF `a b c d e`, HYP `d e x y z` sclite aligns 3 deletions,
  2 correct and 3 insertions (Err 6), where plain Levenshtein finds 5 substitutions
  (Err 5). ESPnet's and Kaldi's published tables come from sclite, so this is the default.
- `levenshtein_align` is jiwer's (rapidfuzz) minimum-edit alignment, the WER most Python
  toolkits (jiwer, torchmetrics, HF evaluate) report. It never gives more errors than
  sclite and usually the same; ties may split S/D/I differently.

Tokens compare exactly (case-sensitive), as `sclite -s`. sclite's transcript markup
(`(word)` optionally deletable, `@` null, `{ a / b }` alternatives) is not interpreted:
every token is a plain word.
"""
from __future__ import annotations

from collections.abc import Sequence

import jiwer

CORRECT, SUBSTITUTION, DELETION, INSERTION = "C", "S", "D", "I"

# sclite's wwd_WORD costs.
_SUB, _DEL, _INS = 4, 3, 3


def sclite_align(ref: Sequence[str], hyp: Sequence[str]) -> list[str]:
    """Operations ("C", "S", "D", "I") turning `ref` into `hyp`, in order, as sclite
    aligns them. O(len(ref) * len(hyp)) pure Python, about 1 ms for 100 x 100 tokens;
    identical sequences (most sentences of a good system) take a shortcut."""
    if list(ref) == list(hyp):
        return [CORRECT] * len(ref)
    n, m = len(ref), len(hyp)
    # back[a][b]: the operation that reaches cell (a, b); a indexes ref, b indexes hyp.
    back = [[INSERTION] * (m + 1) for _ in range(n + 1)]
    prev = [_INS * b for b in range(m + 1)]
    for a in range(1, n + 1):
        cur = [_DEL * a] + [0] * m
        row = back[a]
        row[0] = DELETION
        r = ref[a - 1]
        for b in range(1, m + 1):
            same = r == hyp[b - 1]
            sub = prev[b - 1] + (0 if same else _SUB)
            dele = prev[b] + _DEL
            ins = cur[b - 1] + _INS
            # sclite: `if (sub <= del && sub <= ins) ... else if (del < ins) ... else ins`
            if sub <= dele and sub <= ins:
                cur[b], row[b] = sub, (CORRECT if same else SUBSTITUTION)
            elif dele < ins:
                cur[b], row[b] = dele, DELETION
            else:
                cur[b], row[b] = ins, INSERTION
        prev = cur
    ops = []
    a, b = n, m
    while a > 0 or b > 0:
        op = back[a][b]
        ops.append(op)
        if op == INSERTION:
            b -= 1
        elif op == DELETION:
            a -= 1
        else:
            a, b = a - 1, b - 1
    ops.reverse()
    return ops


_JIWER_OPS = {"equal": CORRECT, "substitute": SUBSTITUTION, "delete": DELETION, "insert": INSERTION}


def levenshtein_align(ref: Sequence[str], hyp: Sequence[str]) -> list[str]:
    """Operations from jiwer's minimum-edit-distance alignment (tokens must not contain
    whitespace: jiwer re-splits the joined strings)."""
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    ops = []
    for chunk in out.alignments[0]:
        op = _JIWER_OPS[chunk.type]
        span = chunk.hyp_end_idx - chunk.hyp_start_idx if op == INSERTION else chunk.ref_end_idx - chunk.ref_start_idx
        ops.extend([op] * span)
    return ops


ALIGNERS = {"sclite": sclite_align, "levenshtein": levenshtein_align}
