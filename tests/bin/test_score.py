"""`python -m speechlm.bin.score DECODE_DIR`: result files, RESULTS.md rows, faults named
with file and line, utterances missing from the hypothesis scored rather than dropped."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from speechlm.bin import score
from speechlm.scoring.trn import write_trn

REF = [("spkA-1", "one two three"), ("spkA-2", "four five"), ("spkB-3", "six"), ("spkB-4", "seven eight nine")]
HYP = [("spkA-1", "one too three"), ("spkA-2", "four five six"), ("spkB-3", ""), ("spkB-4", "seven eight nine")]


def decode_dir(root: Path, ref=REF, hyp=HYP, name="decode_test") -> Path:
    d = root / "exp" / "conformer" / name
    d.mkdir(parents=True)
    write_trn(d / "ref.trn", ref)
    write_trn(d / "hyp.trn", hyp)
    return d


def sum_avg(text: str) -> list[float]:
    (row,) = [l for l in text.splitlines() if "Sum/Avg" in l]
    return [float(x) for x in re.findall(r"\d+(?:\.\d+)?", row)]


def test_writes_results_and_prints_summary(tmp_path, capsys):
    d = decode_dir(tmp_path)
    md = tmp_path / "RESULTS.md"
    assert score.main([str(d), "--results-md", str(md)]) == 0
    out = capsys.readouterr().out
    assert "%WER 33.33 [ 3 / 9, 1 ins, 1 del, 1 sub ]" in out
    assert sum_avg((d / "result.txt").read_text(encoding="utf-8")) == [4, 9, 77.8, 11.1, 11.1, 11.1, 33.3, 75.0]
    assert re.search(r"%CER [\d.]+", out)
    assert "Sum/Avg" in (d / "result.cer.txt").read_text(encoding="utf-8")
    text = md.read_text(encoding="utf-8")
    assert "## conformer\n### WER" in text and "### CER" in text
    assert "|decode_test|4|9|77.8|11.1|11.1|11.1|33.3|75.0|" in text

    d2 = decode_dir(tmp_path, name="decode_dev", hyp=REF)
    assert score.main([str(d2), "--results-md", str(md), "--tag", "conformer"]) == 0
    text = md.read_text(encoding="utf-8")
    assert "|decode_test|4|9|77.8|" in text and "|decode_dev|4|9|100.0|0.0|0.0|0.0|0.0|0.0|" in text


def test_utterances_missing_from_hyp_are_all_deletions_and_reported(tmp_path, capsys):
    d = decode_dir(tmp_path, hyp=HYP[:2])
    assert score.main([str(d)]) == 0
    cap = capsys.readouterr()
    assert "2 of 4 utterance(s)" in cap.err and "spkB-3 spkB-4" in cap.err
    result = (d / "result.txt").read_text(encoding="utf-8")
    assert result.startswith("NOTE: 2 of 4 utterance(s)")
    # 9 words: 1 sub + 4 deletions (spkB-3, spkB-4) + 1 ins
    assert sum_avg(result)[:2] == [4, 9] and "%WER 66.67 [ 6 / 9, 1 ins, 4 del, 1 sub ]" in cap.out


def test_ids_not_in_ref_name_hyp_file_and_line(tmp_path, capsys):
    d = decode_dir(tmp_path, hyp=HYP[:2] + [("spkC-9", "x")])
    assert score.main([str(d)]) == 1
    err = capsys.readouterr().err
    assert f"{d / 'hyp.trn'}:3: id 'spkC-9' is not in" in err
    assert not (d / "result.txt").exists()


def test_missing_and_malformed_files(tmp_path, capsys):
    d = decode_dir(tmp_path)
    (d / "hyp.trn").unlink()
    assert score.main([str(d)]) == 1
    assert f"{d / 'hyp.trn'}: no such file" in capsys.readouterr().err
    (d / "hyp.trn").write_text("one two (spkA-1)\nthree four\n", encoding="utf-8")
    assert score.main([str(d)]) == 1
    assert f"{d / 'hyp.trn'}:2: no '(id)'" in capsys.readouterr().err
    (d / "ref.trn").write_text("", encoding="utf-8")
    (d / "hyp.trn").write_text("", encoding="utf-8")
    assert score.main([str(d)]) == 1
    assert f"{d / 'ref.trn'}: no utterances to score" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("sctk") is None, reason="sctk not installed: apt-get install sctk")
def test_result_txt_sum_avg_equals_espnet_sclite_command(tmp_path):
    # ESPnet's asr.sh: sclite -r ref.trn trn -h hyp.trn trn -i rm -o all stdout > result.txt
    d = decode_dir(tmp_path)
    assert score.main([str(d)]) == 0
    theirs = subprocess.run(["sctk", "sclite", "-r", str(d / "ref.trn"), "trn", "-h", str(d / "hyp.trn"), "trn",
                             "-i", "rm", "-o", "all", "stdout"], capture_output=True, text=True, check=True).stdout
    assert sum_avg((d / "result.txt").read_text(encoding="utf-8")) == sum_avg(theirs)


SOT_REF = [("mixA-1", "one two three <sc> four five"), ("mixA-2", "six"), ("mixB-3", "seven eight <sc> nine")]
SOT_HYP = [("mixA-1", "four five <|sc|> one too three"), ("mixA-2", "six <|sc|> zero"), ("mixB-3", "seven eight")]


def test_sot_output_scored_by_cpwer(tmp_path, capsys):
    d = decode_dir(tmp_path, ref=SOT_REF, hyp=SOT_HYP)
    md = tmp_path / "RESULTS.md"
    assert score.main([str(d), "--sot", "--results-md", str(md)]) == 0
    out = capsys.readouterr().out
    # speakers swapped in mixA-1 cost nothing: 1 sub there, 1 ins in mixA-2, 1 del in mixB-3
    assert "%cpWER 33.33 [ 3 / 9, 1 ins, 1 del, 1 sub ]" in out and "%WER" not in out
    assert sum_avg((d / "result.cpwer.txt").read_text(encoding="utf-8")) == [3, 9, 77.8, 11.1, 11.1, 11.1, 33.3, 100.0]
    assert not (d / "result.txt").exists() and not (d / "result.cer.txt").exists()
    assert "### cpWER\n" in md.read_text(encoding="utf-8")

    # another speaker-change token (the option implies --sot); '<sc>' is then an ordinary word
    d2 = decode_dir(tmp_path, name="decode_dev", ref=[("mixA-1", "a b [SC] c")], hyp=[("mixA-1", "c [SC] a b")])
    assert score.main([str(d2), "--speaker-change", "[SC]"]) == 0
    assert "%cpWER 0.00 [ 0 / 3," in capsys.readouterr().out
