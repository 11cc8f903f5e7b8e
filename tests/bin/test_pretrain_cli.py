"""Pretraining through `python -m speechlm.bin.train` (audio-only data, no tokenizer), its
checkpoint exported to Hugging Face's format (`speechlm.bin.export_hf`, loaded back by
transformers with the same hidden states and quantizer codes), and fine-tuned: the CNN and
the encoder come in through `init_from` into a CTC model."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fixtures import make_data_dir, prepare_training
from speechlm.train.pretrained import load_pretrained

transformers = pytest.importorskip("transformers")

TINY_W2V2 = [
    "frontend=wav2vec2_cnn", "normalize=none", "encoder=wav2vec2",
    "frontend.conv_layers=[[32,10,5],[32,3,2],[32,3,2],[32,2,2]]",
    "encoder.input_size=32", "encoder.output_size=32", "encoder.attention_heads=2", "encoder.linear_units=64",
    "encoder.num_blocks=2", "encoder.conv_pos=16", "encoder.conv_pos_groups=4", "encoder.layer_drop_rate=0.0",
    "data.max_seconds=4", "data.num_workers=0", "optim.scheduler.warmup_steps=5",
    "+trainer.enable_model_summary=false", "trainer.enable_progress_bar=false",
]


def train(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "speechlm.bin.train", *TINY_W2V2, *args],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)


def test_wav2vec2_pretrain_export_hf_and_finetune(tmp_path):
    data = make_data_dir(tmp_path, speakers=("spkA", "spkB"), per_speaker=3)
    pre = tmp_path / "pre"
    proc = train(tmp_path, "model=wav2vec2_pretrain", "data=audio_only", "tokenizer_dir=null", "model.specaug=null",
                 "model.final_dim=16", "model.quantizer_vars=8", "model.num_negatives=5", "model.mask_length=3",
                 "model.mask_prob=0.5", f"data.train_dir={data}", f"data.valid_dir={data}", f"exp_dir={pre}",
                 "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = pre / "checkpoints" / "last.ckpt"
    model, tokenizer, _ = load_pretrained(ckpt)
    assert tokenizer is None and int(model.quantizer.num_updates) > 0

    from speechlm.bin.export_hf import main as export_main

    hf_dir = tmp_path / "hf"
    assert export_main([str(ckpt), str(hf_dir)]) == 0
    hf = transformers.Wav2Vec2ForPreTraining.from_pretrained(hf_dir).eval()
    assert hf.config.num_negatives == 5 and hf.config.num_codevectors_per_group == 8
    audio = torch.randn(1, 16000) * 0.1
    with torch.no_grad():
        ours = model.encode(audio, torch.tensor([16000]), layers=(1, 2))
        theirs = hf.wav2vec2(audio, output_hidden_states=True)
        for layer in (1, 2):
            assert (ours.intermediate[layer] - theirs.hidden_states[layer]).abs().max() < 1e-4
        feats, _ = model.frontend(audio, torch.tensor([16000]))
        q_ours = model.project_q(model.quantizer(feats[0]).quantized)
        q_theirs, _ = hf.quantizer(theirs.extract_features)
        assert (q_ours - hf.project_q(q_theirs)[0]).abs().max() < 1e-4

    # fine-tuning: the pretrained CNN and encoder into a CTC model (the classic recipe)
    prepare_training(tmp_path, data)
    ft = tmp_path / "ft"
    proc = train(tmp_path, "model.ctc_weight=1.0", f"tokenizer_dir={tmp_path / 'tok'}",
                 f"data.train_dir={data}", f"data.valid_dir={data}", f"exp_dir={ft}", "trainer.max_epochs=1",
                 "checkpoint.monitor=valid/loss", "checkpoint.mode=min",
                 f"frontend.init_from={ckpt}", f"encoder.init_from={ckpt}",
                 "+optim.groups.frontend.freeze_steps=1000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    tuned, _, _ = load_pretrained(ft / "checkpoints" / "last.ckpt")
    pretrained = model.state_dict()
    for k, v in tuned.frontend.state_dict().items():  # frozen throughout
        assert torch.equal(v, pretrained[f"frontend.{k}"]), k
    moved = [k for k, v in tuned.encoder.state_dict().items() if not torch.equal(v, pretrained[f"encoder.{k}"])]
    assert moved  # the encoder trained from the pretrained weights


def test_export_hf_refuses_a_model_without_the_cnn(tmp_path):
    from speechlm.bin.export_hf import main as export_main

    data = make_data_dir(tmp_path, speakers=("spkA",), per_speaker=3)
    proc = subprocess.run([sys.executable, "-m", "speechlm.bin.train", "model=best_rq_pretrain", "data=audio_only",
                           "tokenizer_dir=null", "model.specaug=null", "normalize=utterance_mvn",
                           "model.codebook_size=16", "encoder.num_blocks=1", "encoder.output_size=32",
                           "encoder.linear_units=64", "encoder.attention_heads=2", "data.max_seconds=4",
                           "data.num_workers=0", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
                           f"data.train_dir={data}", f"data.valid_dir={data}", f"exp_dir={tmp_path / 'exp'}"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert export_main([str(tmp_path / "exp/checkpoints/last.ckpt"), str(tmp_path / "hf")]) == 1


def test_a_model_that_needs_a_vocabulary_says_so_without_a_tokenizer(tmp_path):
    data = make_data_dir(tmp_path, speakers=("spkA",), per_speaker=2)
    proc = subprocess.run([sys.executable, "-m", "speechlm.bin.train", "data=audio_only", "tokenizer_dir=null",
                           "normalize=utterance_mvn", f"data.train_dir={data}", f"data.valid_dir={data}",
                           f"exp_dir={tmp_path / 'exp'}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "model.vocab_size reads it) but tokenizer_dir is null" in proc.stderr
