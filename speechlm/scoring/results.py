"""Score reports: an sclite-style `result.txt` and rows of a recipe's `RESULTS.md`.

`result.txt` holds a one-line total, then what `sclite -o sum rsum pralign` prints: the
per-speaker table in percentages (its `Sum/Avg` row is what ESPnet's scripts grep), the
same table in raw counts (both identical to sclite's text for the same trn files, rounding
included), and every sentence's alignment. sclite marks a speaker without reference words
with `*`; here its percentages read 0.0.

`RESULTS.md` uses ESPnet's layout, one section per experiment tag and one table per
metric:

    ## conformer_ctc_att
    ### WER

    |dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|
    |---|---|---|---|---|---|---|---|---|
    |decode_test|200|1000|98.9|0.8|0.3|0.1|1.2|4.5|

Appending a row keeps every other line of the file; a row for the same tag, metric and
dataset is replaced (re-scoring a decode updates its row rather than duplicating it).
"""
from __future__ import annotations

import math
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from speechlm.atomic import atomic_write_text
from speechlm.scoring.wer import (
    ErrorCounts,
    UtteranceScore,
    counts_by_speaker,
    format_alignment,
    sum_counts,
)

MD_HEADER = "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|"
MD_RULE = "|---|---|---|---|---|---|---|---|---|"


def round1(x: float) -> float:
    """One decimal, halves rounded up as sclite's F_ROUND does (6.25 -> 6.3, where
    Python's round-half-even gives 6.2), so printed tables agree digit for digit."""
    return math.floor(x * 10 + 0.5) / 10


def _percent_row(c: ErrorCounts) -> tuple[float, ...]:
    """Corr, Sub, Del, Ins, Err as percent of reference words (0.0 when there are none),
    then S.Err as percent of sentences."""
    w = c.words
    pct = [100 * x / w if w else 0.0 for x in (c.correct, c.substitutions, c.deletions, c.insertions, c.errors)]
    return (*pct, c.sentence_error_rate)


def _cells(values, fmt: str) -> str:
    """sclite's number columns: the first 5 characters wide, the rest 7."""
    values = [round1(v) if isinstance(v, float) else v for v in values]
    return "".join(f"{v:>{5 if i == 0 else 7}{fmt}}" for i, v in enumerate(values))


