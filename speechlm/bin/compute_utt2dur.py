"""Write utt2dur (and reco2dur) for a data dir, as Kaldi's utils/data/get_utt2dur.sh.

    python -m speechlm.bin.compute_utt2dur data/train
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechlm.data.audio import audio_info
from speechlm.data.dataset import utterance_durations
from speechlm.data.kaldi_dir import DataDir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m speechlm.bin.compute_utt2dur", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", type=Path)
    args = p.parse_args(argv)
    dd = DataDir.load(args.data_dir)
    dd.utt2dur = None  # re-measure: a stale utt2dur is the usual reason to run this
    if dd.segments is not None:
        dd.reco2dur = {}
        for reco, entry in dd.wav_scp.items():
            frames, sr = audio_info(entry)
            dd.reco2dur[reco] = frames / sr
    dd.utt2dur = utterance_durations(dd)
    dd.save(args.data_dir)
    print(f"{args.data_dir}: utt2dur for {len(dd.utt2dur)} utterances, {sum(dd.utt2dur.values()) / 3600:.2f} h", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
