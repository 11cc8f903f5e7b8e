"""Combine data dirs into one, as Kaldi's utils/combine_data.sh (destination first).

    python -m speechlm.bin.combine_data_dirs data/train_all data/train_a data/train_b
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechlm.data.combine import combine_data_dirs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m speechlm.bin.combine_data_dirs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dst", type=Path)
    p.add_argument("src", type=Path, nargs="+")
    args = p.parse_args(argv)
    combined, report = combine_data_dirs(args.src)
    combined.save(args.dst)
    for line in report.summary():
        print(f"{args.dst}: {line}", file=sys.stderr)
    print(f"{args.dst}: {len(combined)} utterances from {len(args.src)} dirs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
