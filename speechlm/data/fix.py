"""`fix_data_dir`: Kaldi's utils/fix_data_dir.sh — keep the utterances every file agrees
on, sort, regenerate spk2utt, and report each removal with its reason."""
from __future__ import annotations

from pathlib import Path

from speechlm.data.kaldi_dir import DataDir, DropReport


def fix_data_dir(src: str | Path | DataDir, duration_tolerance: float = 0.05) -> tuple[DataDir, DropReport]:
    """Return the fixed DataDir and what was removed. `src` is a path (loaded leniently:
    bad, duplicate and unsorted lines are handled) or a DataDir."""
    report = DropReport()
    dd = src if isinstance(src, DataDir) else DataDir.load(src, report=report)
    keep = set(dd.utt2spk)

    def require(table, name: str) -> None:
        if table is None:
            return
        for utt in sorted(keep - set(table)):
            report.drop(utt, f"utterance missing from {name}")
            keep.discard(utt)

    if dd.segments is None:
        require(dd.wav_scp, "wav.scp")
    else:
        require(dd.segments, "segments")
        for utt in sorted(keep):
            seg = dd.segments[utt]
            reco_dur = (dd.reco2dur or {}).get(seg.recording)
            problem = None
            if seg.recording not in dd.wav_scp:
                problem = "segment's recording missing from wav.scp"
            elif seg.start < 0 or seg.end <= seg.start:
                problem = "segment with end <= start or negative start"
            elif reco_dur is not None and seg.end > reco_dur + duration_tolerance:
                problem = "segment ends past its recording (reco2dur)"
            if problem:
                report.drop(utt, problem)
                keep.discard(utt)
    for name in ("text", "utt2dur", "utt2lang"):
        require(getattr(dd, name), name)
    if dd.text is not None:
        for utt in sorted(keep):
            if not dd.text[utt].strip():
                report.drop(utt, "empty transcript")
                keep.discard(utt)
    for name in ("text", "segments", "utt2dur", "utt2lang"):
        table = getattr(dd, name)
        for utt in sorted(set(table or ()) - set(dd.utt2spk)):
            report.drop(utt, f"{name} entry for an utterance not in utt2spk")
    fixed = dd.select(keep)
    for reco in sorted(set(dd.wav_scp) - set(fixed.wav_scp)):
        if dd.segments is not None and not any(s.recording == reco for s in dd.segments.values()):
            report.drop(reco, "recording used by no utterance")
        elif dd.segments is None and reco not in dd.utt2spk:
            report.drop(reco, "recording used by no utterance")
    return fixed, report
