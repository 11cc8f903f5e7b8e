"""Sharded data: webdataset tar shards (written by `python -m speechlm.bin.export_shards`)
streamed from local disk or any fsspec URL (http(s)://, file://, s3:// with s3fs, ...).

A shard `shard-000000.tar` holds per utterance `<id>.<audio ext>` (the original file's
bytes, or FLAC/WAV written from the decoded segment or pipe) and `<id>.json` (`id`, `text`
if the data dir has transcripts, `tables`: the per-utterance tables, e.g. utt2spk, utt2lang,
km). The index `shards.json` beside them lists per shard its utterance ids and durations,
so that every epoch can be planned without reading audio (speechlm.data.shard_plan).

Reading: `ShardStream` (a torch IterableDataset) yields one rank's planned batches; each
DataLoader worker streams its slot's shards front to back (fsspec opens them; webdataset's
tar iteration splits them into samples), keeps what it read until the planned batch it
belongs to is complete (so ~`buffer_size` utterances are held, as compressed bytes), then
builds the items with `ShardItems`, an `AudioDataset` whose audio, text and tables come
from the shard: the same dicts, transforms, item seeds and bad-utterance handling as
training from the data dir. A resumed epoch skips the consumed batches without decoding
them, and shards it has entirely consumed without opening them.
"""
from __future__ import annotations

import io
import json
import logging
import posixpath
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import soundfile as sf
import torch
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys, tar_file_expander

from speechlm.data.audio import AudioReadError, resample
from speechlm.data.collate import collate_audio
from speechlm.data.dataset import AudioDataset
from speechlm.data.kaldi_dir import DataDir, DataDirError
from speechlm.data.shard_plan import Batch, SlotPlan, plan_epoch, rank_order, resume_split

log = logging.getLogger(__name__)

INDEX_NAME = "shards.json"
INDEX_FORMAT = "speechlm-shards/1"


def is_url(location: str) -> bool:
    return "://" in str(location)


def is_data_dir(location: str | Path) -> bool:
    """A local Kaldi data dir (has wav.scp), as opposed to shards."""
    return not is_url(str(location)) and (Path(location) / "wav.scp").is_file()


def open_stream(url: str):
    """An fsspec file opened for reading front to back. HTTP(S) is streamed (block_size=0):
    no range requests, which plain servers (python -m http.server) do not answer."""
    options = {"block_size": 0} if url.split("://", 1)[0] in ("http", "https") else {}
    return fsspec.open(url, "rb", **options)


@dataclass(frozen=True)
class Shard:
    url: str
    ids: tuple[str, ...]
    durations: tuple[float, ...]


@dataclass(frozen=True)
class ShardIndex:
    """The index of a shard set: `location` (the index file's path or URL), the shards,
    the source's sample rate (None if mixed), whether items have text, and per-utterance
    tables with the number of utterances each covers."""

    location: str
    shards: tuple[Shard, ...]
    sample_rate: int | None
    has_text: bool
    tables: Mapping[str, int]

    @classmethod
    def load(cls, where: str | Path) -> "ShardIndex":
        """`where`: a directory or URL holding shards.json, or the index file itself."""
        where = str(where)
        location = where if where.endswith(".json") else (
            where.rstrip("/") + "/" + INDEX_NAME if is_url(where) else str(Path(where) / INDEX_NAME))
        try:
            with open_stream(location) as f:
                meta = json.loads(f.read())
        except (OSError, ValueError) as e:
            raise DataDirError(f"{location}: cannot read the shard index ({e}); "
                               "write one with python -m speechlm.bin.export_shards") from None
        if meta.get("format") != INDEX_FORMAT:
            raise DataDirError(f"{location}: not a speechlm shard index (format {meta.get('format')!r})")
        base = posixpath.dirname(location) if is_url(location) else str(Path(location).parent)
        shards, seen = [], set()
        for n, s in enumerate(meta["shards"]):
            if len(s["ids"]) != len(s["durations"]):
                raise DataDirError(f"{location}: shard {n} ({s['name']}) lists {len(s['ids'])} ids "
                                   f"but {len(s['durations'])} durations")
            dup = seen.intersection(s["ids"])
            if dup:
                raise DataDirError(f"{location}: utterance '{sorted(dup)[0]}' listed in two shards")
            seen.update(s["ids"])
            url = base.rstrip("/") + "/" + s["name"] if is_url(location) else str(Path(base) / s["name"])
            shards.append(Shard(url, tuple(s["ids"]), tuple(float(d) for d in s["durations"])))
        return cls(location, tuple(shards), meta.get("sample_rate"), bool(meta["has_text"]), dict(meta["tables"]))

    def __len__(self) -> int:
        return sum(len(s.ids) for s in self.shards)

    def durations(self) -> dict[str, float]:
        return {u: d for s in self.shards for u, d in zip(s.ids, s.durations)}


