from __future__ import annotations

import pytest

from speechlm.scoring.trn import (
    TrnError,
    format_trn_line,
    parse_trn_line,
    read_trn,
    speaker_of,
    trn_id,
    trn_rows,
    write_trn,
)


def test_trn_id_prefixes_the_speaker_unless_the_utterance_id_already_has_it():
    assert trn_id("spkA-0001", "spkA") == "spkA-0001"
    assert trn_id("0001", "spkA") == "spkA-0001"
    assert trn_id("spkA_0001", "spkA") == "spkA-spkA_0001"  # ESPnet writes the same
    assert trn_id("spkAB-1", "spkA") == "spkA-spkAB-1"      # prefix, but not `spkA-`
    assert speaker_of("spkA-spkA_0001") == "spkA"
    assert speaker_of("noseparator") == "noseparator"
    for bad in ("sp-k", "", "a b", "(x)"):
        with pytest.raises(ValueError):
            trn_id("u1", bad)
    with pytest.raises(ValueError):
        trn_id("u (1)", "spk")


def test_round_trip_keeps_order_text_and_empty_lines(tmp_path):
    rows = [("s2-b", "zwei drei"), ("s1-a", ""), ("s1-c", "日本 語 café"), ("s3-d", "(uh) x")]
    write_trn(tmp_path / "x.trn", rows)
    assert (tmp_path / "x.trn").read_text(encoding="utf-8").splitlines()[:2] == ["zwei drei (s2-b)", "(s1-a)"]
    assert list(read_trn(tmp_path / "x.trn").items()) == rows


def test_parse_accepts_espnet_tab_separated_lines():
    assert parse_trn_line("one  two\t(spk-utt)\n") == ("one two", "spk-utt")
    assert parse_trn_line("\t(spk-utt)") == ("", "spk-utt")
    assert parse_trn_line("a (b) (spk-utt)") == ("a (b)", "spk-utt")
    with pytest.raises(ValueError):
        parse_trn_line("no id here")
    with pytest.raises(ValueError):
        format_trn_line("a b", "text")


@pytest.mark.parametrize("content, line, what", [
    (b"a (s-1)\nb c\n", 2, "no '(id)'"),
    (b"a (s-1)\nb (s-2)\nc (s-1)\n", 3, "duplicate id 's-1' (first on line 1)"),
    (b"a (s-1)\r\n", 1, "CRLF"),
    (b"a (s-1)\n\xff (s-2)\n", 2, "not valid UTF-8"),
    (b"a (s-1)\n\nb (s-2)\n", 2, "empty line"),
])
def test_read_errors_name_file_and_line(tmp_path, content, line, what):
    p = tmp_path / "hyp.trn"
    p.write_bytes(content)
    with pytest.raises(TrnError) as e:
        read_trn(p)
    assert str(e.value).startswith(f"{p}:{line}: ") and what in str(e.value)


def test_trn_rows_from_kaldi_text_and_utt2spk():
    text = {"spkB-2": "b", "spkA-1": "a", "x9": "c"}
    utt2spk = {"spkB-2": "spkB", "spkA-1": "spkA", "x9": "spkC"}
    assert trn_rows(text, utt2spk) == [("spkA-1", "a"), ("spkB-2", "b"), ("spkC-x9", "c")]
    with pytest.raises(ValueError, match="no speaker"):
        trn_rows({"u": "a"}, {})
