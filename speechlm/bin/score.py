"""Score a decode directory: WER and CER of `hyp.trn` against `ref.trn`.

    python -m speechlm.bin.score exp/<tag>/decode_test [--results-md egs/digits/asr/RESULTS.md] [--tag NAME]
    python -m speechlm.bin.score exp/<tag>/decode_test --sot [--speaker-change '<|sc|>']

Writes `DECODE_DIR/result.txt` (words) and `DECODE_DIR/result.cer.txt` (characters, with
`<space>` tokens between words, as ESPnet's CER), prints one summary line per metric, and
with `--results-md` adds a row per metric to that RESULTS.md (section `## TAG`, default the
experiment dir's name; row name `--dataset`, default the decode dir's name).

Counts are sclite's: `sctk sclite -r ref.trn trn -h hyp.trn trn -i rm -s` gives the same
Snt/Wrd/Corr/Sub/Del/Ins/Err/S.Err. Tokens compare case-sensitively, as with `-s` (ESPnet's
plain `sclite ... -i rm` folds case). An utterance of ref.trn missing from hyp.trn (one
`speechlm.bin.decode` could not read or decode: its `failed` file lists those) is not
dropped: it is scored as an empty hypothesis, all deletions, as sclite scores an empty
one; a warning and a NOTE line at the top of each result file say how many and which (and
how many of them the `failed` file lists). An id in hyp.trn that ref.trn lacks is an
error naming `hyp.trn:line`, and so is an empty ref.trn.

Serialized output training (SOT) output, where one line holds several speakers separated by
a speaker-change token, is scored with `--sot`: concatenated minimum-permutation WER
(cpWER, `speechlm.scoring.cpwer`) per line, written to `DECODE_DIR/result.cpwer.txt` (the
same tables, one sentence per recording, the streams' alignments concatenated in the order
the best permutation pairs them) and printed as `%cpWER`, instead of WER and CER. The token
is `--speaker-change TOKEN` (repeatable; giving it implies `--sot`); by default both `<|sc|>`
(as Whisper-style tokenizers render it) and `<sc>` (as data dirs' `text` writes it).

Exit status 0 on success, 1 on error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechlm.scoring.cpwer import SPEAKER_CHANGE_TOKENS, score_cp_corpus
from speechlm.scoring.results import append_results_md, write_result_txt
from speechlm.scoring.trn import FAILED_FILE, TrnError, read_trn
from speechlm.scoring.wer import score_corpus, sum_counts


def failed_note(path: Path, missing: list[str]) -> str:
    """How many of the `missing` trn ids `speechlm.bin.decode` listed in its `failed` file
    (`utt reason` lines; a trn id is the utterance id or `spk-utt`), as a note."""
    if not path.is_file():
        return ""
    failed = {line.split(maxsplit=1)[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    listed = sum(1 for uid in missing if uid in failed or uid.split("-", 1)[-1] in failed)
    return f" ({listed} of them failed to decode, listed with the reason in {path})"


def summary_line(name: str, metric: str, scores) -> str:
    """Kaldi's `%WER 1.23 [ 4 / 325, 1 ins, 2 del, 1 sub ]`, plus the sentence error rate."""
    c = sum_counts(scores)
    return (f"{name} %{metric} {c.error_rate:.2f} [ {c.errors} / {c.words}, {c.insertions} ins, "
            f"{c.deletions} del, {c.substitutions} sub ] %SER {c.sentence_error_rate:.2f} "
            f"[ {c.sentence_errors} / {c.sentences} ]")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m speechlm.bin.score", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("decode_dir", type=Path, help="holds ref.trn and hyp.trn")
    p.add_argument("--results-md", type=Path, help="RESULTS.md to add WER and CER rows to")
    p.add_argument("--tag", help="RESULTS.md section (default: the decode dir's parent's name)")
    p.add_argument("--dataset", help="RESULTS.md row name (default: the decode dir's name)")
    p.add_argument("--aligner", choices=("sclite", "levenshtein"), default="sclite",
                   help="sclite's alignment (default) or jiwer's minimum-edit one")
    p.add_argument("--sot", action="store_true",
                   help="multi-talker SOT output: cpWER (result.cpwer.txt) instead of WER and CER")
    p.add_argument("--speaker-change", action="append", metavar="TOKEN",
                   help=f"speaker-change token of --sot (repeatable, implies --sot; "
                        f"default: {' and '.join(SPEAKER_CHANGE_TOKENS)})")
    args = p.parse_args(argv)

    d = args.decode_dir
    ref_path, hyp_path = d / "ref.trn", d / "hyp.trn"
    try:
        for path in (ref_path, hyp_path):
            if not path.is_file():
                raise TrnError(f"{path}: no such file")
        ref, hyp = read_trn(ref_path), read_trn(hyp_path)
        if not ref:
            raise TrnError(f"{ref_path}: no utterances to score")
        # read_trn allows no blank lines, so the n-th id sits on line n.
        unknown = [(n, uid) for n, uid in enumerate(hyp, start=1) if uid not in ref]
        if unknown:
            for n, uid in unknown[:20]:
                print(f"{hyp_path}:{n}: id '{uid}' is not in {ref_path}", file=sys.stderr)
            raise TrnError(f"{hyp_path}: {len(unknown)} id(s) not in {ref_path}")
    except TrnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    missing = [uid for uid in ref if uid not in hyp]
    notes = []
    if missing:
        shown = " ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        notes.append(f"{len(missing)} of {len(ref)} utterance(s) of {ref_path} missing from {hyp_path}, "
                     f"scored as all deletions{failed_note(d / FAILED_FILE, missing)}: {shown}")
        print(f"warning: {notes[0]}", file=sys.stderr)

    pairs = [(uid, text, hyp.get(uid, "")) for uid, text in ref.items()]
    name = str(d)
    tag = args.tag or d.resolve().parent.name
    dataset = args.dataset or d.resolve().name
    if args.sot or args.speaker_change:
        marks = args.speaker_change or SPEAKER_CHANGE_TOKENS
        metrics = [("cpWER", "result.cpwer.txt", [s.utterance for s in score_cp_corpus(pairs, marks, args.aligner)])]
    else:
        metrics = [(metric, out, score_corpus(pairs, unit=unit, aligner=args.aligner))
                   for metric, unit, out in (("WER", "word", "result.txt"), ("CER", "char", "result.cer.txt"))]
    for metric, out, scores in metrics:
        write_result_txt(d / out, scores, title=f"{hyp_path.name} ({metric})", notes=notes)
        print(summary_line(name, metric, scores))
        if args.results_md:
            append_results_md(args.results_md, tag, metric, dataset, sum_counts(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
