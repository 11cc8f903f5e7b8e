"""Training survives what a long job on a cluster meets (issue 14): a SIGKILL mid-epoch or in
the middle of a checkpoint write, a corrupt last.ckpt, bad utterances in the training data,
a NaN or an exception on one DDP rank, and a re-run with a different setup."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fixtures import TINY_MODEL, make_data_dir, prepare_training, train_tiny, write_wav

TESTS = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS / "train"), str(TESTS),
                                                                  os.environ.get("PYTHONPATH")]))}
# several batches per epoch (2-3 utterances each), a worker process, dropout and SpecAugment on
RESUMABLE = ["data.max_seconds=2.5", "data.num_workers=1", "checkpoint.every_n_steps=1", "trainer.max_epochs=2"]


def log(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def weights(ckpt_path: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt_path, weights_only=True)["state_dict"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel")
    d = make_data_dir(root, speakers=("spkA", "spkB", "spkC"), per_speaker=4)
    # transcripts CTC can align on the shortest audio (0.5 s: 11 frames after x4 subsampling)
    text = d / "text"
    text.write_text("".join(f"{line.split()[0]} W{line.split()[0][-1]} {line.split()[0][3]}\n"
                            for line in text.read_text().splitlines()))
    prepare_training(root, d)
    return root, d


def run_in(root: Path, data: Path, name: str, *extra: str, env=ENV) -> tuple[subprocess.CompletedProcess, Path]:
    """train_tiny into root/name/exp, with root's tokenizer and CMVN stats."""
    run = root / name
    run.mkdir(exist_ok=True)
    for f in ("tok", "cmvn.npz"):
        if not (run / f).exists():
            (run / f).symlink_to(root / f)
    return train_tiny(run, data, *extra, env=env), run / "exp"


def test_sigkill_mid_epoch_resumes_to_bit_identical_weights(data):
    root, d = data
    ref, ref_exp = run_in(root, d, "uninterrupted", *RESUMABLE)
    assert ref.returncode == 0, ref.stderr[-3000:]
    steps = torch.load(ref_exp / "checkpoints/last.ckpt", weights_only=True)["global_step"]
    per_epoch = steps // 2
    assert per_epoch >= 4, "the test needs several batches per epoch"
    # a random step strictly inside epoch 0 or 1 (printed, to rerun a failure)
    kill_at = int(np.random.default_rng().choice([k for k in range(1, steps) if k % per_epoch]))
    print("killed at step", kill_at, "of", steps)
    killed, exp = run_in(root, d, f"killed{kill_at}", *RESUMABLE, "+callbacks.fault._target_=ddp_probe.PlantFault",
                         "+callbacks.fault.kind=kill", f"+callbacks.fault.step={kill_at}")
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    mid = torch.load(exp / "checkpoints/last.ckpt", weights_only=True)
    assert mid["global_step"] == kill_at and mid["global_step"] % per_epoch != 0
    resumed, exp = run_in(root, d, f"killed{kill_at}", *RESUMABLE)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {exp / 'checkpoints/last.ckpt'} (step {kill_at})" in log(resumed)
    final = torch.load(exp / "checkpoints/last.ckpt", weights_only=True)
    assert final["global_step"] == steps
    assert_same_weights(final["state_dict"], weights(ref_exp / "checkpoints/last.ckpt"))
    # the optimizer's moments too
    ref_opt = torch.load(ref_exp / "checkpoints/last.ckpt", weights_only=True)["optimizer_states"][0]["state"]
    for k, v in final["optimizer_states"][0]["state"].items():
        assert torch.equal(v["exp_avg"], ref_opt[k]["exp_avg"])


def test_sigkill_inside_checkpoint_write_keeps_previous_and_resumes(data):
    root, d = data
    run = root / "killsave"
    run.mkdir()
    for f in ("tok", "cmvn.npz"):
        (run / f).symlink_to(root / f)
    exp = run / "exp"
    cmd = [sys.executable, str(TESTS / "train/fault_run.py"), "4", f"data.train_dir={d}", f"data.valid_dir={d}",
           f"tokenizer_dir={run / 'tok'}", f"cmvn_stats={run / 'cmvn.npz'}", f"exp_dir={exp}", *TINY_MODEL, *RESUMABLE]
    killed = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    assert killed.returncode == -9, killed.stderr[-2000:]
    temps = list((exp / "checkpoints").glob(".*.tmp"))
    assert temps, "the planted fault should leave a half-written temporary file"
    before = torch.load(exp / "checkpoints/last.ckpt", weights_only=True)["global_step"]  # the previous one loads
    resumed, exp = run_in(root, d, "killsave", *RESUMABLE)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "removed" in log(resumed) and temps[0].name in log(resumed)
    assert not list((exp / "checkpoints").glob(".*.tmp"))
    assert f"(step {before})" in log(resumed)
    assert torch.load(exp / "checkpoints/last.ckpt", weights_only=True)["global_step"] > before


