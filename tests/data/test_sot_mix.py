"""speechlm.data.sot and egs/digits/sot/local/prepare_data.py: two-talker mixtures for SOT.
The written audio is checked against sources rendered independently: it must be their sum
at the stated offsets and levels."""
from __future__ import annotations

import random
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechlm.bin import validate_data_dir
from speechlm.data.kaldi_dir import read_table
from speechlm.data.sot import plan_mixtures, render_mixture, write_sot_data_dir
from speechlm.data.synth import render_utterance
from speechlm.data.validate import validate_data_dir as validate

VOICES = ["en-us+m1", "en+f2", "en-029+m5", "en-gb-scotland+f5"]
RECIPE = Path(__file__).resolve().parents[2] / "egs" / "digits" / "sot" / "local" / "prepare_data.py"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # resampling second-long clips: extra threads only contend on a busy 2-core machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def read_stm(path: Path) -> dict[str, list[tuple[str, float, float, str]]]:
    out: dict[str, list] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        mix, channel, spk, start, end, *words = line.split()
        assert channel == "1"
        out.setdefault(mix, []).append((spk, float(start), float(end), " ".join(words)))
    return out


def test_plan_single_share_fifo_text_and_levels():
    mixtures = plan_mixtures(VOICES, 50, random.Random(0), "tr", single_share=0.2, max_level_diff_db=3.0)
    assert mixtures == plan_mixtures(VOICES, 50, random.Random(0), "tr", single_share=0.2, max_level_diff_db=3.0)
    assert sum(len(m.sources) == 1 for m in mixtures) == 10
    for m in mixtures:
        assert m.text == " <sc> ".join(s.text for s in m.sources)
        assert len({s.speaker for s in m.sources}) == len(m.sources)
        assert 4 <= len(m.sources[0].text.split()) <= 7 or len(m.sources) == 1  # long enough to be overlapped
        assert m.level_db[0] == 0.0 and all(abs(db) <= 3.0 for db in m.level_db)
        assert len(m.offset_u) == len(m.sources) - 1 and all(0 <= u < 1 for u in m.offset_u)
    assert all(len(m.sources) == 2 for m in plan_mixtures(VOICES, 7, random.Random(0), "x", single_share=0.0))
    assert all(len(m.sources) == 1 for m in plan_mixtures(VOICES[:1], 7, random.Random(0), "x", single_share=1.0))
    assert min(len(m.sources[0].text.split()) for m in mixtures if len(m.sources) == 1) < 4
    with pytest.raises(ValueError, match="2 distinct voices"):
        plan_mixtures(VOICES[:1], 3, random.Random(0), "x")


@pytest.fixture(scope="module")
def sot_dir(tmp_path_factory):
    mixtures = plan_mixtures(VOICES, 6, random.Random(1), "tr", single_share=1 / 3)
    d = write_sot_data_dir(tmp_path_factory.mktemp("sot") / "train", mixtures, offset_range=(0.5, 1.5))
    return d, {m.utt_id: m for m in mixtures}


def test_data_dir_is_valid_and_fifo(sot_dir):
    d, mixtures = sot_dir
    assert validate(d, audio=True, sample_rate=16000) == []
    assert validate_data_dir.main([str(d), "--audio", "--sample-rate", "16000"]) == 0
    text, utt2spk, utt2dur = read_table(d / "text"), read_table(d / "utt2spk"), read_table(d / "utt2dur")
    stm = read_stm(d / "stm")
    assert set(text) == set(stm) == set(mixtures) and all(utt2spk[u] == u for u in text)
    assert sum("<sc>" not in t for t in text.values()) == 2
    for uid, rows in stm.items():
        starts = [start for _, start, _, _ in rows]
        assert starts == sorted(starts) and starts[0] == 0.0
        assert text[uid] == " <sc> ".join(words for *_, words in rows)  # first in, first out
        assert [spk for spk, *_ in rows] == [s.speaker for s in mixtures[uid].sources]
        assert float(utt2dur[uid]) == pytest.approx(max(end for _, _, end, _ in rows), abs=1e-3)
        if len(rows) == 2:
            (_, _, end0, _), (_, offset, _, _) = rows
            assert 0.5 <= offset <= 1.5 and offset <= end0 - 0.5 + 1e-6  # inside the first speaker's turn
            assert round(offset * 100) == pytest.approx(offset * 100, abs=1e-6)  # whole 10-ms frames


def test_mixture_is_the_sum_of_the_sources_at_their_offsets_and_levels(sot_dir):
    d, mixtures = sot_dir
    stm = read_stm(d / "stm")
    for uid, m in mixtures.items():
        audio, sr = sf.read(d / "wav" / f"{uid}.wav", dtype="float32")
        assert sr == 16000
        sources = [render_utterance(s, 16000) for s in m.sources]
        placed = np.zeros((len(audio), len(sources)))
        for k, ((_, start, _, _), x) in enumerate(zip(stm[uid], sources)):
            first = round(start * sr)
            assert first + len(x) <= len(audio)
            placed[first:first + len(x), k] = x
        gains, *_ = np.linalg.lstsq(placed, audio, rcond=None)
        residual = audio - placed @ gains
        assert np.abs(residual).max() < 2 / 32768  # 16-bit rounding only
        assert gains.min() > 0
        if len(sources) == 2:
            rms = [np.sqrt(np.mean(x.astype(np.float64) ** 2)) for x in sources]
            level = 20 * np.log10(gains[1] * rms[1] / (gains[0] * rms[0]))
            assert level == pytest.approx(m.level_db[1], abs=0.01) and abs(level) <= 3.0


def test_noise_at_the_requested_snr():
    (m,) = plan_mixtures(VOICES, 1, random.Random(2), "nz", single_share=0.0)
    clean = render_mixture(m, 16000)
    noisy = render_mixture(m, 16000, noise_snr_db=20.0, seed=3)
    assert noisy.offsets == clean.offsets and np.abs(noisy.audio).max() <= 1.0
    g = noisy.gains[0] / clean.gains[0]  # the same mixture, perhaps scaled down together
    noise = noisy.audio.astype(np.float64) - g * clean.audio
    snr = 10 * np.log10(np.mean((g * clean.audio.astype(np.float64)) ** 2) / np.mean(noise ** 2))
    assert snr == pytest.approx(20.0, abs=0.1)


def test_recipe_tiny_data_prep(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(RECIPE), "--out", str(tmp_path / "data"), "--tiny", "--num-workers", "1"])
    runpy.run_path(str(RECIPE), run_name="__main__")
    assert "data/train: 10 utterances (8 two-speaker mixtures, 2 one-speaker)" in capsys.readouterr().out
    for name in ("train", "dev", "test"):
        d = tmp_path / "data" / name
        assert validate_data_dir.main([str(d), "--audio", "--sample-rate", "16000"]) == 0
        for rows in read_stm(d / "stm").values():
            assert all(0.5 <= b[1] - a[1] <= 1.5 for a, b in zip(rows, rows[1:]))
    test_speakers = {spk for rows in read_stm(tmp_path / "data" / "test" / "stm").values() for spk, *_ in rows}
    train_speakers = {spk for rows in read_stm(tmp_path / "data" / "train" / "stm").values() for spk, *_ in rows}
    assert test_speakers and not test_speakers & train_speakers  # test voices held out
