"""compute_cmvn: stats equal those of features computed utterance by utterance."""
from __future__ import annotations

import numpy as np
import torchaudio

from speechlm.bin.compute_cmvn import main as cmvn_main
from speechlm.data.dataset import AudioDataset
from speechlm.features import CMVNStats, GlobalCMVN


def test_stats_match_per_utterance_torchaudio_features(data_dir, tmp_path):
    out = tmp_path / "cmvn.npz"
    assert cmvn_main([str(data_dir), str(out), "--n-mels", "40", "--max-seconds", "2"]) == 0
    stats = CMVNStats.load(out)
    ds = AudioDataset(data_dir)
    frames = np.concatenate([
        torchaudio.compliance.kaldi.fbank(ds[i]["audio"][None], num_mel_bins=40, dither=0.0).numpy()
        for i in range(len(ds))])
    assert stats.count == len(frames)
    np.testing.assert_allclose(stats.mean(), frames.mean(0), atol=1e-3)
    np.testing.assert_allclose(stats.std(), frames.std(0), rtol=1e-3)
    assert GlobalCMVN.from_stats_file(out).mean.shape == (40,)


def test_frontend_yaml(data_dir, tmp_path):
    (tmp_path / "fbank.yaml").write_text("_target_: speechlm.features.Fbank\nsample_rate: 8000\nn_mels: 23\n")
    out = tmp_path / "cmvn.npz"
    assert cmvn_main([str(data_dir), str(out), "--frontend", str(tmp_path / "fbank.yaml")]) == 0
    assert CMVNStats.load(out).dim == 23


def test_training_config_frontend(data_dir, tmp_path):
    """The statistics of the features the training config's frontend makes (what asr.sh
    does with the recipe's experiment), not of a default fbank."""
    ours = tmp_path / "train_cfg.npz"
    assert cmvn_main([str(data_dir), str(ours), "frontend=espnet_logmel", "frontend.n_mels=40", "--max-seconds", "2"]) == 0
    (tmp_path / "logmel.yaml").write_text("_target_: speechlm.features.LogMelFbank\nn_mels: 40\n")
    direct = tmp_path / "direct.npz"
    assert cmvn_main([str(data_dir), str(direct), "--frontend", str(tmp_path / "logmel.yaml"), "--max-seconds", "2"]) == 0
    a, b = CMVNStats.load(ours), CMVNStats.load(direct)
    assert a.dim == 40 and a.count == b.count
    np.testing.assert_allclose(a.sum, b.sum, rtol=1e-6)
    fbank = tmp_path / "fbank.npz"
    assert cmvn_main([str(data_dir), str(fbank), "--n-mels", "40", "--max-seconds", "2"]) == 0
    assert not np.allclose(CMVNStats.load(fbank).mean(), a.mean(), atol=0.1)  # another feature