def format_summary(per_speaker: Mapping[str, ErrorCounts], title: str, raw: bool = False) -> str:
    """sclite's "SYSTEM SUMMARY PERCENTAGES by SPEAKER" box: a row per speaker, the
    Sum/Avg row, then Mean, S.D. and Median over speakers. `raw=True` prints counts
    instead of percentages, as `sclite -o rsum` does (under the same title)."""
    total = ErrorCounts()
    for c in per_speaker.values():
        total = total + c
    total_label = "Sum" if raw else "Sum/Avg"
    w = max([len("SPKR") + 1, len(total_label)] + [len(s) + 1 for s in per_speaker])  # label column
    fmt = "d" if raw else ".1f"

    def numbers(c: ErrorCounts) -> tuple[tuple, tuple]:
        six = (c.correct, c.substitutions, c.deletions, c.insertions, c.errors, c.sentence_errors) if raw \
            else _percent_row(c)
        return (c.sentences, c.words), six

    def row(label_cell: str, snt_wrd, six, fmt_sw: str = "d", fmt_six: str = fmt) -> str:
        return f"|{label_cell}|{_cells(snt_wrd, fmt_sw)} |{_cells(six, fmt_six)} |"

    total_row = row(f" {total_label:<{w}}", *numbers(total))
    n = len(total_row) - 2  # inside the outer bars
    sep = "|" + "-" * (w + 1) + "+" + "-" * 13 + "+" + "-" * (n - w - 16) + "|"
    dbl = "|" + "=" * n + "|"
    header = f"| {'SPKR':<{w}}|{'# Snt':>6}{'# Wrd':>6} |{_cells(('Corr', 'Sub', 'Del', 'Ins', 'Err', 'S.Err'), '')} |"
    box = ["," + "-" * n + ".", "|" + title.center(n) + "|", "|" + "-" * n + "|", header, sep]
    for k, (spk, c) in enumerate(per_speaker.items()):
        box += [row(f" {spk:<{w}}", *numbers(c)), sep if k < len(per_speaker) - 1 else dbl]
    box += [total_row, dbl]
    if per_speaker:  # statistics over speakers (of unrounded values), labels centred
        cols = list(zip(*[sum(numbers(c), ()) for c in per_speaker.values()]))
        for label, fn in (("Mean", statistics.fmean), ("S.D.", lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0),
                          ("Median", statistics.median)):
            stats = [float(fn(col)) for col in cols]
            box.append(row(label.center(w + 1), stats[:2], stats[2:], ".1f", ".1f"))
    box.append("`" + "-" * n + "'")
    indent = " " * max(0, (80 - len(box[0])) // 2)  # sclite centres the box in 80 columns
    return " " * 21 + "SYSTEM SUMMARY PERCENTAGES by SPEAKER\n\n" + "".join(indent + b + "\n" for b in box)


def format_result_txt(scores: Sequence[UtteranceScore], title: str, notes: Sequence[str] = ()) -> str:
    """The whole `result.txt`: a one-line total (and `notes`, e.g. utterances missing from
    the hypothesis), the summary in percentages, in counts, then every alignment."""
    per_spk = counts_by_speaker(scores)
    total = sum_counts(scores)
    parts = ["".join(f"NOTE: {n}\n" for n in notes) + f"{title}: Err {total.error_rate:.2f}% [ {total.errors} / {total.words}, "
             f"{total.insertions} ins, {total.deletions} del, {total.substitutions} sub ] "
             f"S.Err {total.sentence_error_rate:.2f}% [ {total.sentence_errors} / {total.sentences} ]\n",
             format_summary(per_spk, title), format_summary(per_spk, title, raw=True),
             "\n\t\tDUMP OF SYSTEM ALIGNMENT STRUCTURE\n\n"]
    parts += [format_alignment(s) + "\n" for s in scores]
    return "\n\n".join(parts[:3]) + "".join(parts[3:])


def write_result_txt(path: str | os.PathLike, scores: Sequence[UtteranceScore], title: str,
                     notes: Sequence[str] = ()) -> None:
    atomic_write_text(path, format_result_txt(scores, title, notes))


def format_md_row(dataset: str, c: ErrorCounts) -> str:
    """One ESPnet RESULTS.md row: counts for Snt/Wrd, one-decimal percentages after."""
    pct = _percent_row(c)
    return f"|{dataset}|{c.sentences}|{c.words}|" + "|".join(f"{round1(v):.1f}" for v in pct) + "|"


def _cell0(row: str) -> str:
    return row.strip().strip("|").split("|")[0]


def append_results_md(path: str | os.PathLike, tag: str, metric: str, dataset: str, counts: ErrorCounts) -> None:
    """Add (or replace) the `dataset` row of table `### metric` under `## tag` in `path`,
    creating the file, section or table when missing. Everything else is kept."""
    if "|" in dataset or "\n" in dataset:
        raise ValueError(f"dataset name {dataset!r} cannot go in a markdown table cell")
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    row = format_md_row(dataset, counts)
    table = [f"### {metric}", "", MD_HEADER, MD_RULE, row, ""]

    try:
        start = lines.index(f"## {tag}")
    except ValueError:
        if lines and lines[-1].strip():
            lines.append("")
        lines += [f"## {tag}"] + table
        atomic_write_text(path, "\n".join(lines) + "\n")
        return
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    sub = next((i for i in range(start + 1, end) if lines[i].strip() == f"### {metric}"), None)
    if sub is None:
        while end > start + 1 and not lines[end - 1].strip():  # insert before trailing blanks
            end -= 1
        lines[end:end] = ([""] if lines[end - 1].strip() else []) + table[:-1]
    else:
        head = next((i for i in range(sub + 1, end) if lines[i].strip() == MD_HEADER), None)
        if head is None:
            lines[sub + 1:sub + 1] = ["", MD_HEADER, MD_RULE, row]
        else:
            i = head + 2  # first data row, after the |---| rule
            while i < end and lines[i].lstrip().startswith("|"):
                if _cell0(lines[i]) == dataset:
                    lines[i] = row
                    break
                i += 1
            else:
                lines.insert(i, row)
    atomic_write_text(path, "\n".join(lines) + "\n")