def _split_name(name: str) -> tuple[str, str]:
    """`<utterance id>.<ext>` -> (id, ext) at the *last* dot: Kaldi ids may hold dots
    (`sp0.9-utt1`), which webdataset's default (first dot) would cut."""
    key, _, ext = name.rpartition(".")
    return (key, ext) if key else (None, None)


def iter_shard(shard: Shard) -> Iterator[tuple[str, bytes, dict]]:
    """(id, audio bytes, json record) of each utterance in a shard, in tar order."""
    with open_stream(shard.url) as stream:
        files = tar_file_expander([{"url": shard.url, "stream": stream}])
        for sample in group_by_keys(files, keys=_split_name):
            utt = sample["__key__"]
            audio = [k for k in sample if not k.startswith("__") and k != "json"]
            if "json" not in sample or len(audio) != 1:
                raise DataDirError(f"{shard.url}: utterance '{utt}' has members {sorted(sample)[2:]}; "
                                   "expected <id>.json and one audio file")
            yield utt, sample[audio[0]], json.loads(sample["json"])


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """The first channel `(T,)` float32 of encoded audio bytes, and its sample rate (what
    speechlm.data.audio.read_audio gives for a file without a segment)."""
    with sf.SoundFile(io.BytesIO(data)) as f:
        return np.ascontiguousarray(f.read(dtype="float32", always_2d=True)[:, 0]), f.samplerate


class _RecordField:
    """`view[utt]`: a field of the json record of an utterance read from a shard."""

    def __init__(self, records: dict, *path: str):
        self.records, self.path = records, path

    def __getitem__(self, utt: str):
        value = self.records[utt][2]
        for key in self.path:
            value = value[key]
        return value


class ShardItems(AudioDataset):
    """`AudioDataset` items of the utterances of a shard index: `self[(i, epoch)]` (index i
    in sorted-id order, as over the data dir) is built from the record of that utterance
    in `records` (utt -> (shard url, audio bytes, json record)), which the stream fills.
    `tables`: item key -> table name of the source data dir (e.g. {"lang": "utt2lang"})."""

    def __init__(self, index: ShardIndex, sample_rate: int = 16000, encode=None,
                 tables: Mapping[str, str] | None = None, transforms=(), seed: int = 0,
                 bad_utterances: str | None = None, silence_dbfs: float = -70.0):
        durations = index.durations()
        dd = DataDir(wav_scp={}, utt2spk=dict.fromkeys(durations, ""), utt2dur=durations, path=index.location)
        super().__init__(dd, sample_rate, encode, None, transforms, seed, bad_utterances, silence_dbfs)
        self.index = index
        self.records: dict[str, tuple[str, bytes, dict]] = {}
        self.dd.text = _RecordField(self.records, "text") if index.has_text else None
        self.tables = {}
        for key, name in (tables or {}).items():
            if name is None:
                continue
            if index.tables.get(name, 0) != len(durations):
                raise DataDirError(f"{index.location}: table '{name}' covers {index.tables.get(name, 0)} of "
                                   f"{len(durations)} utterances (data.tables names it; the export took the "
                                   f"tables of the data dir: {sorted(index.tables)})")
            self.tables[key] = _RecordField(self.records, "tables", name)
        self.position = {u: i for i, u in enumerate(self.ids)}

    def load_audio(self, utt: str) -> torch.Tensor:
        url, data, _ = self.records[utt]
        try:
            samples, sr = decode_audio(data)
        except Exception as e:  # soundfile's errors vary (LibsndfileError, RuntimeError, ...)
            raise AudioReadError(f"utterance '{utt}' ({url}): cannot decode its audio: {e}") from None
        return resample(torch.from_numpy(samples), sr, self.sample_rate)


