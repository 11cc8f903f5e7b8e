"""`python -m speechlm.bin.transcribe`: path<TAB>text per file in the order given, any
sample rate and channel count, an error line per unreadable file, exit status 1 if any
failed; texts equal `speechlm.bin.decode`'s for the same audio and search."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from fixtures import make_data_dir, prepare_training, train_tiny
from speechlm.bin.decode import decode_data_dir
from speechlm.bin.transcribe import batches, load_mono
from speechlm.bin.transcribe import main as transcribe_main
from speechlm.data.audio import AudioReadError, resample


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transcribe")
    data = make_data_dir(tmp, speakers=("spkA", "spkB"), per_speaker=3)
    prepare_training(tmp, data)
    proc = train_tiny(tmp, data, "trainer.max_epochs=2", "optim.optimizer.lr=5e-3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "exp/checkpoints/last.ckpt", data


def test_transcribe_matches_decode_and_reports_bad_files(trained, tmp_path, capsys):
    ckpt, data = trained
    wavs = [line.split(maxsplit=1) for line in (data / "wav.scp").read_text().splitlines()]
    # decode.py's search over the data dir, one utterance per batch (padding changes the
    # Conformer's conv module output slightly, so both sides decode files alone)
    search = {"_target_": "speechlm.search.joint_beam.JointCTCAttentionSearch", "beam_size": 3, "ctc_weight": 0.3}
    expected = decode_data_dir(OmegaConf.create(dict(checkpoint=str(ckpt), device="cpu", data_dir=str(data),
                                                     batch_seconds=0.01, out_dir=str(tmp_path / "dec"), search=search)))
    assert any(expected.values()), "a model that says nothing would make this comparison vacuous"

    missing, garbage = tmp_path / "missing.wav", tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF not really a wav file")
    files = [wavs[0][1], str(missing), *[w for _, w in wavs[1:]], str(garbage)]
    rc = transcribe_main(["--model", str(ckpt), "--beam-size", "3", "--batch-seconds", "0.01", *files])
    out, err = capsys.readouterr()
    assert rc == 1
    lines = [line.split("\t") for line in out.splitlines()]
    assert [p for p, _ in lines] == [w for _, w in wavs]  # input order, bad files left out
    assert {p: t for p, t in lines} == {w: expected[u] for u, w in wavs}
    assert f"error: {missing}:" in err and f"error: {garbage}:" in err
    assert "2 of 8 file(s) failed" in err


def test_transcribe_batched_run_and_exit_status(trained):
    ckpt, data = trained
    wavs = [line.split(maxsplit=1)[1] for line in (data / "wav.scp").read_text().splitlines()]
    proc = subprocess.run([sys.executable, "-m", "speechlm.bin.transcribe", "--model", str(ckpt), "--search",
                           "ctc_greedy", *wavs], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == wavs


def test_load_mono_resamples_and_mixes_down(tmp_path):
    rng = np.random.default_rng(0)
    left, right = rng.uniform(-0.5, 0.5, (2, 8000)).astype(np.float32)
    sf.write(tmp_path / "stereo8k.flac", np.stack([left, right], 1), 8000, subtype="PCM_24")
    got = load_mono(str(tmp_path / "stereo8k.flac"), 16000)
    want = resample(torch.from_numpy((left + right) / 2), 8000, 16000)
    assert got.shape == (16000,)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    sf.write(tmp_path / "cd.wav", left, 44100)
    assert load_mono(str(tmp_path / "cd.wav"), 16000).shape == (math.ceil(8000 * 16000 / 44100),)  # torchaudio rounds up
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioReadError, match="no samples"):
        load_mono(str(tmp_path / "empty.wav"), 16000)


def test_batches_sort_by_duration_within_budget():
    durations = {0: 3.0, 1: 1.0, 2: 2.0, 3: 9.0, 4: 1.5}
    assert batches(durations, batch_seconds=6.0) == [[1, 4, 2], [0], [3]]  # 2.0 s x 3 = 6 s padded
    assert batches(durations, batch_seconds=5.9) == [[1, 4], [2], [0], [3]]
