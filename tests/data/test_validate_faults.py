"""Faults that test_validate.py does not plant, one parametrized case each.

Every case starts from a clean dir (checked clean below), plants one fault by editing
lines, and asserts the exact `file:line: message` the validator (or the strict
`DataDir.load`) reports for it.

The clean dirs, line by line (utterance, audio seconds):
    plain      wav.scp, text, utt2spk, utt2dur: 1 spkA-utt0 0.50, 2 spkA-utt1 0.75,
               3 spkA-utt2 1.00, 4 spkB-utt0 0.60, 5 spkB-utt1 0.85, 6 spkB-utt2 1.10;
               spk2utt: 1 spkA ..., 2 spkB ...
    lang       plain + utt2lang (every utterance 'en')
    segmented  plain with one segment per recording: utterance '<reco>-seg0' is
               `<reco> 0.00 0.40`; reco2dur holds the real audio durations
"""
from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from speechlm.bin.validate_data_dir import main as validate_main
from speechlm.data.kaldi_dir import DataDir, DataDirError
from speechlm.data.validate import validate_data_dir


def _rows(d: Path, name: str) -> list[str]:
    return (d / name).read_text().splitlines(keepends=True)


def _put(d: Path, name: str, rows: list[str]) -> None:
    (d / name).write_text("".join(rows))


def make_layout(d: Path, layout: str) -> None:
    """Turn the clean `data_dir` fixture (layout 'plain') into `layout` in place."""
    if layout == "lang":
        _put(d, "utt2lang", [f"{r.split()[0]} en\n" for r in _rows(d, "utt2spk")])
    elif layout == "segmented":
        wav = [r.split(maxsplit=1) for r in _rows(d, "wav.scp")]
        _put(d, "segments", [f"{r}-seg0 {r} 0.00 0.40\n" for r, _ in wav])
        _put(d, "reco2dur", [f"{r} {sf.info(p.strip()).duration:.3f}\n" for r, p in wav])
        _put(d, "utt2dur", [f"{r}-seg0 0.400\n" for r, _ in wav])
        for name in ("text", "utt2spk"):
            _put(d, name, [f"{k}-seg0 {v}" for k, v in (r.split(" ", 1) for r in _rows(d, name))])
        s2u = [r.split(maxsplit=1) for r in _rows(d, "spk2utt")]
        _put(d, "spk2utt", [f"{s} {' '.join(u + '-seg0' for u in us.split())}\n" for s, us in s2u])
    else:
        assert layout == "plain", layout


def plant(d: Path, edits: list[tuple]) -> None:
    """Apply line edits (line numbers are 1-based, as in the messages):
    ("set", file, n, text)     replace line n
    ("insert", file, n, text)  insert text so that it becomes line n
    ("del", file, n)           delete line n
    ("dup", file, n)           repeat line n right after it (the copy is line n+1)
    ("swap", file, n, m)       exchange lines n and m"""
    for op, name, n, *arg in edits:
        rows = _rows(d, name)
        if op == "set":
            rows[n - 1] = arg[0]
        elif op == "insert":
            rows.insert(n - 1, arg[0])
        elif op == "del":
            del rows[n - 1]
        elif op == "dup":
            rows.insert(n, rows[n - 1])
        elif op == "swap":
            m = arg[0]
            rows[n - 1], rows[m - 1] = rows[m - 1], rows[n - 1]
        else:
            raise ValueError(op)
        _put(d, name, rows)


def case(id: str, layout: str, edits: list[tuple], file: str, line: int, message: str, **kw):
    return pytest.param(layout, edits, file, line, message, kw, id=id)


SEG2 = "spkA-utt1-seg0 spkA-utt1"  # key and recording of segments line 2

