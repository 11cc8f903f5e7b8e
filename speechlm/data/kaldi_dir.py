"""Kaldi data directories: read and write `wav.scp`, `text`, `utt2spk`, `spk2utt`,
`segments`, `utt2dur`, `utt2lang`, `reco2dur`.

A Kaldi table is one `key value` pair per line, split at the first run of whitespace,
sorted by key in C (bytewise) order. Loading here is strict: the first malformed line
raises `DataDirError("path:line: problem")`. `speechlm.data.validate` reports every
fault of a directory instead of stopping at the first.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from speechlm.atomic import atomic_write_text

# Files a data dir may hold, in the order Kaldi's tools list them. wav.scp and utt2spk
# are required; everything else is optional.
TABLE_FILES = ("wav.scp", "segments", "text", "utt2spk", "spk2utt", "utt2dur", "reco2dur", "utt2lang")

class DataDirError(ValueError):
    """A data dir that cannot be used; the message starts with `file:line:` where it can."""


@dataclass(frozen=True)
class TableLine:
    """One raw line of a Kaldi table. `value` is None when the line has only a key;
    `error` says why the line could not be parsed at all (encoding, blank line)."""

    line: int
    key: str | None
    value: str | None
    error: str | None = None


def iter_table(path: str | os.PathLike) -> Iterator[TableLine]:
    """Yield every line of a Kaldi table without judging it (the validator judges)."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            raw = raw.rstrip(b"\n")
            if raw.endswith(b"\r"):
                yield TableLine(n, None, None, "line ends with a carriage return (CRLF); Kaldi files use LF")
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield TableLine(n, None, None, f"not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})")
                continue
            stripped = text.strip(" \t")
            if not stripped:
                yield TableLine(n, None, None, "empty line")
                continue
            parts = re.split(r"[ \t]+", stripped, maxsplit=1)
            yield TableLine(n, parts[0], parts[1] if len(parts) > 1 else None)


def read_table(path: str | os.PathLike, *, allow_empty: bool = False) -> dict[str, str]:
    """Read a Kaldi table strictly: bad encoding, missing values, duplicate keys and
    unsorted keys raise `DataDirError` naming the file and line."""
    table: dict[str, str] = {}
    prev = None
    for tl in iter_table(path):
        where = f"{path}:{tl.line}"
        if tl.error:
            raise DataDirError(f"{where}: {tl.error}")
        if tl.value is None and not allow_empty:
            raise DataDirError(f"{where}: '{tl.key}' has no value")
        if tl.key in table:
            raise DataDirError(f"{where}: duplicate id '{tl.key}'")
        if prev is not None and tl.key < prev:
            raise DataDirError(f"{where}: not sorted ('{tl.key}' after '{prev}'); sort with LC_ALL=C sort")
        table[tl.key] = tl.value or ""
        prev = tl.key
    return table


def write_table(path: str | os.PathLike, table: Mapping[str, object] | Iterable[tuple[str, object]]) -> None:
    """Write `key value` lines sorted by key (Python's str order is Kaldi's C order for
    UTF-8), atomically: a reader never sees a half-written file."""
    items = table.items() if isinstance(table, Mapping) else table
    lines = []
    for k, v in sorted(items, key=lambda kv: kv[0]):
        if isinstance(v, (list, tuple)):
            v = " ".join(str(x) for x in v)
        lines.append(f"{k} {v}".rstrip(" ") + "\n")
    atomic_write_text(path, "".join(lines))


@dataclass(frozen=True)
class Segment:
    recording: str
    start: float
    end: float
    channel: int | None = None


def parse_segment(value: str) -> Segment:
    """`reco start end [channel]` -> Segment; raises ValueError naming the bad field.
    Only the syntax is checked here: bounds (start < 0, end <= start) are judged by the
    validator and by fix_data_dir."""
    parts = value.split()
    if len(parts) not in (3, 4):
        raise ValueError(f"expected 'recording start end [channel]', got {len(parts)} field(s): '{value}'")
    start, end = _parse_time("start", parts[1]), _parse_time("end", parts[2])
    channel = None
    if len(parts) == 4:
        try:
            channel = int(parts[3])
        except ValueError:
            raise ValueError(f"channel '{parts[3]}' is not an integer") from None
    return Segment(parts[0], start, end, channel)


