"""dump_features: MFCC + deltas exactly as torchaudio computes them (fairseq's HuBERT
iteration 1), an encoder layer of a checkpoint exactly as the encoder gives it, whatever the
batching; frame counts that match feats.npy; --percent subsets; unreadable audio reported
by utterance while the rest is dumped."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchaudio

from speechlm.bin.dump_features import main as dump_main
from speechlm.bin.dump_features import select_utterances
from speechlm.data.dataset import load_utterance
from speechlm.data.kaldi_dir import DataDir, read_table
from speechlm.models.build import build_model
from speechlm.models.encode import encode_speech
from speechlm.train.pretrained import load_pretrained


def dumped(out):
    feats = np.load(out / "feats.npy", allow_pickle=False)
    num_frames = {u: int(n) for u, n in read_table(out / "utt2num_frames").items()}
    assert feats.dtype == np.float32 and sum(num_frames.values()) == len(feats)
    offsets = np.cumsum([0, *num_frames.values()])
    return {u: feats[offsets[i] : offsets[i + 1]] for i, u in enumerate(num_frames)}, json.loads(
        (out / "info.json").read_text())


def test_mfcc_equals_torchaudio_mfcc_with_deltas(data_dir, tmp_path):
    assert dump_main([str(data_dir), str(tmp_path / "mfcc"), "--mfcc"]) == 0
    feats, info = dumped(tmp_path / "mfcc")
    dd = DataDir.load(data_dir)
    assert list(feats) == dd.utterances  # every utterance, in the data dir's order
    for utt, got in feats.items():
        audio, sr = load_utterance(dd, utt, 16000)
        mfcc = torchaudio.compliance.kaldi.mfcc(audio[None], sample_frequency=sr, use_energy=False).T
        deltas = torchaudio.functional.compute_deltas(mfcc)
        want = torch.cat([mfcc, deltas, torchaudio.functional.compute_deltas(deltas)]).T
        assert got.shape == (1 + (len(audio) - 400) // 160, 39)
        np.testing.assert_array_equal(got, want.numpy())
    assert info["source"] == "mfcc" and info["layer"] is None
    assert (info["dims"], info["frame_rate"], info["frames"], info["utterances"]) == (39, 100, sum(map(len, feats.values())), 6)


def test_percent_picks_the_same_subset_for_a_seed(data_dir, tmp_path):
    assert dump_main([str(data_dir), str(tmp_path / "all"), "--mfcc"]) == 0
    assert dump_main([str(data_dir), str(tmp_path / "half"), "--mfcc", "--percent", "50", "--seed", "3"]) == 0
    full, _ = dumped(tmp_path / "all")
    half, info = dumped(tmp_path / "half")
    assert len(half) == 3 and info["percent"] == 50 and info["seed"] == 3
    assert list(half) == select_utterances(list(full), 50, 3)
    for utt, rows in half.items():
        np.testing.assert_array_equal(rows, full[utt])
    assert select_utterances(list(full), 50, 3) == select_utterances(list(full), 50, 3)
    assert len(select_utterances(list(full), 10, 0)) == 1  # rounded up: never empty


def test_unreadable_audio_is_reported_and_the_rest_dumped(data_dir, tmp_path, capsys):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF not really a wav file")
    dd = DataDir.load(data_dir)
    bad = DataDir(wav_scp={**dd.wav_scp, "spkA-bad": str(garbage), "spkB-gone": str(tmp_path / "missing.wav")},
                  utt2spk={**dd.utt2spk, "spkA-bad": "spkA", "spkB-gone": "spkB"}).save(tmp_path / "bad")
    assert dump_main([str(bad), str(tmp_path / "out"), "--mfcc", "--max-seconds", "1"]) == 1
    err = capsys.readouterr().err
    assert "error: spkA-bad:" in err and "error: spkB-gone:" in err and "2 of 8 utterance(s) failed" in err
    feats, info = dumped(tmp_path / "out")
    assert list(feats) == dd.utterances and info["utterances"] == 6


def test_nothing_readable_writes_nothing(tmp_path, capsys):
    DataDir(wav_scp={"u1": str(tmp_path / "missing.wav")}, utt2spk={"u1": "s"}).save(tmp_path / "data")
    assert dump_main([str(tmp_path / "data"), str(tmp_path / "out"), "--mfcc"]) == 1
    assert "nothing written" in capsys.readouterr().err
    assert not (tmp_path / "out" / "feats.npy").exists() and not list((tmp_path / "out").glob(".*tmp"))


CONFIG = {
    "model": {"_target_": "speechlm.models.ctc_attention.CTCAttentionModel", "vocab_size": 5, "ctc_weight": 1.0,
              "encoder": {"_target_": "speechlm.encoders.conformer.ConformerEncoder", "input_size": 23,
                          "output_size": 16, "attention_heads": 2, "linear_units": 16, "num_blocks": 2,
                          "cnn_module_kernel": 7},
              "frontend": {"_target_": "speechlm.features.Fbank", "sample_rate": 16000, "n_mels": 23},
              "normalize": {"_target_": "speechlm.features.GlobalCMVN.empty", "dim": 23}},
    "frontend": {"_target_": "speechlm.features.Fbank", "sample_rate": 16000, "n_mels": 23},
}


@pytest.fixture
def checkpoint(tmp_path):
    """A randomly initialised 2-block Conformer CTC model with CMVN statistics, saved as a
    speechlm checkpoint (what training writes: state_dict + config; no training needed)."""
    torch.manual_seed(0)
    model = build_model(CONFIG["model"], initialize=False)
    model.normalize.mean.copy_(torch.linspace(-12.0, -4.0, 23))
    model.normalize.std.copy_(torch.linspace(1.0, 3.0, 23))
    path = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": model.state_dict(), "speechlm": {"config": CONFIG, "tokenizer": None}}, path)
    return path


def test_layer_dump_equals_the_encoder_called_directly(data_dir, tmp_path, checkpoint, capsys):
    one_by_one, batched = tmp_path / "l1_single", tmp_path / "l1_batched"
    assert dump_main([str(data_dir), str(one_by_one), "--model", str(checkpoint), "--layer", "1",
                      "--max-seconds", "0.1"]) == 0
    assert dump_main([str(data_dir), str(batched), "--model", str(checkpoint), "--layer", "1"]) == 0
    assert (one_by_one / "feats.npy").read_bytes() == (batched / "feats.npy").read_bytes()
    feats, info = dumped(batched)
    assert (info["source"], info["layer"], info["dims"], info["frame_rate"]) == (str(checkpoint), 1, 16, 25)

    model, _, _ = load_pretrained(checkpoint)
    dd = DataDir.load(data_dir)
    with torch.no_grad():
        for utt, got in feats.items():
            audio, _ = load_utterance(dd, utt, 16000)
            x, lens = model.frontend(audio[None], torch.tensor([len(audio)]))
            x, lens = model.normalize(x, lens)
            out = model.encoder(x, lens, return_layers=[1])
            want = out.intermediate[1][0, : int(out.lengths[0])]
            assert not torch.equal(want, out.output[0, : int(out.lengths[0])])  # layer 1 of 2, not the output
            torch.testing.assert_close(torch.from_numpy(got), want, rtol=0, atol=0)

        # Why each utterance is encoded alone: in a padded batch a Conformer's output for the
        # shorter utterance differs (ESPnet's subsampling length rule and the convolutions).
        utts = dd.utterances[:2]
        audios = [load_utterance(dd, u, 16000)[0] for u in utts]
        lens = torch.tensor([len(a) for a in audios])
        padded = torch.nn.utils.rnn.pad_sequence(audios, batch_first=True)
        out = encode_speech(model.encoder, padded, lens, model.frontend, model.normalize, layers=[1])
        short = int(lens.argmin())
        n = min(int(out.lengths[short]), len(feats[utts[short]]))
        assert not torch.allclose(out.intermediate[1][short, :n], torch.from_numpy(feats[utts[short]][:n]), atol=1e-4)

    capsys.readouterr()
    assert dump_main([str(data_dir), str(tmp_path / "l3"), "--model", str(checkpoint), "--layer", "3"]) == 1
    assert "the encoder has no layer 3" in capsys.readouterr().err


def test_command_line(data_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "speechlm.bin.dump_features", str(data_dir), str(tmp_path / "out"),
                           "--mfcc", "--percent", "50"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "frames of dim 39 (100 Hz) from 3 utterances" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "speechlm.bin.dump_features", str(data_dir), str(tmp_path / "x"),
                           "--model", "m.ckpt"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--model needs --layer" in proc.stderr
