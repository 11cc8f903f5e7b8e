"""Validate a Kaldi data dir: find every fault at once, each as `file:line: problem`.

Covers what Kaldi's `utils/validate_data_dir.sh` checks (sorting, duplicates, id
agreement between files, utt2spk/spk2utt, speaker-sorted order) plus what it does not:
encodings, empty transcripts, segment bounds, and, with `audio=True`, that every
recording opens, is non-empty, has the expected sample rate and matches utt2dur and
reco2dur.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from speechlm.data.audio import AudioReadError, audio_source, is_pipe, iter_blocks
from speechlm.data.kaldi_dir import TABLE_FILES, iter_table, parse_segment

# Files that must be present; text too unless the dir is declared unlabelled.
REQUIRED = ("wav.scp", "utt2spk", "spk2utt")
# Block size when decoding whole recordings: bounds memory on hour-long files.
_BLOCK_FRAMES = 1 << 20


@dataclass(frozen=True)
class Fault:
    file: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


class _Table:
    """A table's first occurrence of each key: key -> (line, value)."""

    def __init__(self, path: Path, faults: list[Fault], empty_value: str):
        self.path = path
        self.rows: dict[str, tuple[int, str]] = {}
        prev = None
        for tl in iter_table(path):
            if tl.error:
                faults.append(Fault(path, tl.line, tl.error))
                continue
            if tl.key in self.rows:
                faults.append(Fault(path, tl.line, f"duplicate id '{tl.key}' (first on line {self.rows[tl.key][0]})"))
                continue
            if prev is not None and tl.key < prev:
                faults.append(Fault(path, tl.line, f"not sorted: '{tl.key}' comes after '{prev}' (use LC_ALL=C sort)"))
            prev = tl.key
            if tl.value is None:
                faults.append(Fault(path, tl.line, f"{empty_value} for '{tl.key}'"))
            self.rows[tl.key] = (tl.line, tl.value or "")

    def line(self, key: str) -> int:
        return self.rows[key][0]

    def value(self, key: str) -> str:
        return self.rows[key][1]

    def keys(self):
        return self.rows.keys()


def validate_data_dir(
    path: str | Path,
    audio: bool = False,
    sample_rate: int | None = None,
    require_text: bool = True,
    duration_tolerance: float = 0.05,
) -> list[Fault]:
    """Return every fault found in the data dir at `path` (empty when it is clean).

    `audio=True` decodes every recording in blocks (bounded memory). `sample_rate`
    (needs the header, so it also opens files) flags recordings at another rate.
    `duration_tolerance` (seconds) is how far a segment or utt2dur may overshoot the
    audio before it counts as a fault.
    """
    d = Path(path)
    faults: list[Fault] = []
    if not d.is_dir():
        return [Fault(d, None, "not a directory")]
    for name in REQUIRED + (("text",) if require_text else ()):
        if not (d / name).is_file():
            faults.append(Fault(d / name, None, "missing required file"))
    empty = {"text": "empty transcript"}
    t = {n: _Table(d / n, faults, empty.get(n, "no value")) for n in TABLE_FILES if (d / n).is_file()}
    wav, u2s = t.get("wav.scp"), t.get("utt2spk")
    if wav is None or u2s is None:
        return faults

    segments = _check_segments(t.get("segments"), wav, faults)
    _check_utterance_sets(t, segments is not None, faults)
    _check_speakers(u2s, t.get("spk2utt"), faults)
    durations = {}
    for name in ("utt2dur", "reco2dur"):
        if name in t:
            durations[name] = _parse_durations(t[name], faults)
    _check_files_exist(wav, faults)
    measured = None
    if audio or sample_rate:
        measured = _check_audio(wav, faults, sample_rate, decode=audio)
    reco_dur = dict(durations.get("reco2dur", {}))
    if measured:
        reco_dur.update(measured)
    if segments is not None:
        for utt, (line, seg) in segments.items():
            dur = reco_dur.get(seg.recording)
            if dur is not None and seg.end > dur + duration_tolerance:
                faults.append(Fault(t["segments"].path, line, f"segment '{utt}' ends at {seg.end:.3f}s, past the end of recording '{seg.recording}' ({dur:.3f}s)"))
    if measured and "reco2dur" in t:
        r2d = t["reco2dur"]
        for reco, dur in durations["reco2dur"].items():
            actual = measured.get(reco)
            if actual is not None and abs(actual - dur) > duration_tolerance:
                faults.append(Fault(r2d.path, r2d.line(reco), f"reco2dur says {dur:.3f}s for '{reco}' but its audio lasts {actual:.3f}s"))
    if measured and "utt2dur" in t:
        for utt, dur in durations["utt2dur"].items():
            actual = _utterance_duration(utt, segments, measured)
            if actual is not None and abs(actual - dur) > duration_tolerance:
                faults.append(Fault(t["utt2dur"].path, t["utt2dur"].line(utt), f"utt2dur says {dur:.3f}s for '{utt}' but its audio lasts {actual:.3f}s"))
    return sorted(faults, key=lambda f: (str(f.file), f.line or 0))


