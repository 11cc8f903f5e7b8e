"""kmeans learn / apply: the centroids are scikit-learn MiniBatchKMeans's with fairseq's
HuBERT settings, saved as plain arrays; the labels are the fitted model's `predict`; a
planted structure (a tone vs noise) is found; the `km` table loads through AudioDataset
as LongTensor targets padded with `km_lens`."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from sklearn.cluster import MiniBatchKMeans

from speechlm.bin.dump_features import main as dump_main
from speechlm.bin.kmeans import main as kmeans_main
from speechlm.bin.kmeans import nearest_centroid, usage
from speechlm.data.collate import collate_audio
from speechlm.data.dataset import AudioDataset
from speechlm.data.kaldi_dir import DataDir, read_table


def labels_of(table_path) -> dict[str, list[int]]:
    return {u: [int(x) for x in v.split()] for u, v in read_table(table_path).items()}


@pytest.fixture
def mfcc(data_dir, tmp_path):
    assert dump_main([str(data_dir), str(tmp_path / "mfcc"), "--mfcc"]) == 0
    return tmp_path / "mfcc"


def test_learn_is_minibatch_kmeans_and_apply_is_its_predict(data_dir, mfcc, tmp_path, capsys):
    feats = np.load(mfcc / "feats.npy")
    settings = ["--batch-size", "128", "--n-init", "3", "--max-iter", "20", "--seed", "7"]
    assert kmeans_main(["learn", str(mfcc), str(tmp_path / "km"), "--clusters", "12", *settings]) == 0
    km = MiniBatchKMeans(n_clusters=12, init="k-means++", max_iter=20, batch_size=128, tol=0.0,
                         max_no_improvement=100, n_init=3, reassignment_ratio=0.0, compute_labels=False,
                         random_state=7).fit(feats)
    centroids = np.load(tmp_path / "km" / "centroids.npy", allow_pickle=False)  # plain data, no pickle
    np.testing.assert_array_equal(centroids, km.cluster_centers_)
    info = json.loads((tmp_path / "km" / "info.json").read_text())
    assert (info["k"], info["dims"], info["frames"]) == (12, 39, len(feats))
    assert info["inertia"] == pytest.approx(-km.score(feats), rel=1e-5)
    assert info["features"]["source"] == "mfcc" and info["settings"]["n_init"] == 3

    capsys.readouterr()
    assert kmeans_main(["apply", str(mfcc), str(tmp_path / "km"), str(data_dir), "--chunk-frames", "100"]) == 0
    err = capsys.readouterr().err
    table = labels_of(data_dir / "km")
    num_frames = {u: int(n) for u, n in read_table(mfcc / "utt2num_frames").items()}
    assert list(table) == DataDir.load(data_dir).utterances  # one line per utterance, the dir's order
    assert {u: len(v) for u, v in table.items()} == num_frames
    flat = np.concatenate([table[u] for u in num_frames])
    np.testing.assert_array_equal(flat, km.predict(feats))
    assert flat.min() >= 0 and flat.max() < 12
    used, perplexity = usage(np.bincount(flat, minlength=12))
    assert f"{len(feats)} frames of 6 utterances; {used} of 12 clusters used, perplexity {perplexity:.1f}" in err


def test_nearest_centroid_in_chunks_equals_predict():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((3000, 20)).astype(np.float32)
    km = MiniBatchKMeans(n_clusters=30, n_init=1, random_state=0, batch_size=512).fit(feats)
    got = nearest_centroid(feats, torch.from_numpy(km.cluster_centers_), chunk_frames=700)
    np.testing.assert_array_equal(got, km.predict(feats))


def test_km_table_loads_as_long_targets(data_dir, mfcc, tmp_path):
    assert kmeans_main(["learn", str(mfcc), str(tmp_path / "km"), "--clusters", "5", "--n-init", "2"]) == 0
    assert kmeans_main(["apply", str(mfcc), str(tmp_path / "km"), str(data_dir)]) == 0
    table = labels_of(data_dir / "km")
    ds = AudioDataset(data_dir, tables={"km": "km"})
    items = [ds[i] for i in range(len(ds))]
    for item in items:
        assert item["km"].dtype == torch.long and item["km"].tolist() == table[item["id"]]
    batch = collate_audio(items)
    assert batch["km_lens"].tolist() == [len(table[i["id"]]) for i in items]
    assert batch["km"].shape == (len(items), max(batch["km_lens"].tolist()))


def write_dir(root, signals: dict[str, np.ndarray], sr: int = 16000):
    """root/data over root/UTT.wav files of the signals."""
    root.mkdir(parents=True, exist_ok=True)
    for utt, x in signals.items():
        sf.write(root / f"{utt}.wav", x.astype(np.float32), sr, subtype="PCM_16")
    return DataDir(wav_scp={u: str(root / f"{u}.wav") for u in signals},
                   utt2spk={u: u.split("-")[0] for u in signals}).save(root / "data")


def test_two_separated_sounds_get_disjoint_clusters(tmp_path):
    """Planted structure: a 300 Hz tone and white noise, three recordings each; with more
    clusters than sounds, no cluster holds frames of both."""
    rng = np.random.default_rng(0)
    sr, signals = 16000, {}
    for i in range(3):
        t = np.arange(int(sr * (1.0 + 0.3 * i))) / sr
        signals[f"tone-{i}"] = 0.3 * np.sin(2 * np.pi * 300 * t + rng.uniform(0, 2 * np.pi))
        signals[f"noise-{i}"] = 0.1 * rng.standard_normal(int(sr * (1.2 + 0.3 * i)))
    data = write_dir(tmp_path, signals, sr)
    assert dump_main([str(data), str(tmp_path / "mfcc"), "--mfcc"]) == 0
    assert kmeans_main(["learn", str(tmp_path / "mfcc"), str(tmp_path / "km"), "--clusters", "4",
                        "--n-init", "3"]) == 0
    assert kmeans_main(["apply", str(tmp_path / "mfcc"), str(tmp_path / "km"), str(data)]) == 0
    table = labels_of(data / "km")
    tone = {c for u, v in table.items() if u.startswith("tone") for c in v}
    noise = {c for u, v in table.items() if u.startswith("noise") for c in v}
    assert tone and noise and not tone & noise


def test_apply_checks_what_it_labels(data_dir, mfcc, tmp_path, capsys):
    assert kmeans_main(["learn", str(mfcc), str(tmp_path / "km"), "--clusters", "4", "--n-init", "1"]) == 0
    # any other directory: the table is written there under --table
    assert kmeans_main(["apply", str(mfcc), str(tmp_path / "km"), str(tmp_path / "labels"), "--table", "km.x"]) == 0
    assert len(labels_of(tmp_path / "labels" / "km.x")) == 6
    # features of a subset: the data dir's table lacks the others, and the exit status says so
    assert dump_main([str(data_dir), str(tmp_path / "half"), "--mfcc", "--percent", "50"]) == 0
    capsys.readouterr()
    assert kmeans_main(["apply", str(tmp_path / "half"), str(tmp_path / "km"), str(data_dir)]) == 1
    assert "3 utterance(s) of" in capsys.readouterr().err and len(labels_of(data_dir / "km")) == 3
    # features of utterances the data dir does not have: nothing written
    other = write_dir(tmp_path / "other", {"x-1": np.zeros(8000)})
    assert kmeans_main(["apply", str(mfcc), str(tmp_path / "km"), str(other)]) == 1
    assert "that data dir" in capsys.readouterr().err and not (other / "km").exists()
    # centroids of other features
    (tmp_path / "fake").mkdir()
    np.save(tmp_path / "fake" / "centroids.npy", np.zeros((4, 39), np.float32))
    (tmp_path / "fake" / "info.json").write_text(json.dumps({"features": {"source": "m.ckpt", "layer": 6}}))
    assert kmeans_main(["apply", str(mfcc), str(tmp_path / "fake"), str(tmp_path / "labels")]) == 1
    assert "learnt on features with layer 6" in capsys.readouterr().err
    assert kmeans_main(["learn", str(mfcc), str(tmp_path / "km2"), "--clusters", "100000"]) == 1
    assert "frames for 100000 clusters" in capsys.readouterr().err


def test_command_line(mfcc, tmp_path):
    run = [sys.executable, "-m", "speechlm.bin.kmeans"]
    proc = subprocess.run([*run, "learn", str(mfcc), str(tmp_path / "km"), "--clusters", "3", "--n-init", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3 centroids of dim 39" in proc.stderr
