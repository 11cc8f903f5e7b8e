"""Reading and writing Kaldi data dirs, and the subset/combine/fix helpers."""
from __future__ import annotations

import pytest

from speechlm.data.combine import combine_data_dirs
from speechlm.data.fix import fix_data_dir
from speechlm.data.kaldi_dir import DataDir, DataDirError, Segment, read_table
from speechlm.data.subset import subset_data_dir
from speechlm.data.validate import validate_data_dir


def test_load_save_round_trip_is_byte_identical(data_dir, tmp_path):
    dd = DataDir.load(data_dir)
    assert len(dd) == 6 and dd.text["spkA-utt1"] == "WORD1 SPEAKER SPKA"
    out = dd.save(tmp_path / "copy")
    for name in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur"):
        assert (out / name).read_bytes() == (data_dir / name).read_bytes(), name
    assert DataDir.load(out) == dd


def test_espnet_style_tabs_and_pipes_load_unchanged(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "wav.scp").write_text("a-1\tsox x.wav -t wav - |\nb-1 /x/b.flac\n")
    (d / "utt2spk").write_text("a-1 a\nb-1 b\n")
    (d / "text").write_text("a-1\tHELLO  WORLD\nb-1 ÜBER straße\n")
    dd = DataDir.load(d)
    assert dd.wav_scp["a-1"] == "sox x.wav -t wav - |"
    assert dd.text == {"a-1": "HELLO  WORLD", "b-1": "ÜBER straße"}


def test_strict_load_names_file_and_line(data_dir):
    rows = (data_dir / "utt2spk").read_text().splitlines(keepends=True)
    rows[3], rows[4] = rows[4], rows[3]
    (data_dir / "utt2spk").write_text("".join(rows))
    with pytest.raises(DataDirError, match=r"utt2spk:5: not sorted"):
        DataDir.load(data_dir)


def test_segments_parse_and_write(tmp_path, data_dir):
    (data_dir / "segments").write_text("".join(
        f"{u}-s {u} 0.10 0.30\n" for u in read_table(data_dir / "wav.scp")))
    for name in ("text", "utt2spk", "utt2dur"):
        rows = [r.split(maxsplit=1) for r in (data_dir / name).read_text().splitlines()]
        (data_dir / name).write_text("".join(f"{k}-s {v}\n" for k, v in rows))
    dd = DataDir.load(data_dir)
    assert dd.segments["spkA-utt0-s"] == Segment("spkA-utt0", 0.1, 0.3)
    assert dd.recording_of("spkA-utt0-s") == "spkA-utt0"
    assert "spkA-utt0 0.100 0.300" in (dd.save(tmp_path / "o") / "segments").read_text()


def test_fix_data_dir_reports_every_removal(data_dir):
    # unsorted + duplicate + an utterance without transcript + an empty transcript +
    # a transcript for an unknown utterance + a recording nobody uses
    text = (data_dir / "text").read_text().splitlines(keepends=True)
    text = [text[1], text[0], text[0], "spkA-utt2\n", "spkZ-x HELLO\n"] + text[4:]
    (data_dir / "text").write_text("".join(text))  # spkB-utt0 now has no text
    (data_dir / "wav.scp").write_text((data_dir / "wav.scp").read_text() + "zzz-orphan /nowhere.wav\n")
    fixed, report = fix_data_dir(data_dir)
    assert fixed.utterances == ["spkA-utt0", "spkA-utt1", "spkB-utt1", "spkB-utt2"]
    assert report.count("duplicate id in text") == 1
    assert report.dropped["utterance missing from text"] == ["spkB-utt0"]
    assert report.dropped["empty transcript"] == ["spkA-utt2"]
    assert report.dropped["text entry for an utterance not in utt2spk"] == ["spkZ-x"]
    assert report.dropped["recording used by no utterance"] == ["zzz-orphan"]
    assert any("empty transcript" in line for line in report.summary())
    out = fixed.save(data_dir.parent / "fixed")
    assert validate_data_dir(out) == []


def test_subset_by_list_reports_unknown_ids(data_dir):
    dd = DataDir.load(data_dir)
    sub, report = subset_data_dir(dd, utt_list=["spkB-utt1", "spkA-utt0", "typo"])
    assert sub.utterances == ["spkA-utt0", "spkB-utt1"]
    assert set(sub.wav_scp) == {"spkA-utt0", "spkB-utt1"}
    assert report.dropped == {"requested utterance not in the data dir": ["typo"]}
    assert validate_data_dir(sub.save(data_dir.parent / "sub")) == []


@pytest.mark.parametrize("kw,expect", [
    ({"first": 2}, ["spkA-utt0", "spkA-utt1"]),
    ({"last": 1}, ["spkB-utt2"]),
    ({"spk_list": ["spkB"]}, ["spkB-utt0", "spkB-utt1", "spkB-utt2"]),
    ({"shortest": 2}, ["spkA-utt0", "spkB-utt0"]),
])
def test_subset_selectors(data_dir, kw, expect):
    sub, _ = subset_data_dir(DataDir.load(data_dir), **kw)
    assert sub.utterances == expect


def test_subset_random_is_seeded(data_dir):
    dd = DataDir.load(data_dir)
    a = subset_data_dir(dd, random=3, seed=1)[0].utterances
    assert a == subset_data_dir(dd, random=3, seed=1)[0].utterances and len(a) == 3


def test_combine_dedupes_identical_and_rejects_conflicts(data_dir, tmp_path):
    dd = DataDir.load(data_dir)
    a, _ = subset_data_dir(dd, first=4)
    b, _ = subset_data_dir(dd, last=3)  # overlaps a on spkB-utt0
    both, report = combine_data_dirs([a, b])
    assert both.utterances == dd.utterances
    assert report.count("duplicate utt2spk") == 1
    b.text["spkB-utt0"] = "SOMETHING ELSE"
    with pytest.raises(DataDirError, match="spkB-utt0"):
        combine_data_dirs([a, b])


def test_combine_drops_partial_optional_table_and_says_so(data_dir):
    dd = DataDir.load(data_dir)
    a, _ = subset_data_dir(dd, first=3)
    b, _ = subset_data_dir(dd, last=3)
    b.utt2lang = {u: "en" for u in b.utt2spk}
    both, report = combine_data_dirs([a, b])
    assert both.utt2lang is None and report.count("utt2lang left out") == 1
