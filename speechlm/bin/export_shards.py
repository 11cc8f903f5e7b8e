"""Export a Kaldi data dir to webdataset tar shards for streaming training.

    python -m speechlm.bin.export_shards data/train shards/train [--max-count 1000] [--max-bytes 1e9]
    python -m speechlm.bin.train data=shards data.train_shards=shards/train data.valid_shards=data/dev ...

Writes OUT/shard-000000.tar, ... (per utterance its audio and a json record of its
transcript and per-utterance tables), OUT/shards.json (per shard its utterance ids and
durations) and OUT/failed (utterances that could not be exported, with the reason). The
shards may then be served from anywhere fsspec reads (http(s)://, s3://, ...): give the
directory's URL as data.train_shards. Exit status 1 if no utterance could be exported.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechlm.data.kaldi_dir import DataDirError
from speechlm.data.shard_export import export_shards


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m speechlm.bin.export_shards", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--max-count", type=int, default=1000, help="utterances per shard at most (default 1000)")
    p.add_argument("--max-bytes", type=float, default=1e9, help="bytes of audio and records per shard at most")
    p.add_argument("--seed", type=int, default=0, help="the order utterances are written in is shuffled by it")
    args = p.parse_args(argv)
    try:
        result = export_shards(args.data_dir, args.out_dir, args.max_count, int(args.max_bytes), args.seed)
    except DataDirError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, why in sorted(result.skipped_tables.items()):
        print(f"{args.data_dir}/{name}: not exported: {why}", file=sys.stderr)
    for utt, why in sorted(result.failed.items()):
        print(f"failed: {utt}: {why}", file=sys.stderr)
    print(f"{args.out_dir}: exported {result.exported} utterances in {len(result.shards)} shards"
          f" (tables: {', '.join(result.tables) or 'none'}); {len(result.failed)} failed"
          + (f", listed in {args.out_dir / 'failed'}" if result.failed else ""), file=sys.stderr)
    return 0 if result.exported else 1


if __name__ == "__main__":
    sys.exit(main())
