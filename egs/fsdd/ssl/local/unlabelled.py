"""An audio-only data dir (no `text`): the union of data dirs with their transcripts left
behind, so that pretraining cannot read a label even by accident.

    python local/unlabelled.py data/pretrain data/train data/synth_prep/train_synth
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from speechlm.data.combine import combine_data_dirs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("sources", type=Path, nargs="+")
    args = p.parse_args()
    combined, report = combine_data_dirs(list(args.sources))
    for line in report.summary():
        print(f"{args.out}: {line}")
    combined = dataclasses.replace(combined, text=None, path=args.out)
    if args.out.exists():
        for stale in ("text", "km", "km_mfcc", "km_it2"):  # a re-run must not keep old tables
            (args.out / stale).unlink(missing_ok=True)
    combined.save(args.out)
    print(f"{args.out}: {len(combined)} utterances, no transcripts, from {', '.join(map(str, args.sources))}")


if __name__ == "__main__":
    main()