VALIDATOR_CASES = [
    # --- empty lines (a blank or whitespace-only line is a fault wherever it is)
    case("empty-line-text", "plain", [("insert", "text", 3, "\n")], "text", 3, "empty line"),
    case("empty-line-wav.scp", "plain", [("insert", "wav.scp", 1, "\n")], "wav.scp", 1, "empty line"),
    case("empty-line-utt2spk-at-end", "plain", [("insert", "utt2spk", 7, "\n")], "utt2spk", 7, "empty line"),
    case("empty-line-segments", "segmented", [("insert", "segments", 4, " \t\n")], "segments", 4, "empty line"),
    case("empty-line-spk2utt", "plain", [("insert", "spk2utt", 2, "\n")], "spk2utt", 2, "empty line"),
    case("empty-line-utt2dur", "plain", [("insert", "utt2dur", 4, "\n")], "utt2dur", 4, "empty line"),
    # --- malformed segments lines
    case("segments-too-few-fields", "segmented", [("set", "segments", 2, f"{SEG2} 0.10\n")], "segments", 2,
         "expected 'recording start end [channel]', got 2 field(s): 'spkA-utt1 0.10'"),
    case("segments-too-many-fields", "segmented", [("set", "segments", 2, f"{SEG2} 0.10 0.30 1 x\n")], "segments", 2,
         "expected 'recording start end [channel]', got 5 field(s): 'spkA-utt1 0.10 0.30 1 x'"),
    case("segments-start-not-a-number", "segmented", [("set", "segments", 2, f"{SEG2} abc 0.30\n")], "segments", 2,
         "start time 'abc' is not a number of seconds"),
    case("segments-end-not-a-number", "segmented", [("set", "segments", 2, f"{SEG2} 0.10 0.3s\n")], "segments", 2,
         "end time '0.3s' is not a number of seconds"),
    case("segments-nan-end", "segmented", [("set", "segments", 2, f"{SEG2} 0.10 nan\n")], "segments", 2,
         "end time 'nan' is not a number of seconds"),
    case("segments-channel-not-an-integer", "segmented", [("set", "segments", 2, f"{SEG2} 0.10 0.30 A\n")], "segments", 2,
         "channel 'A' is not an integer"),
    # --- segment bounds
    case("segment-negative-start", "segmented", [("set", "segments", 2, f"{SEG2} -0.10 0.30\n")], "segments", 2,
         "segment 'spkA-utt1-seg0' starts before 0 (-0.1s)"),
    case("segment-end-equals-start", "segmented", [("set", "segments", 2, f"{SEG2} 0.30 0.30\n")], "segments", 2,
         "segment 'spkA-utt1-seg0' has end 0.3 <= start 0.3"),
    case("segment-end-before-start", "segmented", [("set", "segments", 2, f"{SEG2} 0.30 0.10\n")], "segments", 2,
         "segment 'spkA-utt1-seg0' has end 0.1 <= start 0.3"),
    case("segment-end-past-reco2dur", "segmented", [("set", "segments", 2, f"{SEG2} 0.10 0.90\n")], "segments", 2,
         "segment 'spkA-utt1-seg0' ends at 0.900s, past the end of recording 'spkA-utt1' (0.750s)"),
    # --- segments vs utt2spk
    case("segment-missing-from-utt2spk", "segmented", [("del", "utt2spk", 2)], "segments", 2,
         "segment 'spkA-utt1-seg0' is not in utt2spk"),
    case("utterance-without-segment", "segmented", [("del", "segments", 2)], "utt2spk", 2,
         "utterance 'spkA-utt1-seg0' has no segment"),
    # --- per-utterance tables
    case("utterance-missing-from-utt2dur", "plain", [("del", "utt2dur", 5)], "utt2spk", 5,
         "utterance 'spkB-utt1' is missing from utt2dur"),
    case("utterance-missing-from-utt2lang", "lang", [("del", "utt2lang", 3)], "utt2spk", 3,
         "utterance 'spkA-utt2' is missing from utt2lang"),
    case("utt2lang-unknown-utterance", "lang", [("insert", "utt2lang", 4, "spkA-utt3 en\n")], "utt2lang", 4,
         "utterance 'spkA-utt3' is not in utt2spk"),
    # --- reco2dur
    case("reco2dur-disagrees-with-decoded-audio", "segmented", [("set", "reco2dur", 2, "spkA-utt1 3.000\n")], "reco2dur", 2,
         "reco2dur says 3.000s for 'spkA-utt1' but its audio lasts 0.750s", audio=True),
    case("reco2dur-disagrees-with-audio-header", "segmented", [("set", "reco2dur", 5, "spkB-utt1 0.100\n")], "reco2dur", 5,
         "reco2dur says 0.100s for 'spkB-utt1' but its audio lasts 0.850s", sample_rate=16000),
    case("reco2dur-nan", "segmented", [("set", "reco2dur", 2, "spkA-utt1 nan\n")], "reco2dur", 2,
         "'nan' is not a non-negative duration in seconds"),
    case("recording-missing-from-reco2dur", "segmented", [("del", "reco2dur", 2)], "wav.scp", 2,
         "recording 'spkA-utt1' is missing from reco2dur"),
    # --- spk2utt
    case("spk2utt-unknown-utterance", "plain", [("set", "spk2utt", 1, "spkA spkA-utt0 spkA-utt1 spkA-utt2 spkA-utt9\n")],
         "spk2utt", 1, "utterance 'spkA-utt9' of speaker 'spkA' is not in utt2spk"),
    case("spk2utt-disagrees-with-utt2spk", "plain",
         [("set", "spk2utt", 1, "spkA spkA-utt0 spkA-utt1 spkA-utt2 spkB-utt0\n"), ("set", "spk2utt", 2, "spkB spkB-utt1 spkB-utt2\n")],
         "spk2utt", 1, "utterance 'spkB-utt0' is listed under speaker 'spkA' but utt2spk says 'spkB'"),
    case("spk2utt-utterances-unsorted", "plain", [("set", "spk2utt", 1, "spkA spkA-utt1 spkA-utt0 spkA-utt2\n")], "spk2utt", 1,
         "utterances of speaker 'spkA' are not sorted: 'spkA-utt0' comes after 'spkA-utt1'"),
    case("spk2utt-utterance-twice-in-a-line", "plain", [("set", "spk2utt", 1, "spkA spkA-utt0 spkA-utt1 spkA-utt1 spkA-utt2\n")],
         "spk2utt", 1, "utterance 'spkA-utt1' is listed more than once (first on line 1)"),
    case("spk2utt-utterance-under-two-speakers", "plain", [("set", "spk2utt", 2, "spkB spkA-utt2 spkB-utt0 spkB-utt1 spkB-utt2\n")],
         "spk2utt", 2, "utterance 'spkA-utt2' is listed more than once (first on line 1)"),
    case("utterance-missing-from-spk2utt", "plain", [("set", "spk2utt", 1, "spkA spkA-utt0 spkA-utt2\n")], "utt2spk", 2,
         "utterance 'spkA-utt1' (speaker 'spkA') is missing from spk2utt"),
    # --- durations in utt2dur
    case("utt2dur-negative", "plain", [("set", "utt2dur", 2, "spkA-utt1 -0.750\n")], "utt2dur", 2,
         "'-0.750' is not a non-negative duration in seconds"),
    case("utt2dur-nan", "plain", [("set", "utt2dur", 2, "spkA-utt1 nan\n")], "utt2dur", 2,
         "'nan' is not a non-negative duration in seconds"),
    case("utt2dur-inf", "plain", [("set", "utt2dur", 2, "spkA-utt1 inf\n")], "utt2dur", 2,
         "'inf' is not a non-negative duration in seconds"),
]

