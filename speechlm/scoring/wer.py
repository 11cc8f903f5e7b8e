"""Word and character error rates with sclite's counts: Snt, Wrd, Corr, Sub, Del, Ins,
Err, S.Err.

    scores = score_corpus(pairs, unit="word")      # pairs: (id, ref_text, hyp_text)
    total = sum_counts(scores)                     # ErrorCounts
    total.error_rate                               # percent, as sclite's "Err" column

Tokens:
- words are the whitespace-separated tokens of the text;
- characters follow ESPnet's CER (`tokenize_text --token_type char`): every character is a
  token and each gap between words is one `<space>` token, so `#Wrd` of a CER table counts
  spaces too. `char_tokens(text, space=None)` drops them instead, as `sclite -c` does.

An empty reference is a sentence with no words: its hypothesis words are insertions and
it is a sentence error if there are any (sclite counts it the same way). The alignment is
sclite's by default; `aligner="levenshtein"` uses jiwer's (see `speechlm.scoring.align`).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from speechlm.scoring.align import ALIGNERS, CORRECT, DELETION, INSERTION, SUBSTITUTION
from speechlm.scoring.trn import speaker_of

SPACE = "<space>"


@dataclass(frozen=True)
class ErrorCounts:
    """Raw counts over one or more sentences. `words` is the number of reference tokens."""

    sentences: int = 0
    words: int = 0
    correct: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    sentence_errors: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def error_rate(self) -> float:
        """Err / Wrd in percent (0.0 when there are no reference words)."""
        return 100.0 * self.errors / self.words if self.words else 0.0

    @property
    def sentence_error_rate(self) -> float:
        return 100.0 * self.sentence_errors / self.sentences if self.sentences else 0.0

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(*(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__))

    def as_row(self) -> tuple[int, int, int, int, int, int, int, int]:
        """(Snt, Wrd, Corr, Sub, Del, Ins, Err, S.Err), sclite's column order."""
        return (self.sentences, self.words, self.correct, self.substitutions, self.deletions,
                self.insertions, self.errors, self.sentence_errors)


@dataclass(frozen=True)
class UtteranceScore:
    """One aligned sentence. `ops[i]` is "C", "S", "D" or "I"; `ref`/`hyp` are the tokens."""

    id: str
    ref: tuple[str, ...]
    hyp: tuple[str, ...]
    ops: tuple[str, ...]
    counts: ErrorCounts = field(init=False)

    def __post_init__(self):
        c = {op: self.ops.count(op) for op in (CORRECT, SUBSTITUTION, DELETION, INSERTION)}
        errs = c[SUBSTITUTION] + c[DELETION] + c[INSERTION]
        object.__setattr__(self, "counts", ErrorCounts(
            1, len(self.ref), c[CORRECT], c[SUBSTITUTION], c[DELETION], c[INSERTION], int(errs > 0)))

    @property
    def speaker(self) -> str:
        return speaker_of(self.id)


def word_tokens(text: str) -> list[str]:
    return text.split()


def char_tokens(text: str, space: str | None = SPACE) -> list[str]:
    """Characters of the words; one `space` token between words (none if `space` is None)."""
    out: list[str] = []
    for i, word in enumerate(text.split()):
        if i and space is not None:
            out.append(space)
        out.extend(word)
    return out


def score_tokens(uid: str, ref: Sequence[str], hyp: Sequence[str], aligner: str = "sclite") -> UtteranceScore:
    ops = ALIGNERS[aligner](ref, hyp)
    return UtteranceScore(uid, tuple(ref), tuple(hyp), tuple(ops))


def score_corpus(pairs: Iterable[tuple[str, str, str]], unit: str = "word", aligner: str = "sclite",
                 space: str | None = SPACE) -> list[UtteranceScore]:
    """Score `(id, ref_text, hyp_text)` triples; `unit` is "word" or "char"."""
    if unit == "word":
        tok = word_tokens
    elif unit == "char":
        def tok(text: str) -> list[str]:
            return char_tokens(text, space)
    else:
        raise ValueError(f"unit must be 'word' or 'char', not {unit!r}")
    return [score_tokens(uid, tok(ref), tok(hyp), aligner) for uid, ref, hyp in pairs]


def sum_counts(scores: Iterable[UtteranceScore]) -> ErrorCounts:
    total = ErrorCounts()
    for s in scores:
        total = total + s.counts
    return total


def counts_by_speaker(scores: Iterable[UtteranceScore]) -> dict[str, ErrorCounts]:
    """Per-speaker sums (speaker read from the id as `sclite -i rm` does), in order of
    each speaker's first sentence, as sclite lists them."""
    by: dict[str, ErrorCounts] = {}
    for s in scores:
        by[s.speaker] = by.get(s.speaker, ErrorCounts()) + s.counts
    return by


def format_alignment(score: UtteranceScore) -> str:
    """sclite's `pralign` block: REF/HYP rows with `*` for gaps, errors upper-cased,
    and an Eval row marking S, D, I."""
    ref_row, hyp_row, eval_row = [], [], []
    i = j = 0
    for op in score.ops:
        r = score.ref[i] if op != INSERTION else None
        h = score.hyp[j] if op != DELETION else None
        i += op != INSERTION
        j += op != DELETION
        if op != CORRECT:
            r = r.upper() if r is not None else None
            h = h.upper() if h is not None else None
        width = max(len(r or ""), len(h or ""), 1)
        ref_row.append((r if r is not None else "*" * width).ljust(width))
        hyp_row.append((h if h is not None else "*" * width).ljust(width))
        eval_row.append(("" if op == CORRECT else op).ljust(width))
    c = score.counts
    return (f"id: ({score.id})\n"
            f"Scores: (#C #S #D #I) {c.correct} {c.substitutions} {c.deletions} {c.insertions}\n"
            f"REF:  {' '.join(ref_row)}\nHYP:  {' '.join(hyp_row)}\nEval: {' '.join(eval_row)}\n")
