"""End-to-end smoke runs of the recipes (every stage, tiny data and model, about a minute
each): a copy of the recipe runs with SPEECHLM_ROOT pointing here, and must produce
decode dirs, scores and a RESULTS.md table."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fixtures import FSDD

ROOT = Path(__file__).resolve().parents[2]
TINY_TRAIN = ("trainer.max_epochs=1 encoder.num_blocks=1 encoder.output_size=32 encoder.linear_units=64 "
              "encoder.attention_heads=2 decoder.linear_units=64 decoder.attention_heads=2 data.num_workers=0 "
              "trainer.enable_progress_bar=false")


def run_recipe(name: str, tmp_path: Path, *args: str) -> Path:
    recipe = tmp_path / name
    shutil.copytree(ROOT / "egs" / name / "asr", recipe, ignore=shutil.ignore_patterns("data", "exp", "downloads"))
    env = {**os.environ, "SPEECHLM_ROOT": str(ROOT)}
    proc = subprocess.run(["bash", "run.sh", *args, "--speed-perturb", "false", "--num-avg", "1", "--beam-size", "2",
                           "--train-args", TINY_TRAIN], cwd=recipe, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    return recipe


def check_outputs(recipe: Path, test_utts: int) -> None:
    exp = recipe / "exp" / "conformer_small"
    for name in ("config.yaml", "model.avg.ckpt", "curves.png", "decode_test/hyp.trn", "decode_test/result.txt"):
        assert (exp / name).exists(), name
    assert len((exp / "decode_test/hyp.trn").read_text().splitlines()) == test_utts
    table = (exp / "RESULTS.md").read_text()
    assert "## conformer_small" in table and "|test|" in table.replace(" ", "")


def test_digits_recipe_smoke(tmp_path):
    recipe = run_recipe("digits", tmp_path, "--train-voices", "12", "--train-per-voice", "2", "--dev-voices", "3",
                        "--test-per-voice", "2", "--experiment", "conformer_small")
    check_outputs(recipe, test_utts=8)


@pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason=f"FSDD not found at {FSDD}")
def test_fsdd_recipe_smoke(tmp_path):
    recipe = run_recipe("fsdd", tmp_path, "--fsdd-dir", str(FSDD), "--train-per-speaker", "3", "--test-per-speaker", "4")
    check_outputs(recipe, test_utts=4)
