"""Pretrained parts and parameter groups from config: an encoder trained inside a
CTC/attention model is loaded into a transducer with `encoder.init_from`, stays
exactly as loaded for `freeze_steps` optimizer steps while the rest trains, and then trains
at its own learning rate (`lr_scale`). Layer-wise LR decay scales blocks as documented."""
from __future__ import annotations

from functools import partial

import pytest
import torch
from fixtures import make_data_dir, prepare_training, train_tiny

from speechlm.encoders.conformer import ConformerEncoder
from speechlm.models.build import build_model, initialize_part, split_init
from speechlm.train.task import Task

TRANSDUCER = ["model=transducer", "model.predictor.embed_dim=16", "model.predictor.hidden_size=16",
              "model.joiner.joint_dim=16", "trainer.log_every_n_steps=1"]


def weights(ckpt, prefix):
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def test_encoder_from_ctc_attention_into_transducer_frozen_then_trained(tmp_path):
    data = make_data_dir(tmp_path, speakers=("spkA", "spkB"), per_speaker=3)
    prepare_training(tmp_path, data)
    source = train_tiny(tmp_path, data, "trainer.max_epochs=1")
    assert source.returncode == 0, source.stderr[-3000:]
    pretrained = tmp_path / "pretrained.ckpt"
    (tmp_path / "exp/checkpoints/last.ckpt").rename(pretrained)
    encoder = weights(pretrained, "model.encoder.")

    # 3 optimizer steps (data.max_seconds=4 -> several batches an epoch): frozen for 3
    common = [f"encoder.init_from={pretrained}", "+optim.groups.encoder.freeze_steps=3",
              "+optim.groups.encoder.lr_scale=0.5", "optim.scheduler.warmup_steps=1000", *TRANSDUCER]
    frozen = train_tiny(tmp_path, data, "exp_dir=" + str(tmp_path / "t1"), "+trainer.max_steps=3", *common)
    assert frozen.returncode == 0, frozen.stderr[-3000:]
    after = tmp_path / "t1/checkpoints/last.ckpt"
    for k, v in weights(after, "model.encoder.").items():
        assert torch.equal(v, encoder[k]), f"encoder.{k} moved while frozen"
    predictor0 = weights(after, "model.predictor.")
    assert predictor0  # the rest exists, and it trained:
    fresh = train_tiny(tmp_path, data, "exp_dir=" + str(tmp_path / "t0"), "+trainer.max_steps=3", *TRANSDUCER[:-1],
                       "trainer.log_every_n_steps=1")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    untrained = weights(tmp_path / "t0/checkpoints/last.ckpt", "model.encoder.")
    assert any(not torch.equal(untrained[k], encoder[k]) for k in encoder)  # init_from did load something

    # the same run continued past the frozen steps: the encoder moves, at half the lr
    longer = train_tiny(tmp_path, data, "exp_dir=" + str(tmp_path / "t1"), "+trainer.max_steps=6", *common)
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert "resuming from" in longer.stdout + longer.stderr
    moved = weights(tmp_path / "t1/checkpoints/last.ckpt", "model.encoder.")
    assert any(not torch.equal(moved[k], encoder[k]) for k in encoder)
    groups = torch.load(tmp_path / "t1/checkpoints/last.ckpt", weights_only=True)["optimizer_states"][0]["param_groups"]
    by_name = {g["group"]: g for g in groups}
    assert by_name["encoder"]["lr"] == pytest.approx(0.5 * by_name[""]["lr"])
    assert by_name["encoder"]["freeze_steps"] == 3


def test_init_from_errors_name_the_part(tmp_path):
    encoder = {"_target_": "speechlm.encoders.conformer.ConformerEncoder", "input_size": 8, "output_size": 16,
               "attention_heads": 2, "linear_units": 16, "num_blocks": 1, "init_from": str(tmp_path / "x.ckpt")}
    model_cfg = {"_target_": "speechlm.models.ctc_attention.CTCAttentionModel", "vocab_size": 5, "encoder": encoder,
                 "ctc_weight": 1.0}
    plain, inits = split_init(model_cfg)
    assert inits == {"encoder": str(tmp_path / "x.ckpt")} and "init_from" not in plain["encoder"]
    torch.save({"state_dict": {"model.decoder.w": torch.zeros(1)}}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="has no weights under 'encoder.'"):
        build_model(model_cfg)
    torch.save({"state_dict": {"model.encoder.embed.conv.0.weight": torch.zeros(1)}}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="(?s)does not fit model.encoder: .*size mismatch"):
        build_model(model_cfg)
    model = build_model(model_cfg, initialize=False)
    assert isinstance(model.encoder, ConformerEncoder)
    with pytest.raises(ValueError, match="init_from at 'decoder': the model has no such module"):
        initialize_part(model, "decoder", str(tmp_path / "x.ckpt"))  # ctc_weight 1: no decoder


def test_layer_decay_and_lr_scale_groups():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = ConformerEncoder(8, output_size=16, attention_heads=2, linear_units=16, num_blocks=3)
            self.head = torch.nn.Linear(16, 4)

    model = Model()
    task = Task(model, partial(torch.optim.SGD, lr=1.0), groups={"head": {"lr_scale": 2.0}},
                layer_decay={"module": "encoder", "decay": 0.5})
    opt = task.configure_optimizers()
    lr = {}
    for group in opt.param_groups:
        for p in group["params"]:
            lr[id(p)] = group["lr"]
    named = dict(model.named_parameters())
    assert lr[id(named["encoder.embed.conv.0.weight"])] == 0.5 ** 4  # stem: decay^(L+1)
    assert lr[id(named["encoder.encoders.0.norm_mha.weight"])] == 0.5 ** 3  # block 1: decay^L
    assert lr[id(named["encoder.encoders.2.norm_mha.weight"])] == 0.5 ** 1  # block 3 (top)
    assert lr[id(named["encoder.after_norm.weight"])] == 1.0
    assert lr[id(named["head.weight"])] == 2.0
    with pytest.raises(ValueError, match="no parameters under 'decoder'"):
        Task(model, partial(torch.optim.SGD, lr=1.0), groups={"decoder": {"lr_scale": 2.0}})
    with pytest.raises(ValueError, match="unknown options"):
        Task(model, partial(torch.optim.SGD, lr=1.0), groups={"head": {"lr": 2.0}})
