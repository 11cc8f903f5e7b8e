"""LibriSpeech (Panayotov et al. 2015, CC BY 4.0) -> Kaldi data dirs.

The corpus layout (openslr.org/resources/12):

    LibriSpeech/<subset>/<reader>/<chapter>/<reader>-<chapter>-<utt>.flac
    LibriSpeech/<subset>/<reader>/<chapter>/<reader>-<chapter>.trans.txt   ("<utt-id> TEXT" lines)

Writes `OUT/<name>/{wav.scp,text,utt2spk,spk2utt}` for every subset asked for (name = the
subset with `-` -> `_`, e.g. data/dev_clean), plus `OUT/train` (union of --train subsets)
and `OUT/dev` (union of --dev subsets: dev-clean + dev-other, ESPnet's validation set).
wav.scp lists the flac files by absolute path (libsndfile decodes FLAC; no pipe). The
speaker is the reader-chapter pair, as Kaldi's and ESPnet's data_prep.sh do (per-chapter
"speakers" give per-recording-session statistics); utterance ids start with it, so the
Kaldi sort orders agree. Transcripts are kept as distributed (upper case, apostrophes).

Every problem is reported as `file:line: problem` (a transcript line without text, an id
that is not `<reader>-<chapter>-<n>` of its folder, a transcript line whose flac is
missing, a flac without a transcript line, a chapter without a transcript). By default
any problem stops the preparation (exit 1) after listing all of them; `--skip-bad` leaves
the faulty utterances out, prints how many for each reason and writes the list to
`OUT/local/dropped`.

    python local/prepare_data.py --librispeech-dir downloads --out data \
        --train train-clean-100 --dev "dev-clean dev-other" \
        --test "dev-clean dev-other test-clean test-other"
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from speechlm.data.combine import combine_data_dirs
from speechlm.data.corpus_faults import stop_or_list
from speechlm.data.kaldi_dir import DataDir, DropReport

UTT_ID = re.compile(r"(\d+)-(\d+)-(\d+)")


def corpus_root(path: Path) -> Path:
    """The folder holding the subsets: `path/LibriSpeech` if there is one (the tarballs
    unpack to it), else `path` itself."""
    return path / "LibriSpeech" if (path / "LibriSpeech").is_dir() else path


def prepare_subset(subset_dir: Path, report: DropReport) -> DataDir:
    """One subset's data dir; problems go to `report` (key `file:line`)."""
    if not subset_dir.is_dir():
        raise FileNotFoundError(f"{subset_dir}: no such LibriSpeech subset (download it in stage 0)")
    wav_scp, text, utt2spk = {}, {}, {}
    for chapter_dir in sorted(p for p in subset_dir.glob("*/*") if p.is_dir()):
        reader, chapter = chapter_dir.parent.name, chapter_dir.name
        trans = chapter_dir / f"{reader}-{chapter}.trans.txt"
        flacs = {p.stem: p for p in chapter_dir.glob("*.flac")}
        if not trans.is_file():
            for stem in sorted(flacs):
                report.drop(str(flacs[stem]), f"no transcript ({trans.name} missing)")
            continue
        seen = set()
        for n, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
            where = f"{trans}:{n}"
            parts = line.strip().split(maxsplit=1)
            if not parts:
                report.drop(where, "empty transcript line")
                continue
            utt = parts[0]
            m = UTT_ID.fullmatch(utt)
            if m is None or (m.group(1), m.group(2)) != (reader, chapter):
                report.drop(where, f"'{utt}' is not an id <reader>-<chapter>-<n> of {reader}/{chapter}")
                continue
            if len(parts) < 2:
                report.drop(where, f"'{utt}' has no text")
                continue
            if utt in seen:
                report.drop(where, f"'{utt}' transcribed twice")
                continue
            seen.add(utt)
            if utt not in flacs:
                report.drop(where, f"'{utt}': audio {utt}.flac missing")
                continue
            wav_scp[utt] = str(flacs[utt].resolve())
            text[utt] = " ".join(parts[1].split())
            utt2spk[utt] = f"{reader}-{chapter}"
        for stem in sorted(set(flacs) - seen):
            report.drop(str(flacs[stem]), f"no line in {trans.name}")
    return DataDir(wav_scp=wav_scp, utt2spk=utt2spk, text=text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--librispeech-dir", type=Path, required=True, help="holds LibriSpeech/<subset>/ (or the subsets)")
    p.add_argument("--out", type=Path, default=Path("data"))
    p.add_argument("--train", default="train-clean-100", help="subsets united into OUT/train")
    p.add_argument("--dev", default="dev-clean dev-other", help="subsets united into OUT/dev (validation)")
    p.add_argument("--test", default="dev-clean dev-other test-clean test-other", help="subsets each in OUT/<name>")
    p.add_argument("--skip-bad", default="false", choices=["true", "false"])
    args = p.parse_args(argv)
    root = corpus_root(args.librispeech_dir)
    skip_bad = args.skip_bad == "true"

    subsets = dict.fromkeys(args.train.split() + args.dev.split() + args.test.split())
    report = DropReport()  # every subset's problems, listed together
    prepared = {subset: prepare_subset(root / subset, report) for subset in subsets}
    stop_or_list(report, args.out / "local" / "dropped", skip_bad)
    for subset in args.test.split():
        out = args.out / subset.replace("-", "_")
        prepared[subset].save(out)
        print(f"{out}: {len(prepared[subset])} utterances, {len(prepared[subset].spk2utt)} speakers (reader-chapter)")
    for name, parts in (("train", args.train.split()), ("dev", args.dev.split())):
        dd, report = combine_data_dirs([prepared[s] for s in parts])
        if report:  # the subsets are disjoint: an overlap means the corpus copy is wrong
            sys.exit(f"{args.out / name}: subsets {parts} overlap: " + "; ".join(report.summary()))
        dd.save(args.out / name)
        print(f"{args.out / name}: {len(dd)} utterances, {len(dd.spk2utt)} speakers from {' + '.join(parts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
