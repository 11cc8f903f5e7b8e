"""sclite `trn` transcript files: one utterance per line, `TEXT (ID)`.

    one seven three (spkA-spkA_0001)
    (spkB-spkB_0002)                      <- an empty hypothesis

The id is the last parenthesised group on the line. We score with `sclite -i rm`, the
id type ESPnet's `asr.sh` uses, and sclite then takes the speaker to be the id up to its
first `-`. So ids are `SPEAKER-UTTERANCE`, built from `utt2spk` by `trn_id`:

- ESPnet always writes `(spk-utt)`, giving `(spkA-spkA_0001)` for Kaldi-style ids that
  already start with the speaker. We do the same, except that an utterance id that already
  starts with `spk-` is kept as it is (`spkA-0001`, not `spkA-spkA-0001`): sclite reads
  the same speaker from both, and the id stays the utterance id.
- A speaker id containing `-` would be cut at that `-` by sclite's per-speaker report;
  `trn_id` refuses it rather than let the report group utterances wrongly.

Files are UTF-8 with `\\n` line ends. Reading errors name `file:line`.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from speechlm.atomic import atomic_write_text


# The file of a decode dir listing the utterances without a hypothesis (`utt reason` lines):
# written by `speechlm.bin.decode`, read by `speechlm.bin.score`.
FAILED_FILE = "failed"


class TrnError(ValueError):
    """A trn file that cannot be used; the message starts with `file:line:`."""


_LINE = re.compile(r"^(?P<text>.*?)[ \t]*\((?P<id>[^()\s]+)\)[ \t]*$")


def trn_id(utt: str, spk: str) -> str:
    """The sclite id of utterance `utt` spoken by `spk`: `utt` if it already starts with
    `spk-`, else `spk-utt`."""
    if not spk or "-" in spk or any(c in spk for c in "() \t"):
        raise ValueError(f"speaker id {spk!r} cannot head an sclite id (no '-', parentheses or blanks)")
    if not utt or any(c in utt for c in "() \t"):
        raise ValueError(f"utterance id {utt!r} cannot go in an sclite id (no parentheses or blanks)")
    return utt if utt.startswith(spk + "-") else f"{spk}-{utt}"


def speaker_of(trn_id: str) -> str:
    """The speaker sclite `-i rm` reads from an id: everything before the first `-`
    (the whole id when there is none)."""
    return trn_id.split("-", 1)[0]


def parse_trn_line(line: str) -> tuple[str, str]:
    """`"a b c (spk-utt)"` -> `("a b c", "spk-utt")`; ValueError when there is no id.
    Runs of blanks inside the text collapse to one space."""
    m = _LINE.match(line.rstrip("\n"))
    if m is None:
        raise ValueError("no '(id)' at the end of the line")
    return " ".join(m["text"].split()), m["id"]


def read_trn(path: str | os.PathLike) -> dict[str, str]:
    """`{id: text}` in file order. Raises `TrnError("path:line: ...")` for undecodable
    bytes, CRLF line ends, lines without an id, and duplicate ids."""
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            where = f"{path}:{n}"
            raw = raw.rstrip(b"\n")
            if raw.endswith(b"\r"):
                raise TrnError(f"{where}: line ends with a carriage return (CRLF); trn files use LF")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise TrnError(f"{where}: not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})") from None
            if not line.strip():
                raise TrnError(f"{where}: empty line (an empty transcript is written '(id)')")
            try:
                text, uid = parse_trn_line(line)
            except ValueError as e:
                raise TrnError(f"{where}: {e}: {line[:80]!r}") from None
            if uid in out:
                raise TrnError(f"{where}: duplicate id '{uid}' (first on line {first_line[uid]})")
            out[uid] = text
            first_line[uid] = n
    return out


def format_trn_line(uid: str, text: str) -> str:
    if not uid or any(c in uid for c in "() \t\n"):
        raise ValueError(f"trn id {uid!r} must be non-empty, without parentheses or blanks")
    text = " ".join(text.split())
    return f"{text} ({uid})\n" if text else f"({uid})\n"


def write_trn(path: str | os.PathLike, rows: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
    """Write `(id, text)` rows in the given order, atomically."""
    items = rows.items() if isinstance(rows, Mapping) else rows
    atomic_write_text(path, "".join(format_trn_line(uid, text) for uid, text in items))


def trn_rows(text: Mapping[str, str], utt2spk: Mapping[str, str]) -> list[tuple[str, str]]:
    """Rows for `write_trn` from a Kaldi `text` table (utt -> transcript) and `utt2spk`,
    sorted by utterance id. Every utterance needs a speaker."""
    missing = [u for u in text if u not in utt2spk]
    if missing:
        raise ValueError(f"{len(missing)} utterance(s) have no speaker in utt2spk, e.g. '{missing[0]}'")
    return [(trn_id(u, utt2spk[u]), text[u]) for u in sorted(text)]
