"""`python -m speechlm.bin.train`: a tiny Conformer CTC/attention run writes the ESPnet-like
exp/ layout, its checkpoint loads on its own, and re-running the command resumes."""
from __future__ import annotations

import subprocess
import sys

import torch

from fixtures import make_data_dir
from speechlm.bin.compute_cmvn import main as cmvn_main
from speechlm.bin.train_tokenizer import main as tokenizer_main
from speechlm.train.pretrained import load_pretrained

TINY = ["encoder.num_blocks=1", "encoder.output_size=32", "encoder.linear_units=64", "encoder.attention_heads=2",
        "encoder.cnn_module_kernel=7", "decoder.num_blocks=1", "decoder.linear_units=64", "decoder.attention_heads=2",
        "data.max_seconds=4", "data.num_workers=0", "optim.scheduler.warmup_steps=5",
        "+trainer.enable_model_summary=false", "trainer.enable_progress_bar=false"]


def train(tmp_path, data, *extra):
    cmd = [sys.executable, "-m", "speechlm.bin.train", f"data.train_dir={data}", f"data.valid_dir={data}",
           f"tokenizer_dir={tmp_path / 'tok'}", f"cmvn_stats={tmp_path / 'cmvn.npz'}", f"exp_dir={tmp_path / 'exp'}",
           *TINY, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_train_writes_exp_dir_and_resumes(tmp_path):
    data = make_data_dir(tmp_path, speakers=("spkA", "spkB"), per_speaker=3)
    assert tokenizer_main(["--data-dir", str(data), "--type", "char", "--out", str(tmp_path / "tok")]) == 0
    assert cmvn_main([str(data), str(tmp_path / "cmvn.npz")]) == 0
    first = train(tmp_path, data, "trainer.max_epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    exp = tmp_path / "exp"
    for name in ("config.yaml", "checkpoints/last.ckpt", "curves.png", "tensorboard"):
        assert (exp / name).exists(), name
    step1 = torch.load(exp / "checkpoints/last.ckpt", weights_only=True)["global_step"]
    second = train(tmp_path, data, "trainer.max_epochs=2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stdout + second.stderr
    assert torch.load(exp / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 2 * step1
    # the checkpoint alone rebuilds the model (CMVN, tokenizer and config inside)
    (tmp_path / "cmvn.npz").unlink()
    model, tokenizer, config = load_pretrained(exp / "checkpoints/last.ckpt")
    assert tokenizer.vocab_size == config["vocab_size"]
    enc = model.encode(torch.randn(1, 16000), torch.tensor([16000]))
    assert enc.output.shape[-1] == 32

    # decode with the trained checkpoint (CTC greedy and joint beam search), then score
    from speechlm.bin.score import main as score_main
    for method in ("ctc_greedy", "joint"):
        out = tmp_path / f"decode_{method}"
        proc = subprocess.run([sys.executable, "-m", "speechlm.bin.decode", f"checkpoint={exp / 'checkpoints/last.ckpt'}",
                               f"data_dir={data}", f"out_dir={out}", f"method={method}", "beam_size=2", "maxlenratio=0.5"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert len((out / "hyp.trn").read_text().splitlines()) == 6
        assert score_main([str(out)]) == 0
        assert "Sum/Avg" in (out / "result.txt").read_text()