def _check_segments(seg_table: _Table | None, wav: _Table, faults: list[Fault]):
    if seg_table is None:
        return None
    segments = {}
    used = set()
    for utt in seg_table.keys():
        line, value = seg_table.rows[utt]
        if not value:
            continue
        used.add(value.split()[0])  # even when the rest is malformed: one fault per line
        try:
            seg = parse_segment(value)
        except ValueError as e:
            faults.append(Fault(seg_table.path, line, str(e)))
            continue
        if seg.start < 0:
            faults.append(Fault(seg_table.path, line, f"segment '{utt}' starts before 0 ({seg.start}s)"))
        if seg.end <= seg.start:
            faults.append(Fault(seg_table.path, line, f"segment '{utt}' has end {seg.end} <= start {seg.start}"))
        if seg.recording not in wav.rows:
            faults.append(Fault(seg_table.path, line, f"recording '{seg.recording}' of segment '{utt}' is not in wav.scp"))
        segments[utt] = (line, seg)
    for reco in wav.keys():
        if reco not in used:
            faults.append(Fault(wav.path, wav.line(reco), f"recording '{reco}' is used by no segment"))
    return segments


def _check_utterance_sets(t: dict[str, _Table], has_segments: bool, faults: list[Fault]) -> None:
    """Every per-utterance file must list exactly the utterances of utt2spk."""
    u2s = t["utt2spk"]
    utts = set(u2s.keys())
    source = t["segments"] if has_segments else t["wav.scp"]
    what = "segment" if has_segments else "recording in wav.scp"
    for utt in u2s.keys():
        if utt not in source.rows:
            faults.append(Fault(u2s.path, u2s.line(utt), f"utterance '{utt}' has no {what}"))
    if not has_segments:
        for reco in source.keys():
            if reco not in utts:
                faults.append(Fault(source.path, source.line(reco), f"recording '{reco}' has no utterance in utt2spk"))
    else:
        for utt in source.keys():
            if utt not in utts:
                faults.append(Fault(source.path, source.line(utt), f"segment '{utt}' is not in utt2spk"))
    for name in ("text", "utt2dur", "utt2lang"):
        if name not in t:
            continue
        table = t[name]
        for utt in table.keys():
            if utt not in utts:
                faults.append(Fault(table.path, table.line(utt), f"utterance '{utt}' is not in utt2spk"))
        for utt in u2s.keys():
            if utt not in table.rows:
                faults.append(Fault(u2s.path, u2s.line(utt), f"utterance '{utt}' is missing from {name}"))
    if "reco2dur" in t:
        r2d, wav = t["reco2dur"], t["wav.scp"]
        for reco in r2d.keys():
            if reco not in wav.rows:
                faults.append(Fault(r2d.path, r2d.line(reco), f"recording '{reco}' is not in wav.scp"))
        for reco in wav.keys():
            if reco not in r2d.rows:
                faults.append(Fault(wav.path, wav.line(reco), f"recording '{reco}' is missing from reco2dur"))


