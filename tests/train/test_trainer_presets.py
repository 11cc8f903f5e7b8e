"""The trainer presets conf/trainer/{gpu,fsdp,multinode}.yaml: what can run on a CPU runs
(gpu's bf16 + DDP as 2 gloo processes, multinode under torchrun, activation checkpointing
with FSDP's block policy); what needs GPUs (FSDP itself) is checked for its configuration."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper, apply_activation_checkpointing

from fixtures import TINY_MODEL, make_data_dir, prepare_training
from speechlm.encoders.conformer import ConformerBlock
from speechlm.decoders.transformer import TransformerDecoderBlock
from speechlm.train.strategies import DEFAULT_BLOCKS, module_classes

TESTS = Path(__file__).resolve().parents[1]
CONF = TESTS.parent / "conf"
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS / "train"), str(TESTS), os.environ.get("PYTHONPATH")]))}


def trainer_config(preset: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"trainer={preset}", "tokenizer_dir=null", *overrides]).trainer


@pytest.mark.parametrize("preset", ["gpu", "fsdp", "multinode"])
def test_presets_build_the_intended_strategy(preset):
    cfg = trainer_config(preset, "trainer.num_nodes=2", "trainer.devices=8") if preset == "multinode" else trainer_config(preset)
    assert cfg.accelerator == "gpu" and cfg.precision == "bf16-mixed" and cfg.gradient_clip_val > 0
    strategy = instantiate(cfg.strategy)
    assert strategy._timeout == timedelta(minutes=30)
    if preset == "fsdp":
        assert isinstance(strategy, FSDPStrategy)
        wrapped = strategy.kwargs["auto_wrap_policy"]
        # every block class of the package is its own FSDP unit and is checkpointed
        assert {ConformerBlock, TransformerDecoderBlock} <= module_classes(DEFAULT_BLOCKS)
        assert getattr(wrapped, "_module_classes", None) == module_classes(DEFAULT_BLOCKS)
        assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == module_classes(DEFAULT_BLOCKS)
        assert strategy._state_dict_type == "full"
    else:
        assert type(strategy) is DDPStrategy and strategy._ddp_kwargs["find_unused_parameters"] is False
    if preset == "multinode":
        assert (cfg.num_nodes, cfg.devices) == (2, 8)
        with pytest.raises(Exception, match="num_nodes"):  # must be given: the launcher's world
            trainer_config(preset).num_nodes  # noqa: B018


def test_block_classes_outside_the_packages_are_refused():
    with pytest.raises(ValueError, match="expected speechlm"):
        module_classes(["os.system"])
    with pytest.raises(ValueError, match="not an nn.Module"):
        module_classes(["speechlm.train.strategies.ddp"])


def test_activation_checkpointing_of_the_fsdp_blocks_keeps_loss_and_gradients():
    """What the fsdp preset's activation_checkpointing_policy does to a model, on CPU:
    blocks are recomputed in backward, with the same dropout masks (RNG state replayed),
    so loss and every gradient are unchanged."""
    from speechlm.models.build import build_model

    torch.manual_seed(0)
    config = {"_target_": "speechlm.models.ctc_attention.CTCAttentionModel", "vocab_size": 12, "ctc_weight": 0.3,
              "encoder": {"_target_": "speechlm.encoders.conformer.ConformerEncoder", "input_size": 20,
                          "output_size": 32, "attention_heads": 2, "linear_units": 48, "num_blocks": 2,
                          "cnn_module_kernel": 7, "dropout_rate": 0.1},
              "decoder": {"_target_": "speechlm.decoders.transformer.TransformerDecoder", "vocab_size": 12,
                          "encoder_output_size": 32, "attention_heads": 2, "linear_units": 48, "num_blocks": 2,
                          "dropout_rate": 0.1}}
    plain = build_model(config, initialize=False)
    ckpt = build_model(config, initialize=False)
    ckpt.load_state_dict(plain.state_dict())
    classes = tuple(module_classes(DEFAULT_BLOCKS))
    apply_activation_checkpointing(ckpt, check_fn=lambda m: isinstance(m, classes))
    assert sum(isinstance(m, CheckpointWrapper) for m in ckpt.modules()) == 4  # 2 encoder + 2 decoder blocks
    batch = {"audio": torch.randn(3, 60, 20), "audio_lens": torch.tensor([60, 50, 41]),
             "tokens": torch.tensor([[1, 2, 3, 4], [5, 6, 7, 0], [8, 9, 0, 0]]), "token_lens": torch.tensor([4, 3, 2])}
    losses = []
    for model in (plain, ckpt):
        model.train()
        torch.manual_seed(1)
        loss = model(batch)["loss"]
        loss.backward()
        losses.append(loss.detach())
    assert torch.allclose(losses[0], losses[1], atol=1e-6)
    grads = {n.replace("_checkpoint_wrapped_module.", ""): p.grad for n, p in ckpt.named_parameters()}
    for name, p in plain.named_parameters():
        assert torch.allclose(p.grad, grads[name], atol=1e-6), name


def test_fsdp_clips_by_the_global_norm_of_its_root():
    """Lightning refuses norm clipping under FSDP; the Task asks the FSDP root, which
    reduces the shards' norms over ranks (torch.nn.utils.clip_grad_norm_ would clip each
    shard by its own norm)."""
    from speechlm.train.task import Task

    class Root:
        calls: list = []

        def clip_grad_norm_(self, value):
            self.calls.append(value)

    strategy = FSDPStrategy()
    strategy.model = Root()
    task = Task(torch.nn.Linear(2, 2), optimizer=lambda groups: torch.optim.SGD(groups, lr=0.1))
    task._trainer = type("T", (), {"strategy": strategy})()
    task.configure_gradient_clipping(None, gradient_clip_val=5.0, gradient_clip_algorithm="norm")
    assert Root.calls == [5.0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("presets")
    d = make_data_dir(root, speakers=("spkA", "spkB"), per_speaker=4)
    # transcripts CTC can align on the shortest audio (0.5 s)
    text = d / "text"
    text.write_text("".join(f"{line.split()[0]} W{line.split()[0][-1]}\n" for line in text.read_text().splitlines()))
    prepare_training(root, d)
    return root, d


def train_cmd(root: Path, d: Path, exp: Path, *extra: str) -> list[str]:
    return [f"data.train_dir={d}", f"data.valid_dir={d}", f"tokenizer_dir={root / 'tok'}",
            f"cmvn_stats={root / 'cmvn.npz'}", f"exp_dir={exp}", *TINY_MODEL, "trainer.max_epochs=1",
            "data.max_seconds=3", "+callbacks.probe._target_=ddp_probe.RecordBatches",
            f"+callbacks.probe.out_dir={exp / 'probe'}", *extra]


def ranks(exp: Path) -> list[dict]:
    return [json.loads((exp / "probe" / f"rank{r}.json").read_text()) for r in (0, 1)]


def assert_data_parallel(exp: Path, d: Path) -> None:
    r0, r1 = ranks(exp)
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["weights"] == r1["weights"], "ranks diverged"
    ids0, ids1 = r0["seen"]["0"], r1["seen"]["0"]
    assert not set(ids0) & set(ids1)
    assert sorted(ids0 + ids1) == sorted(line.split()[0] for line in (d / "text").read_text().splitlines())


def test_gpu_preset_trains_on_cpu_as_bf16_ddp_over_two_gloo_processes(data):
    root, d = data
    exp = root / "gpu"
    proc = subprocess.run([sys.executable, "-m", "speechlm.bin.train", "trainer=gpu", "trainer.accelerator=cpu",
                           "trainer.devices=2", *train_cmd(root, d, exp)],
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "Using bfloat16 Automatic Mixed Precision" in out
    assert "skipped" not in out  # no non-finite loss under bf16 autocast
    assert_data_parallel(exp, d)
    ckpt = torch.load(exp / "checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] > 0
    assert all(v.dtype != torch.bfloat16 and torch.isfinite(v).all()
               for v in ckpt["state_dict"].values() if v.is_floating_point())  # fp32 master weights


def test_multinode_preset_under_torchrun(data):
    """torchrun starts the processes (Lightning does not): ranks, world size and master
    come from its environment; num_nodes x devices must equal its world size."""
    root, d = data
    exp = root / "torchrun"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                "-m", "speechlm.bin.train", "trainer=multinode", "trainer.accelerator=cpu", "trainer.precision=32-true"]
    proc = subprocess.run([*torchrun, "trainer.num_nodes=1", "trainer.devices=2", *train_cmd(root, d, exp)],
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_data_parallel(exp, d)
    bad = subprocess.run([*torchrun, "trainer.num_nodes=2", "trainer.devices=2",
                          *train_cmd(root, d, root / "torchrun_bad")], capture_output=True, text=True, timeout=300, env=ENV)
    assert bad.returncode != 0 and "does not match the world size" in bad.stdout + bad.stderr


def test_multinode_preset_reads_slurm_environment(monkeypatch):
    """Under srun, Lightning takes rank and world size from SLURM's variables (a config check:
    no SLURM here)."""
    import lightning as L
    from lightning.fabric.plugins.environments import SLURMEnvironment

    for key, value in {"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_PROCID": "3", "SLURM_LOCALID": "1",
                       "SLURM_NODEID": "1", "SLURM_NNODES": "2", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "7",
                       "SLURM_NODELIST": "node[1-2]"}.items():
        monkeypatch.setenv(key, value)
    cfg = trainer_config("multinode", "trainer.num_nodes=2", "trainer.devices=2", "trainer.accelerator=cpu",
                         "trainer.precision=32-true")
    from omegaconf import OmegaConf
    args = OmegaConf.to_container(cfg, resolve=True)
    args["strategy"] = instantiate(args["strategy"])
    trainer = L.Trainer(**args, logger=False, enable_checkpointing=False)
    env = trainer.strategy.cluster_environment
    assert isinstance(env, SLURMEnvironment)
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank, trainer.node_rank) == (4, 3, 1, 1)


def test_a_rank_that_raises_under_torchrun_ends_the_run_quickly(data):
    """Without Lightning's own launcher (whose observer kills the group), torchrun's agent
    stops the surviving ranks when one fails, rather than letting them wait in an
    all-reduce for the process group's timeout."""
    import time

    root, d = data
    exp = root / "torchrun_raise"
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           "-m", "speechlm.bin.train", "trainer=multinode", "trainer.accelerator=cpu",
                           "trainer.precision=32-true", "trainer.num_nodes=1", "trainer.devices=2",
                           *train_cmd(root, d, exp), "trainer.max_epochs=3", "+callbacks.fault._target_=ddp_probe.PlantFault",
                           "+callbacks.fault.kind=raise", "+callbacks.fault.step=2", "+callbacks.fault.rank=1"],
                          capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode != 0 and "planted fault on rank 1" in proc.stdout + proc.stderr
    assert time.monotonic() - start < 150  # start-up included; a hang would last the 30-min timeout
