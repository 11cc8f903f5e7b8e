"""Copy part of a data dir, as Kaldi's utils/subset_data_dir.sh.

    python -m speechlm.bin.subset_data_dir data/train data/train_2k --shortest 2000
    python -m speechlm.bin.subset_data_dir data/train data/dev --utt-list dev.list
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechlm.data.kaldi_dir import DataDir
from speechlm.data.subset import subset_data_dir


def _ids(path: str) -> list[str]:
    return [line.split()[0] for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m speechlm.bin.subset_data_dir", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--utt-list", help="file whose first column lists the utterances to keep")
    how.add_argument("--spk-list", help="file whose first column lists the speakers to keep")
    how.add_argument("--first", type=int)
    how.add_argument("--last", type=int)
    how.add_argument("--random", type=int, metavar="N", help="N utterances at random (see --seed)")
    how.add_argument("--shortest", type=int, metavar="N", help="the N shortest utterances (needs utt2dur)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    sub, report = subset_data_dir(
        DataDir.load(args.src),
        utt_list=_ids(args.utt_list) if args.utt_list else None,
        spk_list=_ids(args.spk_list) if args.spk_list else None,
        first=args.first, last=args.last, random=args.random, shortest=args.shortest, seed=args.seed,
    )
    sub.save(args.dst)
    for line in report.summary():
        print(f"{args.dst}: {line}", file=sys.stderr)
    print(f"{args.dst}: {len(sub)} utterances", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
