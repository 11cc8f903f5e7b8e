"""Export a Kaldi data dir to webdataset tar shards and their index (speechlm.data.shards).

Per utterance: its audio (the original file's bytes when the wav.scp entry is a plain file
used whole; otherwise the decoded segment or pipe output, written losslessly: FLAC when the
samples are 16- or 24-bit PCM values, else 32-bit float WAV), and a json record with the
transcript and the values of every per-utterance table of the dir (utt2spk, utt2lang, km,
text.<lang>, ...: any table keyed by utterance ids, except the ones describing audio
layout: wav.scp, segments, utt2dur, reco2dur, spk2utt, *.scp). Utterances are written in
an order shuffled by `seed` (shards then mix speakers and lengths, as webdataset advises).
An utterance that cannot be exported (unreadable audio, no transcript) is listed with the
reason in the result and in OUT/failed; nothing is dropped silently. Every file is written
atomically, the index last, so a reader never sees an index naming a half-written shard.
"""
from __future__ import annotations

import io
import json
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from webdataset import TarWriter

from speechlm.atomic import atomic_path, atomic_write_text
from speechlm.data.audio import AudioReadError, is_pipe
from speechlm.data.dataset import load_utterance, utterance_durations
from speechlm.data.kaldi_dir import DataDir, DataDirError, read_table
from speechlm.data.shards import INDEX_FORMAT, INDEX_NAME

# Tables that describe where audio is, not what an utterance is: not copied into records.
LAYOUT_TABLES = {"wav.scp", "segments", "utt2dur", "reco2dur", "spk2utt", "text"}


@dataclass
class ExportResult:
    shards: list[Path] = field(default_factory=list)
    exported: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # utterance -> reason
    tables: list[str] = field(default_factory=list)
    skipped_tables: dict[str, str] = field(default_factory=dict)  # file -> why it is not a per-utterance table


def utterance_tables(dd: DataDir) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """The dir's per-utterance tables (file name -> table) and the files passed over (-> why)."""
    utts, tables, skipped = set(dd.utterances), {}, {}
    for path in sorted(dd.path.iterdir()):
        name = path.name
        if not path.is_file() or name.startswith(".") or name in LAYOUT_TABLES or name.endswith(".scp"):
            continue
        try:
            table = read_table(path, allow_empty=True)
        except DataDirError as e:
            skipped[name] = str(e)
            continue
        if table.keys() <= utts:
            tables[name] = table
        else:
            skipped[name] = f"keyed by something other than utterance ids (e.g. '{min(table.keys() - utts)}')"
    return tables, skipped


def encode_audio(samples: np.ndarray, sample_rate: int) -> tuple[bytes, str]:
    """Lossless bytes for float32 samples `(T,)` in [-1, 1]: (data, extension)."""
    buf = io.BytesIO()
    scaled = samples.astype(np.float64)
    for subtype, bits in (("PCM_16", 16), ("PCM_24", 24)):
        ints = scaled * 2 ** (bits - 1)
        if len(ints) and np.array_equal(ints, np.round(ints)) and ints.min() >= -2 ** (bits - 1) \
                and ints.max() < 2 ** (bits - 1):
            # as int32 with the sample in the top bits: libsndfile keeps the top `bits` exactly
            sf.write(buf, (ints.astype(np.int64) << (32 - bits)).astype(np.int32), sample_rate,
                     format="FLAC", subtype=subtype)
            return buf.getvalue(), "flac"
    sf.write(buf, samples.astype(np.float32), sample_rate, format="WAV", subtype="FLOAT")
    return buf.getvalue(), "wav"


def utterance_audio(dd: DataDir, utt: str) -> tuple[bytes, str, float, int]:
    """(bytes, extension, seconds, sample rate) of an utterance as it goes in a shard."""
    entry = dd.wav_scp.get(dd.recording_of(utt))
    if entry is not None and dd.segments is None and not is_pipe(entry):
        path = Path(entry.strip())
        try:
            data = path.read_bytes()
            info = sf.info(io.BytesIO(data))
        except Exception as e:  # OSError, soundfile's LibsndfileError/RuntimeError
            raise AudioReadError(f"utterance '{utt}' ({dd.path}/wav.scp entry '{utt}'): cannot read '{entry}': {e}") from None
        return data, info.format.lower(), info.frames / info.samplerate, info.samplerate
    wav, sr = load_utterance(dd, utt)  # segments, pipes; raises naming the utterance
    data, ext = encode_audio(wav.numpy(), sr)
    return data, ext, len(wav) / sr, sr


