#!/usr/bin/env python3
"""The digits speech-LLM's table: per test set and task, the metric of its decode dir
(exp/<tag>/decode_<set>_<task>: hyp.trn vs ref.trn, sclite's counts) — WER for
transcription and translation, exact-match accuracy (100 - sentence error %) for the
questions — beside the CTC/attention baseline's WER with the same encoder (exp/asr), and
the speech-LLM's trainable vs total parameters.

    python local/summarize.py --exp exp/speech_llm_digits --baseline exp/asr --test-sets test \\
        --tasks "transcribe qa_sum qa_count qa_last translate_de"
"""
from __future__ import annotations

import argparse
from pathlib import Path

from speechlm.scoring.trn import read_trn
from speechlm.scoring.wer import score_corpus, sum_counts

METRIC = {"transcribe": "WER", "translate_de": "WER"}  # the rest: accuracy


def counts(decode_dir: Path):
    ref, hyp = read_trn(decode_dir / "ref.trn"), read_trn(decode_dir / "hyp.trn")
    return sum_counts(score_corpus((u, ref[u], hyp.get(u, "")) for u in ref))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", type=Path, required=True)
    p.add_argument("--baseline", type=Path, required=True, help="the ASR experiment (its decode_<set> dirs)")
    p.add_argument("--test-sets", default="test")
    p.add_argument("--tasks", required=True)
    args = p.parse_args()
    print(f"## {args.exp.name}\n")
    print("|set|task|metric|speech-LLM|CTC/attention (same encoder)|utts|")
    print("|---|---|---|---|---|---|")
    for d in args.test_sets.split():
        for task in args.tasks.split():
            c = counts(args.exp / f"decode_{d}_{task}")
            metric = METRIC.get(task, "accuracy %")
            value = c.error_rate if metric == "WER" else 100.0 - c.sentence_error_rate
            base = ""
            if task == "transcribe" and (args.baseline / f"decode_{d}" / "ref.trn").is_file():
                base = f"{counts(args.baseline / f'decode_{d}').error_rate:.2f}"
            print(f"|{d}|{task}|{metric}|{value:.2f}|{base}|{c.sentences}|")
    from speechlm.train.pretrained import load_pretrained

    model, _, _ = load_pretrained(args.exp / "model.avg.ckpt")
    trainable, total = model.trainable_parameters()
    lm = sum(p.numel() for p in model.lm.parameters())
    speech = sum(p.numel() for p in model.speech.parameters())
    print(f"\nParameters: {trainable:,} trainable of {total:,} ({100 * trainable / total:.1f}%): "
          f"speech model {speech:,} (frozen), LM {lm:,} with LoRA, adapter "
          f"{sum(p.numel() for p in model.adapter.parameters()):,}.")


if __name__ == "__main__":
    main()
