"""Audio I/O: files, Kaldi pipes, segments, resampling, and errors that name the entry."""
from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch
import torchaudio

from speechlm.data.audio import AudioReadError, read_audio, resample
from speechlm.data.dataset import AudioDataset, load_utterance
from speechlm.data.kaldi_dir import DataDir, Segment

from fixtures import write_wav


def test_pipe_entry_reads_same_samples_as_file(tmp_path):
    wav = write_wav(tmp_path / "a.wav", 0.7)
    direct, sr = read_audio(str(wav))
    piped, sr2 = read_audio(f"cat {wav} |")
    assert sr == sr2 == 16000
    np.testing.assert_array_equal(direct, piped)


def test_pipe_with_real_kaldi_style_command(tmp_path):
    # A Kaldi-style pipe that transforms audio and writes FLAC to stdout.
    wav = write_wav(tmp_path / "a.wav", 0.5, seed=3)
    cmd = (f"{sys.executable} -c \"import io, soundfile as sf, sys; x, sr = sf.read('{wav}'); "
           f"b = io.BytesIO(); sf.write(b, x[::-1], sr, format='FLAC'); sys.stdout.buffer.write(b.getvalue())\" |")
    x, _ = read_audio(str(wav))
    y, _ = read_audio(cmd)
    np.testing.assert_allclose(y, x[::-1], atol=1 / 32768)


def test_pipe_with_streaming_wav_header_of_unknown_length(tmp_path):
    # `sox ... -t wav - |` cannot seek back to fill in the sizes: RIFF and data chunk
    # sizes stay 0xFFFFFFFF. The reader must take the samples up to the real end.
    wav = write_wav(tmp_path / "a.wav", 0.5, seed=4)
    raw = bytearray(wav.read_bytes())
    assert raw[36:40] == b"data"
    raw[4:8] = raw[40:44] = b"\xff\xff\xff\xff"
    streamed = tmp_path / "streamed.bin"
    streamed.write_bytes(bytes(raw))
    x, _ = read_audio(str(wav))
    y, _ = read_audio(f"cat {streamed} |")
    np.testing.assert_array_equal(y, x)


def test_flac_and_segment_reading(tmp_path):
    wav = write_wav(tmp_path / "a.flac", 1.0, subtype="PCM_16")
    full, sr = read_audio(str(wav))
    part, _ = read_audio(str(wav), start=0.25, end=0.5)
    np.testing.assert_array_equal(part, full[4000:8000])


def test_failing_pipe_and_missing_file_raise_named_errors(tmp_path):
    with pytest.raises(AudioReadError, match="exited with 1"):
        read_audio("false |")
    with pytest.raises(AudioReadError, match="nope.wav"):
        read_audio(str(tmp_path / "nope.wav"))


def test_load_utterance_error_names_utterance(data_dir):
    dd = DataDir.load(data_dir)
    dd.wav_scp["spkA-utt1"] = "/does/not/exist.wav"
    with pytest.raises(AudioReadError, match=r"utterance 'spkA-utt1'.*exist.wav"):
        load_utterance(dd, "spkA-utt1")


def test_resample_matches_torchaudio(tmp_path):
    x = torch.from_numpy(read_audio(str(write_wav(tmp_path / "a.wav", 0.5, sr=22050)))[0])
    ours = resample(x, 22050, 16000)
    ref = torchaudio.functional.resample(x, 22050, 16000)
    assert ours.shape == ref.shape == (8000,)
    torch.testing.assert_close(ours, ref)


def test_dataset_items_segments_and_resampling(data_dir):
    dd = DataDir.load(data_dir)
    dd.segments = {f"{u}-s": Segment(u, 0.1, 0.3) for u in dd.utterances}
    dd.utt2spk = {f"{u}-s": s for u, s in dd.utt2spk.items()}
    dd.text = {f"{u}-s": t for u, t in dd.text.items()}
    dd.utt2dur = None
    ds = AudioDataset(dd, sample_rate=8000, encode=lambda t: [len(w) for w in t.split()])
    item = ds[0]
    assert item["id"] == "spkA-utt0-s" and item["audio"].shape == (1600,)
    assert item["tokens"].tolist() == [5, 7, 4]
    assert ds.durations == pytest.approx([0.2] * 6)


def test_dataset_durations_from_headers(data_dir):
    (data_dir / "utt2dur").unlink()
    ds = AudioDataset(data_dir)
    assert ds.durations == pytest.approx([0.5, 0.75, 1.0, 0.6, 0.85, 1.1], abs=1e-4)


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed (the sox pipe mode of speed perturbation needs it)")
def test_sox_pipe_readable(tmp_path):
    wav = write_wav(tmp_path / "a.wav", 0.5)
    y, sr = read_audio(f"sox -t wav {wav} -t wav - speed 1.1 |")
    assert sr == 16000 and abs(len(y) - 8000 / 1.1) < 20