class _ShardWriter:
    """Writes shard-000000.tar, shard-000001.tar, ... atomically, each closed when the next
    utterance would pass `max_count` utterances or `max_bytes` bytes of members."""

    def __init__(self, out: Path, max_count: int, max_bytes: int):
        self.out, self.max_count, self.max_bytes = out, max_count, max_bytes
        self.done: list[dict] = []  # index entries of finished shards
        self._stack: ExitStack | None = None

    def add(self, utt: str, audio: bytes, ext: str, record: dict, seconds: float, sample_rate: int) -> None:
        member = json.dumps(record, ensure_ascii=False).encode("utf-8")
        size = len(audio) + len(member)
        if self._stack is not None and (len(self._entry["ids"]) >= self.max_count
                                        or self._entry["bytes"] + size > self.max_bytes):
            self.finish()
        if self._stack is None:
            self._open()
        self._tar.write({"__key__": utt, ext: audio, "json": member})
        entry = self._entry
        entry["ids"].append(utt)
        entry["durations"].append(round(seconds, 6))
        entry["bytes"] += size
        entry["sample_rates"].add(sample_rate)

    def _open(self) -> None:
        name = f"shard-{len(self.done):06d}.tar"
        self._stack = ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.out / name))
        f = self._stack.enter_context(open(tmp, "wb"))
        # PAX: ids of any length and script; mtime 0: the same export gives the same bytes
        self._tar = self._stack.enter_context(TarWriter(f, encoder=False, mtime=0, format="PAX_FORMAT"))
        self._entry = {"name": name, "ids": [], "durations": [], "bytes": 0, "sample_rates": set()}

    def finish(self) -> None:
        if self._stack is not None:
            self._stack.close()  # tar closed, file closed, renamed into place
            self._stack = None
            rates = self._entry.pop("sample_rates")
            self.done.append({**self._entry, "sample_rate": rates.pop() if len(rates) == 1 else None})

    def abort(self) -> None:
        if self._stack is not None:
            self._stack.__exit__(RuntimeError, RuntimeError("export aborted"), None)  # removes the temp file
            self._stack = None


def export_shards(data_dir: str | Path, out_dir: str | Path, max_count: int = 1000,
                  max_bytes: int = 1 << 30, seed: int = 0) -> ExportResult:
    """Write OUT/shard-*.tar, OUT/shards.json and (if any failed) OUT/failed."""
    if max_count < 1 or max_bytes < 1:
        raise ValueError(f"max_count and max_bytes must be >= 1, got {max_count}, {max_bytes}")
    dd = DataDir.load(data_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables, skipped = utterance_tables(dd)
    result = ExportResult(tables=sorted(tables), skipped_tables=skipped)
    # The index's durations are the ones training from the dir would use (utt2dur, else
    # segments; else the audio's own length), so bucketing and truncation checks agree.
    try:
        listed = utterance_durations(dd) if dd.utt2dur is not None or dd.segments is not None else {}
    except KeyError as e:
        raise DataDirError(f"{dd.path}/utt2dur: no entry for utterance {e}") from None
    writer = _ShardWriter(out, max_count, max_bytes)
    order = np.random.default_rng(seed).permutation(len(dd.utterances)).tolist()
    try:
        for k in order:
            utt = dd.utterances[k]
            record = {"id": utt, "tables": {name: t[utt] for name, t in tables.items() if utt in t}}
            if dd.text is not None:
                if utt not in dd.text:
                    result.failed[utt] = f"no transcript in {dd.path}/text"
                    continue
                record["text"] = dd.text[utt]
            try:
                audio, ext, seconds, sr = utterance_audio(dd, utt)
            except (AudioReadError, DataDirError) as e:
                result.failed[utt] = f"unreadable audio: {e}"
                continue
            except Exception as e:  # an encoder failure must name the utterance too
                result.failed[utt] = f"cannot export its audio: {type(e).__name__}: {e}"
                continue
            writer.add(utt, audio, ext, record, listed.get(utt, seconds), sr)
            result.exported += 1
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    rates = {s["sample_rate"] for s in writer.done}
    exported = {u for s in writer.done for u in s["ids"]}
    index = {
        "format": INDEX_FORMAT, "source": str(dd.path), "seed": seed,
        "sample_rate": rates.pop() if len(rates) == 1 else None,
        "has_text": dd.text is not None,
        "tables": {name: sum(u in t for u in exported) for name, t in sorted(tables.items())},
        "utterances": result.exported, "failed": len(result.failed),
        "shards": writer.done,
    }
    failed = out / "failed"
    if result.failed:
        atomic_write_text(failed, "".join(f"{u} {why}\n" for u, why in sorted(result.failed.items())))
    elif failed.exists():
        failed.unlink()
    atomic_write_text(out / INDEX_NAME, json.dumps(index, ensure_ascii=False, indent=1) + "\n")
    names = {s["name"] for s in writer.done}
    for stale in out.glob("shard-*.tar"):  # a previous, larger export's shards
        if stale.name not in names:
            stale.unlink()
    result.shards = [out / s["name"] for s in writer.done]
    return result