def test_corrupt_last_checkpoint_falls_back_to_newest_good_one(data):
    root, d = data
    first, exp = run_in(root, d, "corrupt", "trainer.max_epochs=1", "checkpoint.every_n_steps=2")
    assert first.returncode == 0, first.stderr[-3000:]
    last = exp / "checkpoints/last.ckpt"
    prev_step = torch.load(exp / "checkpoints/last.prev.ckpt", weights_only=True)["global_step"]
    step = torch.load(last, weights_only=True)["global_step"]
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])  # truncated
    second, exp = run_in(root, d, "corrupt", "trainer.max_epochs=2", "checkpoint.every_n_steps=2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"{last}: unreadable checkpoint" in log(second)
    # the epoch checkpoint written with last.ckpt at the epoch's end is the newest good one
    assert f"(step {step})" in log(second) and prev_step <= step
    assert torch.load(last, weights_only=True)["global_step"] == 2 * step


def test_resume_refuses_a_different_model_tokenizer_or_cmvn(data):
    root, d = data
    first, exp = run_in(root, d, "guard", "trainer.max_epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    changed_model, _ = run_in(root, d, "guard", "trainer.max_epochs=2", "encoder.linear_units=48")
    assert changed_model.returncode != 0
    assert "refusing to resume" in log(changed_model)
    assert "model.encoder.linear_units: 64 -> 48" in log(changed_model)
    # other CMVN statistics (same path, other content)
    cmvn = root / "guard" / "cmvn.npz"
    cmvn.unlink()
    stats = dict(np.load(root / "cmvn.npz"))
    stats = {k: v * 1.5 if v.dtype.kind == "f" else v for k, v in stats.items()}
    np.savez(cmvn, **stats)
    changed_cmvn, _ = run_in(root, d, "guard", "trainer.max_epochs=2")
    assert changed_cmvn.returncode != 0 and "cmvn_stats: file content differs" in log(changed_cmvn)
    forced, _ = run_in(root, d, "guard", "trainer.max_epochs=2", "resume=force")
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert "resuming with a change" in log(forced)
    # a longer run (trainer options) resumes with only a warning
    longer, _ = run_in(root, d, "guard", "trainer.max_epochs=3", "resume=force")
    assert longer.returncode == 0


def plant_bad_utterances(root: Path, clean: Path) -> tuple[Path, dict[str, str]]:
    """A copy of `clean` with five bad utterances added: zero-length, all-silent and truncated
    audio, a transcript too long for its frames, one of only unknown characters."""
    d = root / "bad_data"
    d.mkdir()
    rows = {f: dict(line.split(maxsplit=1) for line in (clean / f).read_text().splitlines())
            for f in ("wav.scp", "text", "utt2spk", "utt2dur")}
    # clean transcripts short enough for CTC on the shortest clean audio (0.5 s: 11 frames)
    rows["text"] = {u: f"WORD{u[-1]}" for u in rows["text"]}
    wav = root / "bad_wav"
    wav.mkdir()
    sf.write(wav / "zero.wav", np.zeros(0, np.float32), 16000)
    sf.write(wav / "silent.wav", np.zeros(16000, np.float32), 16000)
    full = write_wav(wav / "full.wav", 2.0, seed=99)
    data = full.read_bytes()
    (wav / "trunc.wav").write_bytes(data[: len(data) // 3])  # header says 2 s
    write_wav(wav / "long.wav", 0.3, seed=98)
    write_wav(wav / "unk.wav", 1.0, seed=97)
    bad = {"bad-zero": ("zero.wav", "ONE", 0.0, "zero-length audio"),
           "bad-silent": ("silent.wav", "ONE", 1.0, "all silence"),
           "bad-trunc": ("trunc.wav", "ONE TWO", 2.0, "truncated audio"),
           "bad-long": ("long.wav", " ".join(["ABCDEFGHIJ"] * 6), 0.3, "transcript longer than the model can emit"),
           "bad-unk": ("unk.wav", "ÄÖÜ", 1.0, "only unknown tokens")}
    for utt, (f, text, dur, _) in bad.items():
        rows["wav.scp"][utt] = str(wav / f)
        rows["text"][utt] = text
        rows["utt2spk"][utt] = "bad"
        rows["utt2dur"][utt] = f"{dur:.3f}"
    for f, table in rows.items():
        (d / f).write_text("".join(f"{k} {v}\n" for k, v in sorted(table.items())))
    spk2utt: dict[str, list[str]] = {}
    for u, s in sorted(rows["utt2spk"].items()):
        spk2utt.setdefault(s, []).append(u)
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk2utt.items())))
    return d, {u: why for u, (*_, why) in bad.items()}


def test_bad_utterances_are_named_and_not_trained_on(data):
    root, clean = data
    d, bad = plant_bad_utterances(root, clean)
    n_clean = len((clean / "text").read_text().splitlines())
    proc, exp = run_in(root, d, "baddata", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = dict(line.split(" ", 1) for line in (exp / "bad_utterances").read_text().splitlines())
    assert listed.keys() == bad.keys()
    for utt, why in bad.items():
        assert why in listed[utt], (utt, listed[utt])
    assert f"trained on {2 * n_clean} utterances (summed over epochs); {2 * len(bad)} left out" in log(proc)
    assert "5 training utterances were left out" in log(proc)
    # with bad_utterances=error the first one stops training, named
    strict, _ = run_in(root, d, "baddata_strict", "trainer.max_epochs=1", "data.bad_utterances=error")
    assert strict.returncode != 0 and "utterance 'bad-" in log(strict)


def test_ctc_flags_targets_longer_than_frames():
    from speechlm.models.ctc import CTC

    ctc = CTC(vocab_size=5, encoder_output_size=4)
    hs = torch.randn(3, 6, 4)
    hlens = torch.tensor([6, 6, 3])
    ys = torch.tensor([[1, 2, 3, -1, -1, -1], [1, 1, 1, 1, -1, -1], [1, 2, 3, 4, -1, -1]])
    ys_lens = torch.tensor([3, 4, 4])
    ctc(hs, hlens, ys, ys_lens)
    # 3 tokens in 6 frames: fine; 4 equal tokens need 7 frames (blanks between repeats); 4 in 3: no
    assert ctc.last_infeasible.tolist() == [False, True, True]


TINY_DDP = ["trainer.devices=2", "trainer.strategy=ddp", "data.max_seconds=3"]


def test_ddp_nan_on_one_rank_skips_the_step_on_both(data):
    root, d = data
    probe = root / "nan_probe"
    proc, exp = run_in(root, d, "ddp_nan", "trainer.max_epochs=1", *TINY_DDP,
                       "+callbacks.fault._target_=ddp_probe.PlantFault", "+callbacks.fault.kind=nan_loss",
                       "+callbacks.fault.step=1", "+callbacks.fault.rank=1",
                       "+callbacks.probe._target_=ddp_probe.RecordBatches", f"+callbacks.probe.out_dir={probe}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights"] == ranks[1]["weights"], "ranks diverged"
    rank0, rank1 = (exp / "train.log").read_text(), (exp / "train_ddp_process_1.log").read_text()
    assert rank1.count("step skipped") == 1 and ": non-finite loss; step skipped (1 so far)" in rank1
    assert rank0.count("step skipped") == 1 and "a non-finite loss on another rank; step skipped (1 so far)" in rank0
    ckpt = torch.load(exp / "checkpoints/last.ckpt", weights_only=True)
    assert ckpt["speechlm"]["skipped_batches"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_ddp_rank_that_raises_ends_the_run_nonzero_quickly(data):
    root, d = data
    start = time.monotonic()
    proc, exp = run_in(root, d, "ddp_raise", "trainer.max_epochs=3", *TINY_DDP,
                       "+callbacks.fault._target_=ddp_probe.PlantFault", "+callbacks.fault.kind=raise",
                       "+callbacks.fault.step=2", "+callbacks.fault.rank=1")
    assert proc.returncode != 0
    assert time.monotonic() - start < 120  # process start-up included; the hang would be gloo's 30 min
    assert "planted fault on rank 1" in log(proc)
    assert not (exp / "checkpoints/last.ckpt").exists(), "a checkpoint was written after a rank failed"


class _Draw:
    def __call__(self, item: dict) -> dict:
        item["draw"] = float(torch.rand(()))
        return item


def test_item_random_draws_depend_on_seed_epoch_and_index_only(tmp_path):
    """What lets a resumed run (or another worker) draw the same transform choices."""
    from speechlm.data.dataset import AudioDataset

    ds = AudioDataset(make_data_dir(tmp_path), transforms=[_Draw()], seed=3)
    first = ds[(2, 1)]["draw"]
    torch.rand(7)  # the caller's generator moved on: no matter
    assert ds[(2, 1)]["draw"] == first
    assert len({first, ds[(2, 2)]["draw"], ds[(1, 1)]["draw"],
                AudioDataset(ds.dd, transforms=[_Draw()], seed=4)[(2, 1)]["draw"]}) == 4
    torch.manual_seed(0)
    expected = torch.rand(())
    torch.manual_seed(0)
    ds[(2, 1)]
    assert torch.rand(()) == expected, "loading an item must not move the caller's generator"
