"""Every fault the validator promises is planted in a clean dir and must be reported
with its file and line; the clean dir must pass."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from speechlm.bin.validate_data_dir import main as validate_main
from speechlm.data.validate import validate_data_dir


def lines(d: Path, name: str) -> list[str]:
    return (d / name).read_text().splitlines(keepends=True)


def put(d: Path, name: str, rows: list[str]) -> None:
    (d / name).write_text("".join(rows))


def edit_line(d: Path, name: str, index: int, new: str | None) -> None:
    rows = lines(d, name)
    if new is None:
        del rows[index]
    else:
        rows[index] = new
    put(d, name, rows)


def wav_path(d: Path, utt: str) -> Path:
    return Path(dict(r.split(maxsplit=1) for r in (d / "wav.scp").read_text().splitlines())[utt].strip())


def add_segments(d: Path) -> None:
    """Turn the dir into a segmented one: one segment per recording, ids prefixed."""
    wav = [r.split(maxsplit=1) for r in (d / "wav.scp").read_text().splitlines()]
    put(d, "segments", [f"{r}-seg0 {r} 0.00 0.40\n" for r, _ in wav])
    put(d, "reco2dur", [f"{r} {sf.info(p.strip()).duration:.3f}\n" for r, p in wav])
    for name in ("text", "utt2spk", "utt2dur"):
        rows = [r.split(maxsplit=1) for r in (d / name).read_text().splitlines()]
        put(d, name, [f"{k}-seg0 {v}\n" for k, v in rows])
    (d / "utt2dur").write_text("".join(f"{r}-seg0 0.400\n" for r, _ in wav))
    s2u = [r.split(maxsplit=1) for r in (d / "spk2utt").read_text().splitlines()]
    put(d, "spk2utt", [f"{s} {' '.join(u + '-seg0' for u in us.split())}\n" for s, us in s2u])


def fault_strings(d: Path, **kw) -> list[str]:
    return [str(f) for f in validate_data_dir(d, **kw)]


def assert_fault(d: Path, file: str, line: int | None, words: str, **kw) -> None:
    faults = fault_strings(d, **kw)
    prefix = f"{d / file}:{line}:" if line else f"{d / file}:"
    hits = [f for f in faults if f.startswith(prefix) and words in f]
    assert hits, f"expected '{prefix} ...{words}...' among:\n" + "\n".join(faults)


def test_clean_dir_passes(data_dir):
    assert fault_strings(data_dir, audio=True, sample_rate=16000) == []


def test_clean_segmented_dir_passes(data_dir):
    add_segments(data_dir)
    assert fault_strings(data_dir, audio=True, sample_rate=16000) == []


def test_duplicate_id(data_dir):
    rows = lines(data_dir, "text")
    put(data_dir, "text", rows[:2] + [rows[1]] + rows[2:])
    assert_fault(data_dir, "text", 3, "duplicate id 'spkA-utt1'")


def test_unsorted_file(data_dir):
    rows = lines(data_dir, "utt2spk")
    rows[0], rows[1] = rows[1], rows[0]
    put(data_dir, "utt2spk", rows)
    assert_fault(data_dir, "utt2spk", 2, "not sorted")


def test_text_id_without_recording(data_dir):
    put(data_dir, "text", lines(data_dir, "text") + ["spkB-zzz HELLO\n"])
    assert_fault(data_dir, "text", 7, "'spkB-zzz' is not in utt2spk")


def test_utterance_without_recording(data_dir):
    edit_line(data_dir, "wav.scp", 2, None)
    assert_fault(data_dir, "utt2spk", 3, "'spkA-utt2' has no recording")


def test_recording_without_utterance(data_dir):
    for name in ("utt2spk", "text", "utt2dur"):
        edit_line(data_dir, name, 0, None)
    put(data_dir, "spk2utt", ["spkA spkA-utt1 spkA-utt2\n", lines(data_dir, "spk2utt")[1]])
    assert_fault(data_dir, "wav.scp", 1, "'spkA-utt0' has no utterance in utt2spk")


def test_segment_without_recording_and_vice_versa(data_dir):
    add_segments(data_dir)
    edit_line(data_dir, "segments", 1, "spkA-utt1-seg0 nosuchreco 0.00 0.40\n")
    assert_fault(data_dir, "segments", 2, "recording 'nosuchreco'")
    assert_fault(data_dir, "wav.scp", 2, "'spkA-utt1' is used by no segment")


def test_utterance_missing_from_text(data_dir):
    edit_line(data_dir, "text", 4, None)
    assert_fault(data_dir, "utt2spk", 5, "'spkB-utt1' is missing from text")


def test_utt2spk_spk2utt_disagree(data_dir):
    edit_line(data_dir, "spk2utt", 1, "spkB spkA-utt2 spkB-utt0 spkB-utt1 spkB-utt2\n")
    assert_fault(data_dir, "spk2utt", 2, "utt2spk says 'spkA'")


def test_utterance_missing_from_spk2utt(data_dir):
    edit_line(data_dir, "spk2utt", 0, "spkA spkA-utt0 spkA-utt1\n")
    assert_fault(data_dir, "utt2spk", 3, "missing from spk2utt")


def test_speaker_order_disagrees_with_utterance_order(data_dir):
    # 'spkB' for spkA-utt0 makes the speaker-sorted order differ from the utterance order.
    edit_line(data_dir, "utt2spk", 0, "spkA-utt0 zzz\n")
    assert_fault(data_dir, "utt2spk", 1, "speaker id a prefix")


def test_segment_end_before_start(data_dir):
    add_segments(data_dir)
    edit_line(data_dir, "segments", 0, "spkA-utt0-seg0 spkA-utt0 0.30 0.20\n")
    assert_fault(data_dir, "segments", 1, "end 0.2 <= start 0.3")


def test_segment_past_recording_end(data_dir):
    add_segments(data_dir)
    edit_line(data_dir, "segments", 3, "spkB-utt0-seg0 spkB-utt0 0.10 9.00\n")
    assert_fault(data_dir, "segments", 4, "past the end of recording 'spkB-utt0'")


def test_segment_past_recording_end_found_from_audio(data_dir):
    add_segments(data_dir)
    (data_dir / "reco2dur").unlink()
    edit_line(data_dir, "segments", 3, "spkB-utt0-seg0 spkB-utt0 0.10 9.00\n")
    assert "past the end" not in "".join(fault_strings(data_dir))  # nothing to compare against yet
    assert_fault(data_dir, "segments", 4, "past the end of recording", audio=True)


def test_empty_transcript(data_dir):
    edit_line(data_dir, "text", 2, "spkA-utt2\n")
    assert_fault(data_dir, "text", 3, "empty transcript for 'spkA-utt2'")


def test_whitespace_only_transcript(data_dir):
    edit_line(data_dir, "text", 2, "spkA-utt2   \t\n")
    assert_fault(data_dir, "text", 3, "empty transcript")


def test_non_utf8_text(data_dir):
    raw = (data_dir / "text").read_bytes().splitlines(keepends=True)
    raw[4] = b"spkB-utt1 caf\xe9 latin-1\n"
    (data_dir / "text").write_bytes(b"".join(raw))
    assert_fault(data_dir, "text", 5, "not valid UTF-8")


def test_missing_audio_file(data_dir):
    wav_path(data_dir, "spkB-utt2").unlink()
    assert_fault(data_dir, "wav.scp", 6, "not found")


def test_unreadable_audio(data_dir):
    wav_path(data_dir, "spkA-utt1").write_bytes(b"this is not audio at all" * 10)
    assert fault_strings(data_dir) == []  # the file exists; only opening it tells
    assert_fault(data_dir, "wav.scp", 2, "unreadable audio for 'spkA-utt1'", audio=True)


def test_truncated_audio_detected_with_audio_flag(data_dir):
    p = wav_path(data_dir, "spkA-utt2")
    p.write_bytes(p.read_bytes()[:44])  # header claims samples that are not there
    faults = fault_strings(data_dir, audio=True)
    assert any(f.startswith(f"{data_dir / 'wav.scp'}:3:") or f.startswith(f"{data_dir / 'utt2dur'}:3:") for f in faults), faults


def test_zero_length_audio(data_dir):
    sf.write(wav_path(data_dir, "spkB-utt0"), np.zeros(0, dtype=np.float32), 16000)
    assert_fault(data_dir, "wav.scp", 4, "zero-length audio for 'spkB-utt0'", audio=True)


def test_wrong_sample_rate(data_dir):
    p = wav_path(data_dir, "spkA-utt0")
    sf.write(p, np.zeros(8000, dtype=np.float32), 8000)
    assert_fault(data_dir, "wav.scp", 1, "sample rate of 'spkA-utt0' is 8000 Hz, expected 16000", sample_rate=16000)


def test_stale_utt2dur(data_dir):
    edit_line(data_dir, "utt2dur", 1, "spkA-utt1 3.000\n")
    assert_fault(data_dir, "utt2dur", 2, "utt2dur says 3.000s", audio=True)


def test_bad_duration_value(data_dir):
    edit_line(data_dir, "utt2dur", 1, "spkA-utt1 abc\n")
    assert_fault(data_dir, "utt2dur", 2, "'abc' is not a non-negative duration")


def test_missing_required_file(data_dir):
    (data_dir / "spk2utt").unlink()
    assert_fault(data_dir, "spk2utt", None, "missing required file")


def test_failing_pipe_is_unreadable(data_dir):
    edit_line(data_dir, "wav.scp", 0, "spkA-utt0 false |\n")
    assert_fault(data_dir, "wav.scp", 1, "unreadable audio for 'spkA-utt0'", audio=True)


def test_crlf_line(data_dir):
    rows = lines(data_dir, "text")
    rows[0] = rows[0].replace("\n", "\r\n")
    put(data_dir, "text", rows)
    assert_fault(data_dir, "text", 1, "carriage return")


def test_cli_exit_codes_and_output(data_dir, capsys):
    assert validate_main([str(data_dir), "--audio", "--sample-rate", "16000"]) == 0
    edit_line(data_dir, "text", 2, "spkA-utt2\n")
    wav_path(data_dir, "spkB-utt2").unlink()
    assert validate_main([str(data_dir)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert f"{data_dir / 'text'}:3: empty transcript for 'spkA-utt2'" in out
    assert any(o.startswith(f"{data_dir / 'wav.scp'}:6:") for o in out)


def test_cli_as_module(data_dir):
    proc = subprocess.run([sys.executable, "-m", "speechlm.bin.validate_data_dir", str(data_dir)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK (6 utterances, 2 speakers)" in proc.stderr


def test_all_faults_reported_at_once(data_dir):
    edit_line(data_dir, "text", 2, "spkA-utt2\n")
    wav_path(data_dir, "spkB-utt2").unlink()
    edit_line(data_dir, "spk2utt", 0, "spkA spkA-utt0 spkA-utt1\n")
    assert len(fault_strings(data_dir)) >= 3
