"""Make a data dir consistent, as Kaldi's utils/fix_data_dir.sh: sort every file, drop
duplicate/unparseable lines and utterances that some file lacks, regenerate spk2utt.
The original files are kept in DIR/.backup/; every removal is reported with its reason.

    python -m speechlm.bin.fix_data_dir data/train
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from speechlm.data.fix import fix_data_dir
from speechlm.data.kaldi_dir import TABLE_FILES


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m speechlm.bin.fix_data_dir", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", type=Path)
    args = p.parse_args(argv)
    fixed, report = fix_data_dir(args.data_dir)
    backup = args.data_dir / ".backup"
    backup.mkdir(exist_ok=True)
    for name in TABLE_FILES:
        if (args.data_dir / name).is_file():
            shutil.copy2(args.data_dir / name, backup / name)
    fixed.save(args.data_dir)
    for line in report.summary():
        print(f"{args.data_dir}: {line}", file=sys.stderr)
    print(f"{args.data_dir}: {len(fixed)} utterances kept, {report.total} entries removed (originals in {backup})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
