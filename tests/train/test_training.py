"""Training infrastructure with a tiny CTC model: checkpoints are atomic, self-contained
and weights_only-loadable; a SIGKILLed run resumes to the same weights as an
uninterrupted one; averaging; non-finite losses are skipped and counted; curves plotted."""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fixtures import make_data_dir
from speechlm.train.average import average_checkpoints, average_state_dicts

HERE = Path(__file__).parent


def tiny(data: Path, exp: Path, epochs: int, kill_at: int | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(HERE / "tiny_run.py"), str(data), str(exp), str(epochs)]
    cmd += [str(kill_at)] if kill_at is not None else []
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(HERE.parent)})


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("train"), speakers=("spkA", "spkB", "spkC"), per_speaker=4)


def weights(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def test_sigkilled_run_resumes_to_identical_weights(data, tmp_path):
    straight = tiny(data, tmp_path / "straight", 3)
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = tiny(data, tmp_path / "killed", 3, kill_at=9)  # in the middle of epoch 3 (4 batches/epoch)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = tiny(data, tmp_path / "killed", 3)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = weights(tmp_path / "straight/checkpoints/last.ckpt"), weights(tmp_path / "killed/checkpoints/last.ckpt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the checkpoint is self-contained and carries RNG state; no temp files left behind
    ckpt = torch.load(tmp_path / "straight/checkpoints/last.ckpt", weights_only=True)
    assert ckpt["speechlm"]["config"] == {"model": "tiny"} and "rng_state" in ckpt
    assert not [p for p in (tmp_path / "killed/checkpoints").iterdir() if p.name.startswith(".")]
    assert (tmp_path / "straight/curves.png").stat().st_size > 1000


def test_average_checkpoints(data, tmp_path):
    assert tiny(data, tmp_path / "exp", 3).returncode == 0
    best = sorted(p for p in (tmp_path / "exp/checkpoints").glob("epoch=*.ckpt"))
    assert len(best) == 2
    out = average_checkpoints(best, tmp_path / "exp/model.avg.ckpt")
    avg = torch.load(out, weights_only=True)
    sds = [{k.removeprefix("model."): v for k, v in weights(p).items()} for p in best]
    for k, v in avg["state_dict"].items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (sds[0][k] + sds[1][k]) / 2)
    assert avg["speechlm"]["averaged_from"] == [str(p) for p in best]


def test_average_rejects_mismatched_models():
    with pytest.raises(ValueError, match="different parameters"):
        average_state_dicts([{"a": torch.ones(1)}, {"b": torch.ones(1)}])


def test_non_finite_loss_batches_are_skipped_and_counted(data):
    import lightning as L
    from functools import partial

    from speechlm.train.data_module import SpeechDataModule
    from speechlm.train.task import Task
    spec = importlib.util.spec_from_file_location("tiny_run", HERE / "tiny_run.py")
    tiny_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny_run)
    TinyCTC, encode = tiny_run.TinyCTC, tiny_run.encode

    class Poisoned(TinyCTC):
        calls = 0

        def forward(self, batch):
            out = super().forward(batch)
            Poisoned.calls += 1
            if Poisoned.calls % 2 == 0:
                out["loss"] = out["loss"] * float("nan")
            return out

    model = Poisoned()
    task = Task(model, partial(torch.optim.SGD, lr=0.1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, use_distributed_sampler=False, num_sanity_val_steps=0,
                        limit_val_batches=0, enable_model_summary=False)
    trainer.fit(task, SpeechDataModule(data, data, encode=encode, max_seconds=3.0))
    assert task.skipped_batches == Poisoned.calls // 2 >= 1
    after = model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_average_checkpoints_cli_picks_best_by_monitored_metric(data, tmp_path):
    from speechlm.bin.average_checkpoints import best_checkpoints, main

    assert tiny(data, tmp_path / "exp", 3).returncode == 0
    best = best_checkpoints(tmp_path / "exp", 1)
    scores = torch.load(tmp_path / "exp/checkpoints/last.ckpt", weights_only=True)["callbacks"]
    recorded = next(v for k, v in scores.items() if k.startswith("ModelCheckpoint"))["best_k_models"]
    assert str(best[0]) == min(recorded, key=lambda p: float(recorded[p]))  # valid/loss: lower is better
    assert main([str(tmp_path / "exp"), "--num", "2"]) == 0
    assert (tmp_path / "exp/model.avg.ckpt").is_file()
    # the ranking follows the criterion in the checkpoint's speechlm block, not a guess
    last = torch.load(tmp_path / "exp/checkpoints/last.ckpt", weights_only=True)
    assert last["speechlm"]["checkpoint_criterion"] == ["valid/loss", "min"]
    last["speechlm"]["checkpoint_criterion"] = ["valid/loss", "max"]
    torch.save(last, tmp_path / "exp/checkpoints/last.ckpt")
    assert str(best_checkpoints(tmp_path / "exp", 1)[0]) == max(recorded, key=lambda p: float(recorded[p]))
