"""`combine_data_dirs`: Kaldi's utils/combine_data.sh — the union of several dirs."""
from __future__ import annotations

from pathlib import Path

from speechlm.data.kaldi_dir import DataDir, DataDirError, DropReport

_OPTIONAL = ("text", "segments", "utt2dur", "reco2dur", "utt2lang")


def combine_data_dirs(dirs: list[DataDir | str | Path]) -> tuple[DataDir, DropReport]:
    """Union of `dirs`. An id present in several dirs with the same content is kept
    once (reported); with different content it is an error naming both dirs. An
    optional file that only some dirs have is left out of the result (reported), as
    Kaldi does, since a partial table would fail validation."""
    dds = [d if isinstance(d, DataDir) else DataDir.load(d) for d in dirs]
    if not dds:
        raise ValueError("nothing to combine")
    if len({d.segments is None for d in dds}) > 1:
        raise DataDirError("cannot combine dirs with and without segments: "
                           + ", ".join(f"{d.path}: {'has' if d.segments is not None else 'no'} segments" for d in dds))
    report = DropReport()
    out = DataDir(wav_scp={}, utt2spk={})
    for name in ("wav_scp", "utt2spk") + _OPTIONAL:
        have = [d for d in dds if getattr(d, name) is not None]
        if name in _OPTIONAL and len(have) != len(dds):
            if have:
                missing = [str(d.path) for d in dds if getattr(d, name) is None]
                report.drop(name, f"{name} left out: missing in {', '.join(missing)}")
            continue
        fname = "wav.scp" if name == "wav_scp" else name
        merged, origin = {}, {}
        for d in have:
            for k, v in getattr(d, name).items():
                if k in merged:
                    if merged[k] != v:
                        raise DataDirError(f"{d.path}/{fname}: id '{k}' also in {origin[k]} with different content")
                    report.drop(k, f"duplicate {fname} entry with identical content (kept once)")
                    continue
                merged[k], origin[k] = v, d.path
        setattr(out, name, merged)
    return out, report
