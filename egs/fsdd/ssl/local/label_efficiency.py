"""The label-efficiency table: held-out-speaker WER of each fine-tuned model (rows: the
encoder's initialisation, columns: the share of labelled training utterances), from each
exp/ft_INIT_FRACTION/decode_{test,dev}/{ref,hyp}.trn, plus the pretraining and fine-tuning
wall-clock seconds the runs recorded.

    python local/label_efficiency.py exp --inits "scratch wav2vec2 best_rq" --fractions "1 10 100"
"""
from __future__ import annotations

import argparse
from pathlib import Path

from speechlm.atomic import atomic_write_text
from speechlm.scoring.trn import read_trn
from speechlm.scoring.wer import score_corpus, sum_counts

NAMES = {"scratch": "from scratch", "wav2vec2": "wav2vec 2.0", "hubert_it1": "HuBERT it1 (MFCC k-means)",
         "hubert_it2": "HuBERT it2 (layer k-means)", "best_rq": "BEST-RQ"}


def wer(decode_dir: Path) -> str:
    ref, hyp = decode_dir / "ref.trn", decode_dir / "hyp.trn"
    if not (ref.is_file() and hyp.is_file()):
        return "-"
    refs, hyps = read_trn(ref), read_trn(hyp)
    counts = sum_counts(score_corpus([(u, t, hyps.get(u, "")) for u, t in refs.items()], unit="word"))
    return f"{100.0 * counts.errors / max(counts.words, 1):.1f}"


def seconds(path: Path) -> str:
    return path.read_text().split()[0] if path.is_file() else "-"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exp", type=Path)
    p.add_argument("--inits", required=True)
    p.add_argument("--fractions", required=True)
    p.add_argument("--out", type=Path, help="write the tables to this markdown file (replaced)")
    args = p.parse_args()
    inits, fractions = args.inits.split(), args.fractions.split()
    lines = []
    for dataset in ("test", "dev"):
        lines += [f"### {dataset} WER % ({'held-out speaker' if dataset == 'test' else 'training speakers'})", "",
                  "|encoder|" + "|".join(f"{f}% labels" for f in fractions) + "|pretraining s|",
                  "|---|" + "---:|" * (len(fractions) + 1)]
        for init in inits:
            row = [wer(args.exp / f"ft_{init}_{f}" / f"decode_{dataset}") for f in fractions]
            pre = "-" if init == "scratch" else seconds(args.exp / f"pretrain_{init}" / "train_seconds")
            lines.append(f"|{NAMES.get(init, init)}|" + "|".join(row) + f"|{pre}|")
        lines.append("")
    lines += ["fine-tuning seconds: " + ", ".join(
        f"{init} {f}%: {seconds(args.exp / f'ft_{init}_{f}' / 'train_seconds')}" for init in inits for f in fractions), ""]
    text = "## Label efficiency\n\n" + "\n".join(lines) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
    else:
        print(text)


if __name__ == "__main__":
    main()
