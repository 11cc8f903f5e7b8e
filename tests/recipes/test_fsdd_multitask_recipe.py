"""End-to-end smoke run of egs/fsdd/multitask (every stage, tiny data, a d=32 one-block
Whisper-architecture model, 1 epoch per stage): a copy of the recipe runs with SPEECHLM_ROOT
pointing here, and must write tiny.pt (trained from scratch) and finetuned.pt (fine-tuned
from it through model.init_from) as OpenAI checkpoints that openai-whisper loads and decodes
as we do, decode both on the held-out speaker and write a before/after RESULTS.md."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from fixtures import FSDD

ROOT = Path(__file__).resolve().parents[2]
TINY_TRAIN = ("trainer.max_epochs=1 encoder.d_model=32 encoder.num_blocks=1 decoder.num_blocks=1 "
              "data.num_workers=0")


@pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason=f"FSDD not found at {FSDD}")
def test_fsdd_multitask_recipe_smoke(tmp_path):
    recipe = tmp_path / "multitask"
    shutil.copytree(ROOT / "egs/fsdd/multitask", recipe, ignore=shutil.ignore_patterns("data", "exp", "RESULTS.md"))
    env = {**os.environ, "SPEECHLM_ROOT": str(ROOT)}
    proc = subprocess.run(["bash", "run.sh", "--fsdd-dir", str(FSDD), "--tiny", "true", "--num-avg", "1",
                           "--check-utts", "2", "--train-args", TINY_TRAIN],
                          cwd=recipe, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "greedy transcripts equal on 2/2" in proc.stdout

    exp = recipe / "exp"
    before, after = exp / "whisper_tiny_digits/tiny.pt", exp / "whisper_tiny_fsdd/finetuned.pt"
    for path in (before, after):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert set(ckpt) == {"dims", "model_state_dict"}
        assert ckpt["dims"]["n_audio_ctx"] == 1500 and ckpt["dims"]["n_vocab"] == 51865 and ckpt["dims"]["n_audio_state"] == 32
    # stage B started from stage A's weights and moved away from them
    a = torch.load(before, weights_only=True)["model_state_dict"]
    b = torch.load(after, weights_only=True)["model_state_dict"]
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    assert "init_from: exp/whisper_tiny_digits/tiny.pt" in (exp / "whisper_tiny_fsdd/config.yaml").read_text()

    test_utts = len((recipe / "data/fsdd/test/text").read_text().splitlines())
    for d in ("whisper_tiny_digits", "whisper_tiny_fsdd"):
        for name in ("train_seconds", "train_cpu_seconds", "decode_fsdd_test/result.txt"):
            assert (exp / d / name).exists(), f"{d}/{name}"
        assert len((exp / d / "decode_fsdd_test/hyp.trn").read_text().splitlines()) == test_utts
    results = (exp / "RESULTS.md").read_text()
    assert "## before (exp/whisper_tiny_digits/tiny.pt)" in results
    assert "## after (exp/whisper_tiny_fsdd/finetuned.pt)" in results
    assert results.count("### WER") == 2 and results.count("|fsdd/test|") >= 2  # (and CER tables)
