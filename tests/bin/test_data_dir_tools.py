"""The data-dir command-line tools, run as a recipe runs them."""
from __future__ import annotations

import subprocess
import sys

from speechlm.bin.combine_data_dirs import main as combine_main
from speechlm.bin.compute_utt2dur import main as utt2dur_main
from speechlm.bin.fix_data_dir import main as fix_main
from speechlm.bin.perturb_speed import main as perturb_main
from speechlm.bin.subset_data_dir import main as subset_main
from speechlm.data.kaldi_dir import DataDir, read_table
from speechlm.data.validate import validate_data_dir


def test_fix_in_place_with_backup_and_report(data_dir, capsys):
    text = (data_dir / "text").read_text().splitlines(keepends=True)
    (data_dir / "text").write_text("".join([text[1], text[0]] + text[3:]))  # unsorted, spkA-utt2 gone
    assert fix_main([str(data_dir)]) == 0
    err = capsys.readouterr().err
    assert "removed 1: utterance missing from text (e.g. spkA-utt2)" in err
    assert (data_dir / ".backup" / "text").read_text() == "".join([text[1], text[0]] + text[3:])
    assert validate_data_dir(data_dir) == []
    assert "spkA-utt2" not in read_table(data_dir / "utt2spk")


def test_subset_combine_round_trip(data_dir, tmp_path):
    a, b, both = tmp_path / "a", tmp_path / "b", tmp_path / "both"
    (tmp_path / "spk.list").write_text("spkA\n")
    assert subset_main([str(data_dir), str(a), "--spk-list", str(tmp_path / "spk.list")]) == 0
    assert subset_main([str(data_dir), str(b), "--last", "3"]) == 0
    assert combine_main([str(both), str(a), str(b)]) == 0
    assert DataDir.load(both) == DataDir.load(data_dir)


def test_perturb_speed_then_validate(data_dir, tmp_path):
    (data_dir / "utt2dur").unlink()
    out = tmp_path / "train_sp"
    assert perturb_main([str(data_dir), str(out)]) == 0
    assert len(read_table(out / "utt2spk")) == 18
    assert validate_data_dir(out, audio=True, sample_rate=16000) == []


def test_compute_utt2dur_replaces_stale_values(data_dir):
    (data_dir / "utt2dur").write_text("".join(f"{u} 9.000\n" for u in read_table(data_dir / "utt2spk")))
    assert validate_data_dir(data_dir, audio=True) != []
    assert utt2dur_main([str(data_dir)]) == 0
    assert validate_data_dir(data_dir, audio=True) == []


def test_tools_run_as_modules(data_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "speechlm.bin.subset_data_dir", str(data_dir), str(tmp_path / "s"), "--first", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "2 utterances" in proc.stderr, proc.stderr
