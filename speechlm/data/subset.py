"""`subset_data_dir`: Kaldi's utils/subset_data_dir.sh — pick utterances by list,
speaker list, first/last N, N at random, or the N shortest."""
from __future__ import annotations

import random as _random
from typing import Iterable

from speechlm.data.kaldi_dir import DataDir, DataDirError, DropReport


def subset_data_dir(
    dd: DataDir,
    *,
    utt_list: Iterable[str] | None = None,
    spk_list: Iterable[str] | None = None,
    first: int | None = None,
    last: int | None = None,
    random: int | None = None,
    shortest: int | None = None,
    seed: int = 0,
) -> tuple[DataDir, DropReport]:
    """Select with exactly one criterion. The report lists requested ids that the dir
    does not have (so a typo in a list does not silently shrink a test set)."""
    chosen = [x is not None for x in (utt_list, spk_list, first, last, random, shortest)]
    if sum(chosen) != 1:
        raise ValueError("give exactly one of utt_list, spk_list, first, last, random, shortest")
    report = DropReport()
    utts = dd.utterances
    if utt_list is not None:
        wanted = list(utt_list)
        for u in wanted:
            if u not in dd.utt2spk:
                report.drop(u, "requested utterance not in the data dir")
        keep = [u for u in wanted if u in dd.utt2spk]
    elif spk_list is not None:
        spk2utt = dd.spk2utt
        keep = []
        for s in spk_list:
            if s not in spk2utt:
                report.drop(s, "requested speaker not in the data dir")
            keep += spk2utt.get(s, [])
    elif first is not None:
        keep = utts[:first]
    elif last is not None:
        keep = utts[-last:] if last > 0 else []
    elif random is not None:
        keep = _random.Random(seed).sample(utts, min(random, len(utts)))
    else:
        if dd.utt2dur is None:
            raise DataDirError(f"{dd.path or 'data dir'}: --shortest needs utt2dur (compute it first)")
        keep = sorted(utts, key=lambda u: (dd.utt2dur[u], u))[:shortest]
    return dd.select(keep), report
