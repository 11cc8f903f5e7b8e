"""`speechlm.bin.decode` over a data dir where some utterances' audio cannot be read (a
missing file, a corrupt wav, a zero-length wav): every readable utterance gets the
hypothesis it gets in a clean dir, the others are listed with the reason in out_dir/failed
and counted in the log, and the exit status is 0 unless nothing could be decoded. Scoring
then counts each failed utterance as an empty hypothesis (all deletions, as sclite does with
a missing hypothesis) and says so, naming the `failed` file."""
from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from fixtures import make_data_dir, tiny_ctc_checkpoint
from speechlm.bin import decode as decode_mod
from speechlm.bin import score
from speechlm.bin.decode import NothingDecoded, decode_data_dir
from speechlm.data.kaldi_dir import DataDir, read_table
from speechlm.scoring.trn import read_trn

BAD = {"spkA-gone": "missing", "spkB-corrupt": "corrupt", "spkB-empty": "empty"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(checkpoint, clean data dir, its hypotheses decoded alone)."""
    tmp = tmp_path_factory.mktemp("decode_failures")
    ckpt = tiny_ctc_checkpoint(tmp / "tiny.ckpt")
    clean = make_data_dir(tmp)
    hyps = decode_data_dir(config(ckpt, clean, tmp / "decode_clean"))
    assert any(hyps.values()), "a model that says nothing would make the comparisons vacuous"
    return ckpt, clean, hyps


def config(ckpt: Path, data: Path, out: Path, **extra):
    return OmegaConf.create({"checkpoint": str(ckpt), "device": "cpu", "data_dir": str(data), "out_dir": str(out),
                             "batch_seconds": 100.0, "search": {"_target_": None}, **extra})


def with_bad_utterances(clean: Path, root: Path, utt2dur: bool = True) -> Path:
    """The clean dir plus a missing wav, a corrupt one and a zero-length one (each with a
    transcript), with or without utt2dur (without, durations come from the headers)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt not really a wav file")
    sf.write(root / "empty.wav", np.zeros(0, np.float32), 16000)
    files = {"missing": root / "missing.wav", "corrupt": root / "corrupt.wav", "empty": root / "empty.wav"}
    dd = DataDir.load(clean)
    bad = DataDir(wav_scp={**dd.wav_scp, **{u: str(files[kind]) for u, kind in BAD.items()}},
                  utt2spk={**dd.utt2spk, **{u: u.split("-")[0] for u in BAD}},
                  text={**dd.text, **{u: "WORD1 SPEAKER" for u in BAD}},
                  utt2dur={**dd.utt2dur, **{u: 1.0 for u in BAD}} if utt2dur else None)
    return bad.save(root / "data")


@pytest.mark.parametrize("utt2dur", [True, False], ids=["with_utt2dur", "durations_from_headers"])
def test_readable_utterances_decoded_failures_listed(setup, tmp_path, caplog, utt2dur):
    ckpt, clean, clean_hyps = setup
    data = with_bad_utterances(clean, tmp_path, utt2dur)
    out = tmp_path / "decode"
    with caplog.at_level(logging.INFO, logger="speechlm.decode"):
        hyps = decode_data_dir(config(ckpt, data, out, batch_seconds=3.0))
    assert hyps == clean_hyps  # every readable utterance, with the hypothesis it gets in a clean dir

    failed = read_table(out / "failed")
    assert list(failed) == sorted(BAD)  # the data dir's order
    assert "unreadable audio" in failed["spkA-gone"] and "missing.wav" in failed["spkA-gone"]
    assert "unreadable audio" in failed["spkB-corrupt"] and "corrupt.wav" in failed["spkB-corrupt"]
    assert "zero-length" in failed["spkB-empty"] or "empty.wav" in failed["spkB-empty"]
    assert f"3 of 9 utterance(s) failed, listed in {out / 'failed'}; 6 decoded" in caplog.text
    assert all(f"{u}: " in caplog.text for u in BAD)

    assert len(read_trn(out / "hyp.trn")) == 6 and len(read_trn(out / "ref.trn")) == 9
    assert len((out / "text").read_text().splitlines()) == 6


def test_score_counts_failed_utterances_as_deletions(setup, tmp_path, capsys):
    ckpt, clean, _ = setup
    data = with_bad_utterances(clean, tmp_path)
    out = tmp_path / "decode"
    decode_data_dir(config(ckpt, data, out))
    capsys.readouterr()
    assert score.main([str(out)]) == 0
    cap = capsys.readouterr()
    assert (f"3 of 9 utterance(s) of {out / 'ref.trn'} missing from {out / 'hyp.trn'}, scored as all deletions "
            f"(3 of them failed to decode, listed with the reason in {out / 'failed'})") in cap.err
    result = (out / "result.txt").read_text(encoding="utf-8")
    assert result.startswith("NOTE: 3 of 9 utterance(s)") and "failed to decode" in result

    # the same counts as sclite gives for an explicitly empty hypothesis of each failed one
    explicit = tmp_path / "explicit"
    explicit.mkdir()
    (explicit / "ref.trn").write_bytes((out / "ref.trn").read_bytes())
    rows = read_trn(out / "hyp.trn")
    rows.update({uid: "" for uid in read_trn(out / "ref.trn") if uid not in rows})
    (explicit / "hyp.trn").write_text("".join(f"{t} ({u})\n" if t else f"({u})\n" for u, t in sorted(rows.items())))
    assert score.main([str(explicit)]) == 0
    summary = [re.sub(r"^\S+ ", "", line) for line in capsys.readouterr().out.splitlines()]
    assert [re.sub(r"^\S+ ", "", line) for line in cap.out.splitlines()] == summary
    wer = re.search(r"%WER [\d.]+ \[ \d+ / \d+, \d+ ins, (\d+) del", cap.out)
    assert int(wer.group(1)) >= 3 * 2  # at least the 2 words of each failed utterance


def test_a_failing_batch_is_retried_utterance_by_utterance(setup, tmp_path, monkeypatch):
    ckpt, clean, clean_hyps = setup
    real = decode_mod.decode_batch

    def decode_batch(model, search, batch, encode_one_by_one=True):
        if "spkA-utt1" in batch["ids"]:
            raise RuntimeError("boom")
        return real(model, search, batch, encode_one_by_one)

    monkeypatch.setattr(decode_mod, "decode_batch", decode_batch)
    hyps = decode_data_dir(config(ckpt, clean, tmp_path / "decode"))
    assert hyps == {u: h for u, h in clean_hyps.items() if u != "spkA-utt1"}
    assert (tmp_path / "decode" / "failed").read_text() == "spkA-utt1 decoding failed: RuntimeError: boom\n"


def test_nothing_decodable_raises_after_writing_the_failures(setup, tmp_path):
    ckpt, _, _ = setup
    DataDir(wav_scp={"s-u1": str(tmp_path / "missing.wav")}, utt2spk={"s-u1": "s"},
            text={"s-u1": "WORD1"}).save(tmp_path / "data")
    with pytest.raises(NothingDecoded, match="no utterance .* could be decoded"):
        decode_data_dir(config(ckpt, tmp_path / "data", tmp_path / "decode"))
    assert list(read_table(tmp_path / "decode" / "failed")) == ["s-u1"]
    assert read_trn(tmp_path / "decode" / "hyp.trn") == {}


def test_cli_exit_status(setup, tmp_path):
    ckpt, clean, clean_hyps = setup
    data = with_bad_utterances(clean, tmp_path)

    def decode(data_dir: Path, out: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "speechlm.bin.decode", f"checkpoint={ckpt}",
                               f"data_dir={data_dir}", f"out_dir={out}"], capture_output=True, text=True, timeout=300)

    proc = decode(data, tmp_path / "some_failed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 of 9 utterance(s) failed" in proc.stdout + proc.stderr
    assert len(read_trn(tmp_path / "some_failed" / "hyp.trn")) == 6

    DataDir(wav_scp={"s-u1": str(tmp_path / "missing.wav")}, utt2spk={"s-u1": "s"}).save(tmp_path / "none")
    proc = decode(tmp_path / "none", tmp_path / "none_decoded")
    assert proc.returncode != 0
    assert "no utterance" in proc.stdout + proc.stderr
    assert list(read_table(tmp_path / "none_decoded" / "failed")) == ["s-u1"]


def test_a_fault_of_the_model_or_search_stops_the_run(setup, tmp_path, monkeypatch):
    """Every utterance failing alone exactly as its batch did, before any hypothesis, is
    not a list of bad utterances but the run's own error: raised as it is."""
    ckpt, clean, _ = setup

    def decode_batch(model, search, batch, encode_one_by_one=True):
        raise ValueError("the model has no attention decoder")

    monkeypatch.setattr(decode_mod, "decode_batch", decode_batch)
    with pytest.raises(ValueError, match="no attention decoder"):
        decode_data_dir(config(ckpt, clean, tmp_path / "decode"))
