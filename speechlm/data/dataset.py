"""A map-style dataset over a Kaldi data dir: one item per utterance."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from speechlm.data.audio import AudioReadError, audio_info, read_audio, resample
from speechlm.data.kaldi_dir import DataDir, DataDirError, read_table



def load_utterance(dd: DataDir, utt: str, sample_rate: int | None = None) -> tuple[torch.Tensor, int]:
    """Audio of one utterance `(T,)` float32, cut by `segments` and resampled to
    `sample_rate` if given. Errors name the utterance and its wav.scp entry."""
    reco = dd.recording_of(utt)
    entry = dd.wav_scp.get(reco)
    if entry is None:
        raise DataDirError(f"{dd.path}/wav.scp: no recording '{reco}' for utterance '{utt}'")
    seg = dd.segments[utt] if dd.segments is not None else None
    try:
        if seg is None:
            samples, sr = read_audio(entry)
        else:
            samples, sr = read_audio(entry, seg.start, seg.end, channel=seg.channel or 0)
    except AudioReadError as e:
        raise AudioReadError(f"utterance '{utt}' ({dd.path}/wav.scp entry '{reco}'): {e}") from None
    wav = torch.from_numpy(samples)
    if sample_rate is not None and sr != sample_rate:
        wav, sr = resample(wav, sr, sample_rate), sample_rate
    return wav, sr


def utterance_durations(dd: DataDir) -> dict[str, float]:
    """Seconds per utterance: utt2dur if the dir has it, else from segments, else from
    the audio headers (a pipe has to run: prefer writing utt2dur once)."""
    if dd.utt2dur is not None:
        return {u: dd.utt2dur[u] for u in dd.utterances}
    if dd.segments is not None:
        return {u: dd.segments[u].end - dd.segments[u].start for u in dd.utterances}
    durs = {}
    for utt in dd.utterances:
        try:
            frames, sr = audio_info(dd.wav_scp[utt])
        except AudioReadError as e:
            raise AudioReadError(f"utterance '{utt}' ({dd.path}/wav.scp): {e}") from None
        durs[utt] = frames / sr
    return durs


def load_item_table(dd: DataDir, name: str) -> dict[str, str]:
    """A per-utterance table of the data dir by file name: `utt2lang` as `DataDir` parsed
    it, any other (e.g. HuBERT's `km`) read strictly from `<dir>/<name>`. Every utterance
    must have an entry (named in the error otherwise)."""
    table = dd.utt2lang if name == "utt2lang" else None
    path = dd.path / name if dd.path is not None else Path(name)
    if table is None:
        if not path.is_file():
            raise DataDirError(f"{path}: missing (data.tables names it)")
        table = read_table(path)
    missing = [u for u in dd.utterances if u not in table]
    if missing:
        raise DataDirError(f"{path}: no entry for {len(missing)} utterance(s), e.g. '{missing[0]}'")
    return table


def table_value(value: str) -> str | torch.Tensor:
    """A table entry as an item value: whitespace-separated integers become a long tensor
    (per-frame targets such as `km`), anything else stays a string (`lang`)."""
    try:
        numbers = [int(f) for f in value.split()]
    except ValueError:
        return value
    return torch.tensor(numbers, dtype=torch.long) if numbers else value


class BadUtteranceError(ValueError):
    pass


class AudioDataset(Dataset):
    """Items are dicts: `id`, `audio` `(T,)` float32 at `sample_rate`, `text` when the dir
    has transcripts, one key per entry of `tables` (item key -> table file: e.g.
    {"lang": "utt2lang", "km": "km"}; a key mapped to None is left out), and what the
    `transforms` (callables item -> item, applied in order) add, e.g. `tokens`. `encode` is
    a shortcut for a tokenizing transform.

    Bad utterances (`bad_utterances`: "skip" or "error"; None: no checks, e.g. for
    tools that want every item as it is): unreadable audio, zero-length audio, all-silent
    audio (peak below `silence_dbfs`), audio much shorter than utt2dur says (truncated), and
    whatever a transform marks bad (a transcript of no or only unknown tokens). With
    "skip", such an item comes back as `{"id", "bad": reason}` (collate drops it and the
    trainer counts and reports it); with "error", a `BadUtteranceError` names the
    utterance, its data dir and the reason."""

    def __init__(
        self,
        data_dir: str | Path | DataDir,
        sample_rate: int = 16000,
        encode: Callable[[str], list[int]] | None = None,
        tables: Mapping[str, str] | None = None,
        transforms: Sequence[Callable[[dict], dict]] = (),
        seed: int = 0,
        bad_utterances: str | None = None,
        silence_dbfs: float = -70.0,
    ):
        if bad_utterances not in (None, "skip", "error"):
            raise ValueError(f"bad_utterances={bad_utterances!r}: expected skip, error or None")
        self.bad_utterances = bad_utterances
        self.silence = 10.0 ** (silence_dbfs / 20.0)
        self.dd = data_dir if isinstance(data_dir, DataDir) else DataDir.load(data_dir)
        self.sample_rate = sample_rate
        self.encode = encode
        self.transforms = list(transforms)
        self.seed = seed
        self.ids = self.dd.utterances
        # a table named null is left out (a preset's way to drop a default table, e.g. {lang: null})
        self.tables = {key: load_item_table(self.dd, name) for key, name in (tables or {}).items() if name is not None}
        by_utt = utterance_durations(self.dd)
        self.durations = [by_utt[u] for u in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """`key`: an index, or `(index, epoch)` (a sampler's `tag_epoch`): then the
        transforms' random draws (torch's generator) are seeded by (seed, epoch, index),
        the same in whichever worker or resumed run loads the item."""
        i, epoch = key if isinstance(key, tuple) else (key, None)
        utt = self.ids[i]
        if self.bad_utterances is None:
            audio = self.load_audio(utt)
        else:
            try:
                audio = self.load_audio(utt)
            except (AudioReadError, DataDirError) as e:
                return self._bad(utt, f"unreadable audio: {e}")
            reason = self._audio_fault(audio, self.durations[i])
            if reason:
                return self._bad(utt, reason)
        item = {"id": utt, "audio": audio}
        if self.dd.text is not None:
            item["text"] = self.dd.text[utt]
            if self.encode is not None:
                item["tokens"] = torch.tensor(self.encode(item["text"]), dtype=torch.long)
        for key, table in self.tables.items():
            item[key] = table_value(table[utt])
        if epoch is None or not self.transforms:
            item = self._transform(item)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_item_seed(self.seed, epoch, i))
                item = self._transform(item)
        if "bad" in item and self.bad_utterances is not None:
            return self._bad(utt, item["bad"])
        return item

    def load_audio(self, utt: str) -> torch.Tensor:
        """The utterance's audio `(T,)` at `sample_rate` (a subclass may read it from elsewhere:
        speechlm.data.shards reads it from a tar shard's bytes)."""
        return load_utterance(self.dd, utt, self.sample_rate)[0]

    def _audio_fault(self, audio: torch.Tensor, expected_seconds: float) -> str | None:
        if audio.numel() == 0:
            return "zero-length audio"
        peak = float(audio.abs().max())
        if peak < self.silence:
            return f"all silence (peak {20 * math.log10(peak) if peak > 0 else -math.inf:.0f} dBFS)"
        seconds = audio.numel() / self.sample_rate
        if seconds < 0.9 * expected_seconds - 0.05:
            return f"truncated audio: {seconds:.2f} s read, {expected_seconds:.2f} s expected (utt2dur/header)"
        return None

    def _bad(self, utt: str, reason: str) -> dict:
        if self.bad_utterances == "error":
            raise BadUtteranceError(f"{self.dd.path}: utterance '{utt}': {reason} "
                                    "(data.bad_utterances=skip trains without it and reports it)")
        return {"id": utt, "bad": reason}

    def _transform(self, item: dict) -> dict:
        for transform in self.transforms:
            item = transform(item)
        return item


def _item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed from (seed, epoch, index), well mixed (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(2, np.uint64)[0] >> 1)
