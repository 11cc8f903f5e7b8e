"""A model family defined in the test folder only (tests/family/toy_ctc.py: model, search)
with a conf node written by the test trains, decodes and transcribes through
`speechlm.bin.train`, `decode` and `transcribe`; nothing under speechlm/bin/ knows it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fixtures import make_data_dir, prepare_training
from speechlm.bin.transcribe import main as transcribe
from speechlm.train.pretrained import load_pretrained

TESTS = Path(__file__).resolve().parents[1]


def test_toy_family_trains_decodes_and_transcribes(tmp_path, capsys):
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    (conf / "toy_ctc.yaml").write_text(
        "_target_: family.toy_ctc.ToyCTCModel\nvocab_size: ${vocab_size}\nblank_id: ${special_ids.blank}\n"
        "input_size: ${frontend.n_mels}\nhidden: 48\n")
    data = make_data_dir(tmp_path, speakers=("spkA", "spkB"), per_speaker=3)
    prepare_training(tmp_path, data)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    exp = tmp_path / "exp"
    proc = subprocess.run(
        [sys.executable, "-m", "speechlm.bin.train", "--config-dir", str(tmp_path / "conf"), "model=toy_ctc",
         f"data.train_dir={data}", f"data.valid_dir={data}", f"tokenizer_dir={tmp_path / 'tok'}",
         f"cmvn_stats={tmp_path / 'cmvn.npz'}", f"exp_dir={exp}", "data.num_workers=0", "data.max_seconds=4",
         "trainer.max_epochs=2", "optim.scheduler.warmup_steps=5", "trainer.enable_progress_bar=false",
         "+trainer.enable_model_summary=false"],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model, tokenizer, config = load_pretrained(exp / "checkpoints/last.ckpt")
    assert type(model).__name__ == "ToyCTCModel" and config["model"]["_target_"] == "family.toy_ctc.ToyCTCModel"

    proc = subprocess.run([sys.executable, "-m", "speechlm.bin.decode", f"checkpoint={exp / 'checkpoints/last.ckpt'}",
                           f"data_dir={data}", f"out_dir={tmp_path / 'decode'}"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    decoded = dict(line.split(" ", 1) if " " in line else (line, "")
                   for line in (tmp_path / "decode" / "text").read_text().splitlines())
    assert len(decoded) == 6

    wavs = dict(line.split(maxsplit=1) for line in (data / "wav.scp").read_text().splitlines())
    capsys.readouterr()
    assert transcribe(["--model", str(exp / "checkpoints/last.ckpt"), *wavs.values()]) == 0
    printed = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert printed == {wavs[u]: text for u, text in decoded.items()}  # one code path: the same text
