"""Data-parallel training on CPU: `python -m speechlm.bin.train trainer.devices=2
trainer.strategy=ddp` (gloo) runs two ranks; in every epoch each rank trains on a disjoint
shard and together they cover the training set exactly once; gradients are all-reduced, so
both ranks end with the same weights; rank 0 writes the checkpoint."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from fixtures import make_data_dir, prepare_training, train_tiny

TESTS = Path(__file__).resolve().parents[1]


def test_ddp_ranks_train_disjoint_shards_to_equal_weights(tmp_path):
    data = make_data_dir(tmp_path, speakers=("spkA", "spkB", "spkC"), per_speaker=4)
    utts = {line.split()[0] for line in (data / "text").read_text().splitlines()}
    prepare_training(tmp_path, data)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS / "train"), os.environ.get("PYTHONPATH")]))}
    probe = tmp_path / "probe"
    proc = train_tiny(tmp_path, data, "trainer.max_epochs=2", "trainer.devices=2", "trainer.strategy=ddp",
                      "data.max_seconds=3", "+callbacks.probe._target_=ddp_probe.RecordBatches",
                      f"+callbacks.probe.out_dir={probe}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["global_step"] == ranks[1]["global_step"] > 0
    for epoch in ("0", "1"):
        a, b = ranks[0]["seen"][epoch], ranks[1]["seen"][epoch]
        assert len(a) == len(set(a)) and len(b) == len(set(b)), "an utterance twice on one rank"
        assert not set(a) & set(b), f"epoch {epoch}: ranks share utterances"
        assert set(a) | set(b) == utts, f"epoch {epoch}: the shards do not cover the training set"
    assert ranks[0]["weights"] == ranks[1]["weights"], "ranks diverged: gradients were not all-reduced"
    ckpt = torch.load(tmp_path / "exp/checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == ranks[0]["global_step"]
