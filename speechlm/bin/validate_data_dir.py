"""Check a Kaldi data dir; print one `file:line: problem` per fault.

    python -m speechlm.bin.validate_data_dir data/train [--audio] [--sample-rate 16000]

Exit status 0 when the directory is clean, 1 when any fault was found.
"""
from __future__ import annotations

import argparse
import sys

from speechlm.data.kaldi_dir import read_table
from speechlm.data.validate import validate_data_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m speechlm.bin.validate_data_dir", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir")
    p.add_argument("--audio", action="store_true", help="decode every recording (catches unreadable, truncated and empty audio)")
    p.add_argument("--sample-rate", type=int, default=None, help="flag recordings at any other rate")
    p.add_argument("--no-text", action="store_true", help="the dir has no transcripts (e.g. for self-supervised data)")
    args = p.parse_args(argv)

    faults = validate_data_dir(args.data_dir, audio=args.audio, sample_rate=args.sample_rate,
                               require_text=not args.no_text)
    for fault in faults:
        print(fault)
    if faults:
        print(f"{args.data_dir}: {len(faults)} fault(s)", file=sys.stderr)
        return 1
    utt2spk = read_table(f"{args.data_dir}/utt2spk")
    print(f"{args.data_dir}: OK ({len(utt2spk)} utterances, {len(set(utt2spk.values()))} speakers)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
