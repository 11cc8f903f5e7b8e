"""`python -m speechlm.bin.train`: a tiny Conformer CTC/attention run writes the ESPnet-like
exp/ layout, its checkpoint loads on its own, and re-running the command resumes."""
from __future__ import annotations

import subprocess
import sys

import torch

from fixtures import make_data_dir, prepare_training, train_tiny
from speechlm.train.pretrained import load_pretrained


def test_train_writes_exp_dir_and_resumes(tmp_path):
    data = make_data_dir(tmp_path, speakers=("spkA", "spkB"), per_speaker=3)
    prepare_training(tmp_path, data)
    first = train_tiny(tmp_path, data, "trainer.max_epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    exp = tmp_path / "exp"
    for name in ("config.yaml", "checkpoints/last.ckpt", "curves.png", "tensorboard"):
        assert (exp / name).exists(), name
    first_ckpt = torch.load(exp / "checkpoints/last.ckpt", weights_only=True)
    step1 = first_ckpt["global_step"]
    (key, state), = [(k, v) for k, v in first_ckpt["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert state["monitor"] == "valid/acc" and "'mode': 'max'" in key  # CTCAttentionModel's own criterion
    second = train_tiny(tmp_path, data, "trainer.max_epochs=2")
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
    for search in ("ctc_greedy", "joint"):
        out = tmp_path / f"decode_{search}"
        options = ["search.beam_size=2", "search.maxlenratio=0.5"] if search == "joint" else []
        proc = subprocess.run([sys.executable, "-m", "speechlm.bin.decode", f"checkpoint={exp / 'checkpoints/last.ckpt'}",
                               f"data_dir={data}", f"out_dir={out}", f"search={search}", *options],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert len((out / "hyp.trn").read_text().splitlines()) == 6
        assert score_main([str(out)]) == 0
        assert "Sum/Avg" in (out / "result.txt").read_text()


TINY_TRANSDUCER = ["model=transducer", "model.predictor.embed_dim=16", "model.predictor.hidden_size=16",
                   "model.joiner.joint_dim=16", "model.ctc_weight=0.3"]


def test_transducer_trains_keeps_best_by_valid_loss_and_decodes(tmp_path):
    data = make_data_dir(tmp_path, speakers=("spkA", "spkB"), per_speaker=3)
    prepare_training(tmp_path, data)
    proc = train_tiny(tmp_path, data, "trainer.max_epochs=2", *TINY_TRANSDUCER)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = tmp_path / "exp"
    last = torch.load(exp / "checkpoints/last.ckpt", weights_only=True)
    (key, state), = [(k, v) for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert state["monitor"] == "valid/loss" and "'mode': 'min'" in key and len(state["best_k_models"]) == 2
    model, _, config = load_pretrained(exp / "checkpoints/last.ckpt")
    assert type(model).__name__ == "TransducerModel" and model.ctc is not None
    assert config["model"]["predictor"]["_target_"].endswith("LSTMPredictor")
    for search in (None, "transducer_greedy", "graves_beam", "ctc_greedy"):  # None: the model's own
        out = tmp_path / f"decode_{search}"
        options = [f"search={search}"] if search else []
        options += ["search.beam_size=2"] if search in (None, "graves_beam") else []
        proc = subprocess.run([sys.executable, "-m", "speechlm.bin.decode", f"checkpoint={exp / 'checkpoints/last.ckpt'}",
                               f"data_dir={data}", f"out_dir={out}", *options],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert len((out / "hyp.trn").read_text().splitlines()) == 6
    proc = subprocess.run([sys.executable, "-m", "speechlm.bin.decode", f"checkpoint={exp / 'checkpoints/last.ckpt'}",
                           f"data_dir={data}", f"out_dir={tmp_path / 'bad'}", "search=joint"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "TransducerModel has no attention decoder" in proc.stderr
