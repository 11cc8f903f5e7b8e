"""Training from shards (`data=shards`): a 2-process gloo DDP run of speechlm.bin.train
trains on every utterance exactly once in the epoch (the ranks' trained-utterance counts sum
to the number of utterances) although one rank has fewer batches (padding batches keep the
ranks in step and their weights equal), and a run killed mid-epoch resumes from its
checkpoint to the same weights as an uninterrupted one."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures import TINY_MODEL, make_data_dir, prepare_training
from speechlm.bin.export_shards import main as export_main
from speechlm.data.shards import ShardIndex, ShardItems, ShardStream

TESTS = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS / "train"), str(TESTS),
                                                                  os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard_train")
    data = make_data_dir(root, speakers=("spkA", "spkB", "spkC"), per_speaker=4)
    # one-word transcripts: CTC can align them on the shortest audio (0.5 s: 11 frames), so
    # no utterance is left out as unalignable and the trained counts are the whole set
    utts = (data / "utt2spk").read_text().split()[::2]
    (data / "text").write_text("".join(f"{u} W{u[-1]}\n" for u in utts))
    prepare_training(root, data)
    # shards of 5, 5 and 2 utterances: one rank gets 7, the other 5
    assert export_main([str(data), str(root / "shards"), "--max-count", "5"]) == 0
    return root, data, root / "shards"


def shard_run(root: Path, data: Path, shards: Path, name: str, *extra: str):
    run = root / name
    run.mkdir(exist_ok=True)
    for f in ("tok", "cmvn.npz"):
        if not (run / f).exists():
            (run / f).symlink_to(root / f)
    cmd = [sys.executable, "-m", "speechlm.bin.train", "data=shards", f"data.train_shards={shards}",
           f"tokenizer_dir={run / 'tok'}", f"cmvn_stats={run / 'cmvn.npz'}", f"exp_dir={run / 'exp'}", *TINY_MODEL, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV), run / "exp"


def test_ddp_from_shards_trains_every_utterance_once(prepared):
    root, data, shards = prepared
    utts = set(ShardIndex.load(shards).durations())
    # what the run's loaders will do (the plan is a function of the index): one rank pads
    plans = [ShardStream(ShardItems(ShardIndex.load(shards)), max_seconds=3, rank=r, world_size=2).batch_order()
             for r in (0, 1)]
    assert len(plans[0]) == len(plans[1]) and sum(b == [] for p in plans for b in p) > 0
    probe = root / "ddp_probe"
    proc, exp = shard_run(root, data, shards, "ddp", f"data.valid_shards={shards}", "trainer.max_epochs=1",
                          "trainer.devices=2", "trainer.strategy=ddp", "data.max_seconds=3", "data.num_workers=1",
                          "+callbacks.probe._target_=ddp_probe.RecordBatches", f"+callbacks.probe.out_dir={probe}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = (exp / "train.log").read_text() + (exp / "train_ddp_process_1.log").read_text()
    counts = [int(n) for n in re.findall(r"trained on (\d+) utterances", logs)]
    assert len(counts) == 2 and sum(counts) == len(utts), counts
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    a, b = ranks[0]["seen"]["0"], ranks[1]["seen"]["0"]
    assert sorted(a + b) == sorted(utts), "an utterance missing or trained twice"
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == len(plans[0])
    assert ranks[0]["weights"] == ranks[1]["weights"], "ranks diverged"


def test_killed_mid_epoch_resumes_from_shards_to_the_same_weights(prepared):
    root, data, shards = prepared
    common = ["data.max_seconds=2.5", "data.num_workers=1", "checkpoint.every_n_steps=1", "trainer.max_epochs=2",
              f"data.valid_shards={data}"]  # validation from the data dir
    ref, ref_exp = shard_run(root, data, shards, "uninterrupted", *common)
    assert ref.returncode == 0, ref.stderr[-3000:]
    steps = torch.load(ref_exp / "checkpoints/last.ckpt", weights_only=True)["global_step"]
    per_epoch = steps // 2
    assert per_epoch >= 4
    kill_at = int(np.random.default_rng().choice([k for k in range(per_epoch + 1, steps)]))
    print("killed at step", kill_at, "of", steps)
    killed, exp = shard_run(root, data, shards, f"killed{kill_at}", *common,
                            "+callbacks.fault._target_=ddp_probe.PlantFault", "+callbacks.fault.kind=kill",
                            f"+callbacks.fault.step={kill_at}")
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed, exp = shard_run(root, data, shards, f"killed{kill_at}", *common)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"(step {kill_at})" in resumed.stdout + resumed.stderr
    final = torch.load(exp / "checkpoints/last.ckpt", weights_only=True)
    reference = torch.load(ref_exp / "checkpoints/last.ckpt", weights_only=True)
    assert final["global_step"] == steps
    differ = [k for k in reference["state_dict"] if not torch.equal(final["state_dict"][k], reference["state_dict"][k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
    assert final["speechlm"]["trained_utterances"] == reference["speechlm"]["trained_utterances"]
