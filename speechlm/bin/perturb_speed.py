"""Speed-perturb a data dir 3-way, as Kaldi's utils/data/perturb_data_dir_speed_3way.sh:
ids of the 0.9/1.1 copies get `sp0.9-`/`sp1.1-` prefixes; perturbed audio is written to
DST/wav/ (or left as `sox ... speed f |` pipes with --sox).

    python -m speechlm.bin.perturb_speed data/train data/train_sp
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechlm.data.dataset import utterance_durations
from speechlm.data.kaldi_dir import DataDir
from speechlm.data.speed_perturb import perturb_speed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m speechlm.bin.perturb_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--factors", type=float, nargs="+", default=[0.9, 1.0, 1.1])
    p.add_argument("--sox", action="store_true", help="write sox pipes instead of audio files (needs sox at training time)")
    args = p.parse_args(argv)
    dd = DataDir.load(args.src)
    if dd.utt2dur is None:  # the sampler needs durations; scale them rather than re-measure 3x the audio
        dd.utt2dur = utterance_durations(dd)
    out = perturb_speed(dd, tuple(args.factors), audio_dir=None if args.sox else args.dst / "wav", sox=args.sox)
    out.save(args.dst)
    print(f"{args.dst}: {len(out)} utterances ({len(dd)} x {len(args.factors)} speeds)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
