"""End-to-end smoke run of egs/fsdd/ssl (every stage on tiny data with a one-block d=32
encoder): MFCC k-means labels, the four pretrainings (HuBERT iteration 2 on k-means of the
iteration-1 model's layer), CTC fine-tuning from each and from scratch, decoding and the
label-efficiency table."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fixtures import FSDD

ROOT = Path(__file__).resolve().parents[2]
TINY = "encoder.output_size=32 encoder.num_blocks=1 encoder.linear_units=64 encoder.attention_heads=2 data.num_workers=0"


@pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason=f"FSDD not found at {FSDD}")
def test_fsdd_ssl_recipe_smoke(tmp_path):
    recipe = tmp_path / "ssl"
    shutil.copytree(ROOT / "egs/fsdd/ssl", recipe, ignore=shutil.ignore_patterns("data", "exp", "dump", "RESULTS.md"))
    env = {**os.environ, "SPEECHLM_ROOT": str(ROOT)}
    proc = subprocess.run(["bash", "run.sh", "--fsdd-dir", str(FSDD), "--tiny", "true", "--fractions", "10", "--test-sets", "test",
                           "--clusters", "20", "--it2-layer", "1", "--pretrain-args", TINY, "--finetune-args", TINY],
                          cwd=recipe, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    data, exp = recipe / "data", recipe / "exp"
    assert not (data / "pretrain/text").exists()  # pretraining never sees a transcript
    it1 = (data / "pretrain/km_mfcc").read_text()
    it2 = (data / "pretrain/km_it2").read_text()
    assert it1.split("\n")[0].split()[0] == it2.split("\n")[0].split()[0] and it1 != it2
    for o in ("hubert_it1", "hubert_it2", "wav2vec2", "best_rq"):
        assert (exp / f"pretrain_{o}/model.avg.ckpt").exists(), o
        config = (exp / f"ft_{o}_10/config.yaml").read_text()
        assert f"init_from: exp/pretrain_{o}/model.avg.ckpt" in config
    assert "init_from: null" in (exp / "ft_scratch_10/config.yaml").read_text()
    table = (exp / "RESULTS.md").read_text()
    assert "## Label efficiency" in table
    rows = [line for line in table.splitlines() if line.startswith("|") and "%" not in line and "---" not in line]
    assert len(rows) == 10  # 5 encoders x (test, dev: not decoded here)
    assert all(row.strip("|").split("|")[1] != "-" for row in rows[:5])  # a test WER for each encoder
