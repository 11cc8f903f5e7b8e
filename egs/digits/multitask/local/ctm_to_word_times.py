"""A data dir's `ctm` -> its `word_times` table, what `MultitaskTargets` reads for timestamped
targets (`data.tables.word_times=word_times`): one line per utterance, the start and end of
each word of `text` in seconds, in order,

    ctm         <utt> 1 <start> <duration> <word>      (one line per word)
    word_times  <utt> <start> <end> <start> <end> ...  (two numbers per word of `text`)

Every utterance of `text` must have one ctm word per transcript word, the same words in the
same order (the ctm is sorted by start time); a mismatch is an error naming the utterance.
Times are written with three decimals, so that no line reads as integers.

    python local/ctm_to_word_times.py data/train   # writes data/train/word_times
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from speechlm.data.kaldi_dir import read_table, write_table


def read_ctm(path: Path) -> dict[str, list[tuple[float, float, str]]]:
    """utt -> [(start, end, word)] in time order."""
    words: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 5:
            raise ValueError(f"{path}:{n}: expected '<utt> <channel> <start> <duration> <word>', got {line!r}")
        start, duration = float(fields[2]), float(fields[3])
        words[fields[0]].append((start, start + duration, fields[4]))
    return {utt: sorted(w, key=lambda t: t[0]) for utt, w in words.items()}


def word_times(data_dir: Path) -> dict[str, str]:
    text = read_table(data_dir / "text")
    ctm = read_ctm(data_dir / "ctm")
    out, errors = {}, []
    for utt, transcript in text.items():
        words = transcript.split()
        timed = ctm.get(utt, [])
        if [w for _, _, w in timed] != words:
            errors.append(f"{data_dir}/ctm: utterance '{utt}' has words {[w for _, _, w in timed]}, text {words}")
            continue
        out[utt] = " ".join(f"{start:.3f} {end:.3f}" for start, end, _ in timed)
    if errors:
        raise ValueError("\n".join(errors[:10]) + (f"\n... {len(errors)} in all" if len(errors) > 10 else ""))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dirs", nargs="+", type=Path, help="data dirs with `text` and `ctm`")
    args = p.parse_args(argv)
    for d in args.data_dirs:
        try:
            table = word_times(d)
        except (ValueError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        write_table(d / "word_times", table)
        print(f"{d}/word_times: {len(table)} utterances")
    return 0


if __name__ == "__main__":
    sys.exit(main())
