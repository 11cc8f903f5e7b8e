"""Smoke run of egs/digits/lm_fusion at a tiny size: every stage (grammar data, acoustic
model, LM on grammar text, decoding with and without the LM, scoring) runs through
`speechlm.bin.*`, and fusion must pay off on the grammar test set:

    WER(lm_weight +w) <= WER(no LM)   and   WER(lm_weight -w) > WER(lm_weight +w)

The second line makes the first one bite: with the fusion's sign flipped (or the LM's
state given to the wrong rows, or the LM ignored) the grammar LM cannot keep its edge
over the LM pushing the other way."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEIGHT = "0.5"
TINY_ASR = ("trainer.max_epochs=12 data.max_seconds=6 data.num_workers=0 encoder.num_blocks=2 encoder.output_size=64 "
            "encoder.linear_units=128 encoder.attention_heads=2 decoder.linear_units=128 decoder.attention_heads=2")


def wer(result_md: str, tag: str) -> float:
    """The test WER of section `## tag` of a RESULTS.md written by speechlm.bin.score."""
    section = result_md.split(f"## {tag}\n", 1)[1]
    row = re.search(r"^\|test\|(.*)$", section, re.M).group(1).split("|")
    return float(row[6])  # Snt Wrd Corr Sub Del Ins Err


def test_lm_fusion_recipe_smoke(tmp_path):
    recipe = tmp_path / "lm_fusion"
    shutil.copytree(ROOT / "egs/digits/lm_fusion", recipe, ignore=shutil.ignore_patterns("data", "exp"))
    env = {**os.environ, "SPEECHLM_ROOT": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", "run.sh", "--train-voices", "60", "--dev-voices", "6", "--test-per-voice", "16", "--lm-lines", "2000",
         "--asr-args", TINY_ASR, "--lm-args", "trainer.max_epochs=2", "--beam-size", "4",
         "--lm-weights", f"0 {WEIGHT} -{WEIGHT}"],
        cwd=recipe, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    table = (recipe / "exp/asr/RESULTS.md").read_text()
    plain, fused, flipped = (wer(table, f"lm_weight_{w}") for w in ("0", WEIGHT, f"-{WEIGHT}"))
    assert fused <= plain, table
    assert flipped > fused, table
    assert (recipe / "exp/asr/decode_test_lm0/hyp.trn").read_text().count("\n") == 64