# Every table: first key, second key, in the layout that has the table.
TABLES = [
    ("plain", "wav.scp", "spkA-utt0", "spkA-utt1"),
    ("plain", "text", "spkA-utt0", "spkA-utt1"),
    ("plain", "utt2spk", "spkA-utt0", "spkA-utt1"),
    ("plain", "spk2utt", "spkA", "spkB"),
    ("plain", "utt2dur", "spkA-utt0", "spkA-utt1"),
    ("lang", "utt2lang", "spkA-utt0", "spkA-utt1"),
    ("segmented", "segments", "spkA-utt0-seg0", "spkA-utt1-seg0"),
    ("segmented", "reco2dur", "spkA-utt0", "spkA-utt1"),
]
VALIDATOR_CASES += [
    case(f"unsorted-{name}", layout, [("swap", name, 1, 2)], name, 2,
         f"not sorted: '{first}' comes after '{second}' (use LC_ALL=C sort)")
    for layout, name, first, second in TABLES
] + [
    case(f"duplicate-key-{name}", layout, [("dup", name, 2)], name, 3, f"duplicate id '{second}' (first on line 2)")
    for layout, name, first, second in TABLES
]


@pytest.mark.parametrize("layout", ["plain", "lang", "segmented"])
def test_clean_layouts_pass(data_dir, layout):
    make_layout(data_dir, layout)
    assert [str(f) for f in validate_data_dir(data_dir, audio=True, sample_rate=16000)] == []
    DataDir.load(data_dir)


@pytest.mark.parametrize("layout,edits,file,line,message,kw", VALIDATOR_CASES)
def test_validator_reports_fault(data_dir, layout, edits, file, line, message, kw):
    make_layout(data_dir, layout)
    plant(data_dir, edits)
    faults = [str(f) for f in validate_data_dir(data_dir, **kw)]
    expected = f"{data_dir / file}:{line}: {message}"
    assert expected in faults, f"expected\n  {expected}\namong:\n  " + "\n  ".join(faults)


