"""Instruction tasks on spoken digits (egs/digits/speechllm; speechlm.data.digit_tasks).

Answer tables of data dirs (qa_sum, qa_count, qa_last, translate_de, from each dir's `text`):

    python -m speechlm.bin.make_digit_tasks data/train data/dev data/test

The LM's pretraining text (digit strings, arithmetic, the tasks' conversations), the tasks
(name -> {table, instructions, weight}) read from a yaml file; plain text to train the
tokenizer on, or conversations in a tokenizer's chat template (`--tokenizer DIR`):

    python -m speechlm.bin.make_digit_tasks --lm-corpus data/lm/raw.txt --tasks conf/tasks/digits.yaml
    python -m speechlm.bin.make_digit_tasks --lm-corpus data/lm/train.txt --tasks conf/tasks/digits.yaml \\
        --tokenizer data/lm_tokenizer --lines 20000 --seed 1
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from speechlm.atomic import atomic_write_text
from speechlm.data.digit_tasks import lm_corpus, write_task_tables


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m speechlm.bin.make_digit_tasks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dirs", nargs="*", type=Path, help="data dirs to write the answer tables of")
    p.add_argument("--lm-corpus", type=Path, help="write the LM's text corpus here (one line per sentence)")
    p.add_argument("--tasks", type=Path, help="yaml: task name -> {table, instructions, weight}")
    p.add_argument("--tokenizer", type=Path, help="an HFTokenizer dir: write conversations in its chat template")
    p.add_argument("--lines", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not args.data_dirs and args.lm_corpus is None:
        p.error("give data dirs and/or --lm-corpus")
    for d in args.data_dirs:
        tables = write_task_tables(d)
        print(f"{d}: {', '.join(tables)}", file=sys.stderr)
    if args.lm_corpus is not None:
        if args.tasks is None:
            p.error("--lm-corpus needs --tasks")
        tasks = yaml.safe_load(args.tasks.read_text(encoding="utf-8"))
        if not isinstance(tasks, dict) or not tasks:
            p.error(f"{args.tasks}: not a mapping of task name -> {{table, instructions}}")
        render = None
        if args.tokenizer is not None:
            from speechlm.tokenizers.base import load_tokenizer

            tokenizer = load_tokenizer(args.tokenizer)
            if not hasattr(tokenizer, "render_chat"):
                p.error(f"{args.tokenizer}: {type(tokenizer).__name__} has no chat template (an HFTokenizer has)")
            render = tokenizer.render_chat
        lines = lm_corpus(tasks, args.lines, args.seed, render)
        args.lm_corpus.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.lm_corpus, "".join(line + "\n" for line in lines))
        print(f"{args.lm_corpus}: {len(lines)} lines", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