def _parse_time(what: str, text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        raise ValueError(f"{what} time '{text}' is not a number of seconds")
    return seconds


def format_segment(seg: Segment) -> str:
    s = f"{seg.recording} {seg.start:.3f} {seg.end:.3f}"
    return s if seg.channel is None else f"{s} {seg.channel}"


def spk2utt_from_utt2spk(utt2spk: Mapping[str, str]) -> dict[str, list[str]]:
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return spk2utt


@dataclass
class DataDir:
    """An in-memory Kaldi data directory.

    `wav_scp` maps recording ids to a path or a `cmd |` pipe. Without `segments`,
    recording ids are utterance ids. `spk2utt` is always derived from `utt2spk`.
    """

    wav_scp: dict[str, str]
    utt2spk: dict[str, str]
    text: dict[str, str] | None = None
    segments: dict[str, Segment] | None = None
    utt2dur: dict[str, float] | None = None
    reco2dur: dict[str, float] | None = None
    utt2lang: dict[str, str] | None = None
    path: Path | None = field(default=None, compare=False)

    @property
    def utterances(self) -> list[str]:
        return sorted(self.utt2spk)

    @property
    def spk2utt(self) -> dict[str, list[str]]:
        return spk2utt_from_utt2spk(self.utt2spk)

    def recording_of(self, utt: str) -> str:
        return self.segments[utt].recording if self.segments is not None else utt

    def __len__(self) -> int:
        return len(self.utt2spk)

    def select(self, utts: Iterable[str]) -> "DataDir":
        """A new DataDir with only `utts` (and the recordings they use)."""
        keep = set(utts) & set(self.utt2spk)
        recos = {self.recording_of(u) for u in keep}

        def pick(table, keys):
            return None if table is None else {k: v for k, v in table.items() if k in keys}

        return DataDir(
            wav_scp=pick(self.wav_scp, recos),
            utt2spk=pick(self.utt2spk, keep),
            text=pick(self.text, keep),
            segments=pick(self.segments, keep),
            utt2dur=pick(self.utt2dur, keep),
            reco2dur=pick(self.reco2dur, recos),
            utt2lang=pick(self.utt2lang, keep),
        )

    @classmethod
    def load(cls, path: str | os.PathLike, report: "DropReport | None" = None) -> "DataDir":
        """Load a data dir. Strict by default: the first fault raises `DataDirError`
        with `file:line:` (run `validate_data_dir` to see every fault at once).
        With a `report`, load leniently as Kaldi's fix_data_dir.sh does: unsorted
        files are sorted, and unparseable or duplicate lines are dropped and recorded."""
        path = Path(path)
        if not path.is_dir():
            raise DataDirError(f"{path}: not a directory")
        for required in ("wav.scp", "utt2spk"):
            if not (path / required).is_file():
                raise DataDirError(f"{path / required}: missing (a data dir needs wav.scp and utt2spk)")

        def table(name: str, parse=None, allow_empty: bool = False, required: bool = False):
            p = path / name
            if not required and not p.is_file():
                return None
            if report is None:
                rows = [(n, k, v) for n, (k, v) in enumerate(read_table(p, allow_empty=allow_empty).items(), 1)]
            else:
                rows = _read_lenient(p, allow_empty, report)
            out = {}
            for n, k, v in rows:
                try:
                    out[k] = v if parse is None else parse(v)
                except ValueError as e:
                    if report is None:
                        raise DataDirError(f"{p}:{n}: {e}") from None
                    report.drop(k, f"unparseable line in {name}: {e}")
            return out

        return cls(
            wav_scp=table("wav.scp", required=True),
            utt2spk=table("utt2spk", required=True),
            text=table("text", allow_empty=True),
            segments=table("segments", parse_segment),
            utt2dur=table("utt2dur", _parse_seconds),
            reco2dur=table("reco2dur", _parse_seconds),
            utt2lang=table("utt2lang"),
            path=path,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write every table this dir has (and spk2utt), removing stale optional files
        so the directory on disk is exactly this object."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        write_table(path / "wav.scp", self.wav_scp)
        write_table(path / "utt2spk", self.utt2spk)
        write_table(path / "spk2utt", self.spk2utt)
        optional = {
            "text": self.text,
            "segments": None if self.segments is None else {k: format_segment(s) for k, s in self.segments.items()},
            "utt2dur": None if self.utt2dur is None else {k: f"{v:.3f}" for k, v in self.utt2dur.items()},
            "reco2dur": None if self.reco2dur is None else {k: f"{v:.3f}" for k, v in self.reco2dur.items()},
            "utt2lang": self.utt2lang,
        }
        for name, table in optional.items():
            if table is not None:
                write_table(path / name, table)
            elif (path / name).exists():
                (path / name).unlink()
        self.path = path
        return path


def _parse_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"duration must be a finite non-negative number of seconds, got '{value}'")
    return seconds


def _read_lenient(path: Path, allow_empty: bool, report: "DropReport") -> list[tuple[int, str, str]]:
    rows: dict[str, tuple[int, str]] = {}
    for tl in iter_table(path):
        if tl.error:
            report.drop(f"line {tl.line}", f"unreadable line in {path.name} ({tl.error})")
        elif tl.key in rows:
            report.drop(tl.key, f"duplicate id in {path.name} (kept the first)")
        elif tl.value is None and not allow_empty:
            report.drop(tl.key, f"no value in {path.name}")
        else:
            rows[tl.key] = (tl.line, tl.value or "")
    return [(n, k, v) for k, (n, v) in sorted(rows.items())]


class DropReport:
    """What a data-dir operation removed and why: never drop data silently.

    `drop(id, reason)` records one removal; `summary()` gives one line per reason
    with a count and a few example ids."""

    def __init__(self):
        self.dropped: dict[str, list[str]] = {}

    def drop(self, key: str, reason: str) -> None:
        self.dropped.setdefault(reason, []).append(key)

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.dropped.values())

    def count(self, reason_substring: str) -> int:
        return sum(len(v) for r, v in self.dropped.items() if reason_substring in r)

    def summary(self) -> list[str]:
        lines = []
        for reason, keys in sorted(self.dropped.items()):
            examples = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
            lines.append(f"removed {len(keys)}: {reason} (e.g. {examples})")
        return lines

    def __bool__(self) -> bool:
        return bool(self.dropped)
