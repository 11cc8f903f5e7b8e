"""End-to-end smoke run of egs/digits/sot (every stage, tiny data and models, 1 epoch): a
copy of the recipe runs with SPEECHLM_ROOT pointing here, and must write the mixtures and
their sources alone, a multitask tokenizer with the speaker-change token, the SOT model and
both single-talker baselines, their decodes of the test mixtures and of the single-speaker
test input, cpWER scores and a RESULTS.md table per model."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# valid for both the multitask decoder and conformer_fast's transformer decoder
TINY_TRAIN = ("trainer.max_epochs=1 encoder.num_blocks=1 encoder.output_size=32 encoder.linear_units=64 "
              "encoder.attention_heads=2 decoder.attention_heads=2 decoder.num_blocks=1 data.num_workers=0")
MODELS = ("sot", "single", "single_ctc_attention")


def table(path: Path) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in path.read_text().splitlines())


def test_sot_recipe_smoke(tmp_path):
    recipe = tmp_path / "sot"
    shutil.copytree(ROOT / "egs/digits/sot", recipe, ignore=shutil.ignore_patterns("data", "exp", "RESULTS.md"))
    env = {**os.environ, "SPEECHLM_ROOT": str(ROOT)}
    proc = subprocess.run(["bash", "run.sh", "--tiny", "true", "--num-avg", "1", "--asr-beam-size", "2",
                           "--train-args", TINY_TRAIN], cwd=recipe, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])

    data, exp = recipe / "data", recipe / "exp"
    # the mixtures' transcripts hold both speakers, FIFO; the sources alone are the same words
    mixtures, sources = table(data / "test/text"), table(data / "test_single/text")
    assert any(" <sc> " in t for t in mixtures.values())
    assert sorted(w for t in mixtures.values() for w in t.split() if w != "<sc>") == \
        sorted(w for t in sources.values() for w in t.split())
    assert "<|sc|>" in (data / "tokenizer/tokens.txt").read_text().split()
    assert "<sc>" not in (data / "tokenizer_text/text").read_text()

    for tag in MODELS:
        for name in ("model.avg.ckpt", "train_seconds", "decode_test/result.cpwer.txt", "decode_test_single/result.cpwer.txt"):
            assert (exp / tag / name).exists(), f"{tag}/{name}"
        assert len((exp / tag / "decode_test/hyp.trn").read_text().splitlines()) == len(mixtures)
        assert len((exp / tag / "decode_test_single/hyp.trn").read_text().splitlines()) == len(sources)
        assert "<sc>" in (exp / tag / "decode_test/ref.trn").read_text()
    results = (exp / "RESULTS.md").read_text()
    for tag in MODELS:
        section = results.split(f"## {tag}\n", 1)[1].split("\n## ", 1)[0]
        assert "### cpWER" in section and "|test|" in section and "|test_single|" in section, tag
