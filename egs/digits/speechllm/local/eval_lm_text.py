#!/usr/bin/env python3
"""The text LM's own answers, the speech-LLM's topline: each task asked with the digit words
written where the audio goes (as in the LM's pretraining text), greedy answers compared
with the right ones (exact match), on the test set's transcripts.

    python local/eval_lm_text.py --lm exp/lm/hf --data data/test --tasks conf/tasks/digits.yaml
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

from speechlm.data.digit_tasks import task_answers
from speechlm.data.instructions import chat_prompt_ids
from speechlm.data.kaldi_dir import read_table
from speechlm.decoders.causal_lm import CausalLM
from speechlm.search.causal_lm_generate import CausalLMGenerate
from speechlm.search.speech_llm import stop_ids
from speechlm.tokenizers.base import load_tokenizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lm", type=Path, required=True, help="the LM's HF dir (also its tokenizer dir)")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--tasks", type=Path, required=True)
    args = p.parse_args()
    lm, tokenizer = CausalLM.from_hf(args.lm).eval(), load_tokenizer(args.lm)
    tasks = yaml.safe_load(args.tasks.read_text())
    text = read_table(args.data / "text")
    generate = CausalLMGenerate(max_new_tokens=16, eos_ids=stop_ids(tokenizer))
    print(f"|task|LM on text: exact match % ({args.data.name}, {len(text)} utts)|")
    print("|---|---|")
    for name, spec in tasks.items():
        instruction = spec["instructions"][0]
        prompts, refs = [], []
        for utt in sorted(text):
            prompts.append(chat_prompt_ids(tokenizer, [{"role": "user", "content": f"{text[utt]} {instruction}"}]))
            refs.append(task_answers(text[utt])[spec["table"]])
        with torch.no_grad():
            hyps = [tokenizer.decode(ids) for ids in generate.from_prompts(lm, prompts)]
        correct = sum(" ".join(h.split()) == r for h, r in zip(hyps, refs))
        print(f"|{name}|{100 * correct / len(refs):.1f}|")


if __name__ == "__main__":
    main()