class ShardStream(IterableDataset):
    """One rank's batches of an epoch (lists of `ShardItems` items; `[]` pads the rank to
    the others' batch count), planned by speechlm.data.shard_plan.plan_epoch.

    `set_epoch(e)` chooses the epoch; `resume(k)` makes the next iteration skip the first
    k batches of the rank's epoch. `workers` must be the DataLoader's worker count (at
    least 1): it is part of the plan. Items' random draws are seeded by (seed, epoch,
    index) when `shuffle` (training), as `DurationBucketSampler(tag_epoch=True)` makes them."""

    def __init__(self, items: ShardItems, max_seconds: float, num_buckets: int = 10,
                 max_batch_size: int | None = None, buffer_size: int = 1000, shuffle: bool = True,
                 seed: int = 0, rank: int = 0, world_size: int = 1, workers: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.items = items
        self.options = dict(max_seconds=max_seconds, num_buckets=num_buckets, max_batch_size=max_batch_size,
                            buffer_size=buffer_size, shuffle=shuffle, seed=seed)
        self.shuffle = shuffle
        self.rank, self.world_size, self.workers = rank, world_size, workers
        self.epoch, self.skip = 0, 0
        self._plan: tuple[tuple, list[SlotPlan]] | None = None

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.skip = epoch, 0

    def resume(self, batches_consumed: int) -> None:
        self.skip = int(batches_consumed)

    def plan(self) -> list[SlotPlan]:
        """This rank's slots (one per worker) for the current epoch (cached)."""
        key = (self.epoch if self.shuffle else 0, self.workers)
        if self._plan is None or self._plan[0] != key:
            shards = [(s.ids, s.durations) for s in self.items.index.shards]
            if len(shards) < self.world_size * self.workers and self._plan is None:
                log.warning("%s: %d shards for %d ranks x %d workers: some workers read nothing (still every "
                            "utterance once; export with a smaller --max-count for more shards)",
                            self.items.index.location, len(shards), self.world_size, self.workers)
            slots = plan_epoch(shards, epoch=key[0], world_size=self.world_size, num_workers=self.workers,
                               **self.options)
            self._plan = (key, slots[self.rank * self.workers:(self.rank + 1) * self.workers])
        return self._plan[1]

    def __len__(self) -> int:
        return sum(len(slot.batches) for slot in self.plan())

    def batch_order(self) -> list[Batch]:
        """The rank's whole epoch in the order a DataLoader yields it (for tests and tools)."""
        slots = self.plan()
        return [slots[w].batches[j] for w, j in rank_order([len(s.batches) for s in slots])]

    def __iter__(self):
        # Not a generator: the resume point is read now, when the loader creates its
        # iterator (and its workers take their copies), not at the first next().
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != self.workers:
            raise RuntimeError(f"ShardStream planned for {self.workers} worker(s) but runs in {workers}")
        slots = self.plan()
        given, rotation = resume_split([len(s.batches) for s in slots], self.skip)
        slot = (worker + rotation) % workers
        return self._stream(slots[slot], given[slot], self.epoch if self.shuffle else None)

    def _stream(self, slot: SlotPlan, given: int, epoch: int | None) -> Iterator[list[dict]]:
        batches = slot.batches[given:]
        needed = {u for batch in batches for u in batch}
        records = self.items.records
        records.clear()
        done = 0
        for s in slot.shards:
            shard = self.items.index.shards[s]
            wanted = needed.intersection(shard.ids)
            if not wanted:  # every utterance of it was in consumed batches: not even opened
                continue
            listed = set(shard.ids)
            for utt, audio, record in iter_shard(shard):
                if utt not in listed:
                    raise DataDirError(f"{shard.url}: holds '{utt}', which the index {self.items.index.location} "
                                       "does not list for it (index and shards disagree: export again)")
                if utt in wanted:
                    records[utt] = (shard.url, audio, record)
                    wanted.discard(utt)
                while done < len(batches) and all(u in records for u in batches[done]) and batches[done]:
                    yield self._build(batches[done], epoch)
                    done += 1
            if wanted:
                raise DataDirError(f"{shard.url}: lacks {len(wanted)} utterance(s) the index lists for it, "
                                   f"e.g. '{sorted(wanted)[0]}'")
        for batch in batches[done:]:
            if batch:
                raise DataDirError(f"{self.items.index.location}: batch {batch[:3]} never completed")
            yield []

    def _build(self, batch: Batch, epoch: int | None) -> list[dict]:
        pos = self.items.position
        items = [self.items[(pos[u], epoch) if epoch is not None else pos[u]] for u in batch]
        for u in batch:
            del self.items.records[u]
        return items



def collate_shard_batch(items: Sequence[dict]) -> dict:
    """`collate_audio`, and `{"ids": [], "pad": True}` for a padding batch (speechlm.train.Task
    takes part in the step with a zero loss and counts nothing)."""
    return collate_audio(list(items)) if items else {"ids": [], "pad": True}