def test_malformed_segment_is_one_fault_not_a_cascade(data_dir):
    """A malformed segments line still names its recording: wav.scp must not then
    also report that recording as 'used by no segment'."""
    make_layout(data_dir, "segmented")
    plant(data_dir, [("set", "segments", 2, f"{SEG2} abc 0.30\n")])
    assert [str(f) for f in validate_data_dir(data_dir)] == [
        f"{data_dir / 'segments'}:2: start time 'abc' is not a number of seconds"]


# The strict loader stops at the first fault; these are the faults it owns.
LOAD_CASES = [
    case("load-empty-line-text", "plain", [("insert", "text", 3, "\n")], "text", 3, "empty line"),
    case("load-empty-line-wav.scp", "plain", [("insert", "wav.scp", 1, "\n")], "wav.scp", 1, "empty line"),
    case("load-empty-line-utt2spk", "plain", [("insert", "utt2spk", 7, "\n")], "utt2spk", 7, "empty line"),
    case("load-empty-line-segments", "segmented", [("insert", "segments", 4, " \t\n")], "segments", 4, "empty line"),
    case("load-segments-too-few-fields", "segmented", [("set", "segments", 2, f"{SEG2} 0.10\n")], "segments", 2,
         "expected 'recording start end [channel]', got 2 field(s): 'spkA-utt1 0.10'"),
    case("load-segments-start-not-a-number", "segmented", [("set", "segments", 2, f"{SEG2} abc 0.30\n")], "segments", 2,
         "start time 'abc' is not a number of seconds"),
    case("load-segments-inf-end", "segmented", [("set", "segments", 2, f"{SEG2} 0.10 inf\n")], "segments", 2,
         "end time 'inf' is not a number of seconds"),
    case("load-utt2dur-negative", "plain", [("set", "utt2dur", 2, "spkA-utt1 -0.750\n")], "utt2dur", 2,
         "duration must be a finite non-negative number of seconds, got '-0.750'"),
    case("load-utt2dur-nan", "plain", [("set", "utt2dur", 2, "spkA-utt1 nan\n")], "utt2dur", 2,
         "duration must be a finite non-negative number of seconds, got 'nan'"),
    case("load-utt2dur-inf", "plain", [("set", "utt2dur", 2, "spkA-utt1 inf\n")], "utt2dur", 2,
         "duration must be a finite non-negative number of seconds, got 'inf'"),
    case("load-utt2dur-not-a-number", "plain", [("set", "utt2dur", 2, "spkA-utt1 abc\n")], "utt2dur", 2,
         "duration must be a finite non-negative number of seconds, got 'abc'"),
    case("load-reco2dur-nan", "segmented", [("set", "reco2dur", 2, "spkA-utt1 nan\n")], "reco2dur", 2,
         "duration must be a finite non-negative number of seconds, got 'nan'"),
    case("load-unsorted-wav.scp", "plain", [("swap", "wav.scp", 1, 2)], "wav.scp", 2,
         "not sorted ('spkA-utt0' after 'spkA-utt1'); sort with LC_ALL=C sort"),
    case("load-unsorted-segments", "segmented", [("swap", "segments", 1, 2)], "segments", 2,
         "not sorted ('spkA-utt0-seg0' after 'spkA-utt1-seg0'); sort with LC_ALL=C sort"),
    case("load-duplicate-key-text", "plain", [("dup", "text", 2)], "text", 3, "duplicate id 'spkA-utt1'"),
    case("load-duplicate-key-utt2lang", "lang", [("dup", "utt2lang", 2)], "utt2lang", 3, "duplicate id 'spkA-utt1'"),
]


@pytest.mark.parametrize("layout,edits,file,line,message,kw", LOAD_CASES)
def test_strict_load_reports_fault(data_dir, layout, edits, file, line, message, kw):
    make_layout(data_dir, layout)
    plant(data_dir, edits)
    with pytest.raises(DataDirError) as e:
        DataDir.load(data_dir)
    assert str(e.value) == f"{data_dir / file}:{line}: {message}"


def test_cli_prints_new_fault_with_file_and_line(data_dir, capsys):
    make_layout(data_dir, "segmented")
    plant(data_dir, [("set", "reco2dur", 2, "spkA-utt1 3.000\n")])
    assert validate_main([str(data_dir), "--audio"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{data_dir / 'reco2dur'}:2: reco2dur says 3.000s for 'spkA-utt1' but its audio lasts 0.750s"]