def _check_speakers(u2s: _Table, s2u: _Table | None, faults: list[Fault]) -> None:
    for utt in u2s.keys():
        if not u2s.value(utt) or len(u2s.value(utt).split()) != 1:
            faults.append(Fault(u2s.path, u2s.line(utt), f"utterance '{utt}' must map to exactly one speaker id"))
    # Kaldi sorts utt2spk by utterance and spk2utt by speaker; both orders must agree,
    # which in practice means the speaker id is a prefix of the utterance id.
    by_utt = list(u2s.keys())
    by_spk = sorted(by_utt, key=lambda u: (u2s.value(u), u))
    for a, b in zip(by_utt, by_spk):
        if a != b:
            faults.append(Fault(u2s.path, u2s.line(a), f"sorting by speaker puts '{b}' where sorting by utterance puts '{a}'; Kaldi needs both orders to agree (make the speaker id a prefix of the utterance id)"))
            break
    if s2u is None:
        return
    listed: dict[str, int] = {}  # utterance -> spk2utt line that first lists it
    for spk in s2u.keys():
        line, value = s2u.rows[spk]
        utts = value.split()
        for prev, utt in zip(utts, utts[1:]):
            if utt < prev:
                faults.append(Fault(s2u.path, line, f"utterances of speaker '{spk}' are not sorted: '{utt}' comes after '{prev}'"))
                break
        for utt in utts:
            if utt in listed:
                faults.append(Fault(s2u.path, line, f"utterance '{utt}' is listed more than once (first on line {listed[utt]})"))
            listed.setdefault(utt, line)
            if utt not in u2s.rows:
                faults.append(Fault(s2u.path, line, f"utterance '{utt}' of speaker '{spk}' is not in utt2spk"))
            elif u2s.value(utt) != spk:
                faults.append(Fault(s2u.path, line, f"utterance '{utt}' is listed under speaker '{spk}' but utt2spk says '{u2s.value(utt)}'"))
    for utt in u2s.keys():
        if utt not in listed:
            faults.append(Fault(u2s.path, u2s.line(utt), f"utterance '{utt}' (speaker '{u2s.value(utt)}') is missing from spk2utt"))


def _parse_durations(table: _Table, faults: list[Fault]) -> dict[str, float]:
    out = {}
    for key in table.keys():
        line, value = table.rows[key]
        try:
            dur = float(value)
            if not (math.isfinite(dur) and dur >= 0):
                raise ValueError
        except ValueError:
            faults.append(Fault(table.path, line, f"'{value}' is not a non-negative duration in seconds"))
            continue
        out[key] = dur
    return out


def _check_files_exist(wav: _Table, faults: list[Fault]) -> None:
    for reco in wav.keys():
        line, entry = wav.rows[reco]
        if entry and not is_pipe(entry) and not Path(entry.strip()).is_file():
            faults.append(Fault(wav.path, line, f"audio file '{entry.strip()}' of '{reco}' not found"))


def _check_audio(wav: _Table, faults: list[Fault], sample_rate: int | None, decode: bool) -> dict[str, float]:
    """Open (and with `decode`, read through) every recording; return measured durations."""
    measured = {}
    keys = list(wav.keys())
    for reco in tqdm(keys, desc="checking audio", unit="rec", disable=len(keys) < 500, mininterval=2):
        line, entry = wav.rows[reco]
        if not entry or (not is_pipe(entry) and not Path(entry.strip()).is_file()):
            continue  # already reported
        try:
            with sf.SoundFile(audio_source(entry)) as f:
                frames, sr = f.frames, f.samplerate
                if decode or is_pipe(entry):
                    # Read through in blocks: a truncated or corrupt body fails here, a
                    # pipe's unknown length is measured, and memory stays bounded.
                    frames = sum(len(block) for block in iter_blocks(f, _BLOCK_FRAMES))
        except AudioReadError as e:
            faults.append(Fault(wav.path, line, f"unreadable audio for '{reco}': {e}"))
            continue
        except Exception as e:
            faults.append(Fault(wav.path, line, f"unreadable audio for '{reco}' ('{entry.strip()}'): {e}"))
            continue
        if frames == 0:
            faults.append(Fault(wav.path, line, f"zero-length audio for '{reco}'"))
        if sample_rate and sr != sample_rate:
            faults.append(Fault(wav.path, line, f"sample rate of '{reco}' is {sr} Hz, expected {sample_rate} Hz"))
        measured[reco] = frames / sr
    return measured


def _utterance_duration(utt: str, segments, measured: dict[str, float]) -> float | None:
    if segments is None:
        return measured.get(utt)
    if utt not in segments:
        return None
    seg = segments[utt][1]
    return seg.end - seg.start
