"""End-to-end smoke run of egs/digits/multitask (every stage, tiny data and model, about a
minute): a copy of the recipe runs with SPEECHLM_ROOT pointing here, and must write the
word_times tables, a multitask tokenizer, a checkpoint and a RESULTS.md table with every
metric (language ID, per-language transcription WER, translation WER, timestamp error)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY_TRAIN = ("trainer.max_epochs=1 encoder.num_blocks=1 encoder.output_size=32 encoder.linear_units=64 "
              "encoder.attention_heads=2 decoder.attention_heads=2 decoder.num_blocks=1 data.num_workers=0")
LANGUAGES = ("de", "en", "es", "fr", "it")


def test_multitask_recipe_smoke(tmp_path):
    recipe = tmp_path / "multitask"
    shutil.copytree(ROOT / "egs/digits/multitask", recipe, ignore=shutil.ignore_patterns("data", "exp", "RESULTS.md"))
    env = {**os.environ, "SPEECHLM_ROOT": str(ROOT)}
    proc = subprocess.run(["bash", "run.sh", "--tiny", "true", "--nbpe", "40", "--num-avg", "1", "--test-sets", "test",
                           "--sample-len", "12", "--train-args", TINY_TRAIN],
                          cwd=recipe, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])

    data, exp = recipe / "data", recipe / "exp/conformer_multitask"
    # two times per word of the transcript, for every utterance
    text = dict(line.split(" ", 1) for line in (data / "test/text").read_text().splitlines())
    times = dict(line.split(" ", 1) for line in (data / "test/word_times").read_text().splitlines())
    assert text.keys() == times.keys() and len(text) == 4 * len(LANGUAGES)
    assert all(len(times[u].split()) == 2 * len(text[u].split()) for u in text)
    assert "<|startoftranscript|>" in (data / "tokenizer/tokens.txt").read_text().split()

    for name in ("config.yaml", "model.avg.ckpt", "train_seconds", "decode_test/hyp_transcribe.txt",
                 "decode_test/hyp_translate.txt", "decode_test/hyp_timestamps.txt"):
        assert (exp / name).exists(), name
    scores = json.loads((exp / "decode_test/scores.json").read_text())["scores"]
    assert set(scores) == {*LANGUAGES, "all"}
    # the preset has OWSM's CTC head: its greedy and the joint CTC/attention transcripts too
    for key in ("lid_accuracy", "transcribe_wer", "translate_wer", "timestamps_wer", "timestamp_mae_ms",
                "ctc_transcribe_wer", "joint_transcribe_wer"):
        assert all(key in s for s in scores.values()), key
    assert scores["all"]["utterances"] == 4 * len(LANGUAGES)

    table = (exp / "RESULTS.md").read_text()
    assert "## conformer_multitask" in table
    header = next(line for line in table.splitlines() if line.startswith("|language|"))
    for column in ("LID acc %", "transcribe WER %", "translate WER %", "timestamped WER %", "mean MAE ms",
                   "joint CTC/att. WER %"):
        assert column in header, column
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("|") and "---" not in line]
    assert [*LANGUAGES, "all"] == [r for r in rows if r != "language"]
