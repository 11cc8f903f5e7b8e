"""Smoke run of egs/digits/speechllm at a tiny size: every stage runs through
`speechlm.bin.*` (data + task tables, the ASR encoder, the text LM with its HF tokenizer and
HF export, the speech-LLM with LoRA, decoding of every task, scoring), and what the stages
hand each other is checked against transformers:

- exp/lm/hf loads with `AutoModelForCausalLM` / `AutoTokenizer`; its chat template gives
  the prompt ids our tokenizer gives;
- the speech-LLM's checkpoint holds the adapter and LoRA weights only (no LM, no encoder);
- its LM exported with LoRA merged (`export_causal_lm`) computes in transformers what our
  LM computes with the LoRA layers unmerged."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import torch

from speechlm.data.instructions import prompt_ids
from speechlm.train.pretrained import load_pretrained

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("transcribe", "qa_sum", "qa_count", "qa_last", "translate_de")
TINY_ASR = ("trainer.max_epochs=1 encoder.num_blocks=1 encoder.output_size=32 encoder.linear_units=64 "
            "encoder.attention_heads=2 decoder.linear_units=64 decoder.attention_heads=2 data.num_workers=0 "
            "trainer.enable_progress_bar=false")
TINY_LM = "trainer.max_epochs=1 model.hidden_size=48 model.intermediate_size=96 model.num_layers=2 model.num_heads=4"
TINY_SPEECH_LLM = "trainer.max_epochs=1"


def test_speechllm_recipe_smoke(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = tmp_path / "speechllm"
    shutil.copytree(ROOT / "egs/digits/speechllm", recipe, ignore=shutil.ignore_patterns("data", "exp"))
    env = {**os.environ, "SPEECHLM_ROOT": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", "run.sh", "--train-voices", "12", "--train-per-voice", "2", "--dev-voices", "3", "--test-per-voice", "2",
         "--lm-lines", "600", "--lm-vocab", "300", "--num-avg", "1", "--asr-args", TINY_ASR, "--lm-args", TINY_LM,
         "--train-args", TINY_SPEECH_LLM, "--decode-args", "search.max_new_tokens=8"],
        cwd=recipe, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    exp = recipe / "exp/speech_llm_digits"
    for task in TASKS:
        assert len((exp / f"decode_test_{task}/hyp.trn").read_text().splitlines()) == 8, task
        assert f"|test_{task}|" in (exp / "RESULTS.md").read_text()
    lm_table = (recipe / "exp/lm/RESULTS.md").read_text()  # the LM's text-only topline
    assert all(f"|{task}|" in lm_table for task in TASKS), lm_table
    summary = (exp / "summary.md").read_text()
    assert "|test|qa_count|accuracy %|" in summary and "trainable of" in summary

    # the LM's HF export and tokenizer, as transformers reads them
    hf = recipe / "exp/lm/hf"
    peer_tok = AutoTokenizer.from_pretrained(hf)
    model, tokenizer, _ = load_pretrained(exp / "model.avg.ckpt")
    messages = [{"role": "user", "content": f"{tokenizer.special_tokens['audio']} How many digits are spoken?"}]
    peer_ids = peer_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert [peer_tok.bos_token_id] + list(peer_ids) == prompt_ids(tokenizer, "How many digits are spoken?")

    # the checkpoint: trained weights only
    state = torch.load(exp / "model.avg.ckpt", weights_only=True)["state_dict"]
    names = [k.split(".", 1)[1] if k.startswith("model.") else k for k in state]
    assert names and all(n.startswith("adapter.") or ".lora_" in n or n == "reference_fingerprint" for n in names), names
    assert any(".lora_B." in k and v.abs().max() > 0 for k, v in state.items())  # LoRA has learnt something

    # LoRA merged into the exported LM = our LM with LoRA, in transformers
    out = recipe / "exp/merged"
    subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "speechlm.bin.export_causal_lm", str(exp / "model.avg.ckpt"),
                    str(out)], cwd=recipe, env=env, check=True, capture_output=True)
    peer = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([prompt_ids(tokenizer, "Which digit comes last?") + tokenizer.encode("one two three")])
    model.eval()
    with torch.no_grad():
        ours = model.lm.logits(ids)
        theirs = peer(ids).logits
    assert (ours - theirs).abs().max() < 1e-4
