"""A map-style dataset over a Kaldi data dir: one item per utterance."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import Dataset

from speechlm.data.audio import AudioReadError, audio_info, read_audio, resample
from speechlm.data.kaldi_dir import DataDir, DataDirError



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


class AudioDataset(Dataset):
    """Items are dicts: `id`, `audio` `(T,)` float32 at `sample_rate`, and, when the dir
    has transcripts, `text` (and `tokens` if an `encode` function is given)."""

    def __init__(
        self,
        data_dir: str | Path | DataDir,
        sample_rate: int = 16000,
        encode: Callable[[str], list[int]] | None = None,
    ):
        self.dd = data_dir if isinstance(data_dir, DataDir) else DataDir.load(data_dir)
        self.sample_rate = sample_rate
        self.encode = encode
        self.ids = self.dd.utterances
        by_utt = utterance_durations(self.dd)
        self.durations = [by_utt[u] for u in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        utt = self.ids[i]
        audio, _ = load_utterance(self.dd, utt, self.sample_rate)
        item = {"id": utt, "audio": audio}
        if self.dd.text is not None:
            item["text"] = self.dd.text[utt]
            if self.encode is not None:
                item["tokens"] = torch.tensor(self.encode(item["text"]), dtype=torch.long)
        return item
