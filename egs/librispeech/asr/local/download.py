"""Download and unpack LibriSpeech subsets (and optionally the LM text) from OpenSLR.

    python local/download.py DIR [--url https://www.openslr.org/resources/12] SUBSET ...
    python local/download.py DIR --lm-text      # resources/11/librispeech-lm-norm.txt.gz

A subset unpacks to DIR/LibriSpeech/<subset>/; one that is already there is skipped. The
tarball is streamed to DIR/<subset>.tar.gz.partial, renamed when complete, unpacked with
tarfile's "data" filter (no absolute paths, links out of the tree or device files), and
kept unless --keep-tarballs false.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

SUBSET_URL = "https://www.openslr.org/resources/12"
LM_TEXT_URL = "https://www.openslr.org/resources/11/librispeech-lm-norm.txt.gz"


def fetch(url: str, target: Path) -> Path:
    if target.is_file():
        return target
    partial = target.with_name(target.name + ".partial")
    print(f"downloading {url}", flush=True)
    with urllib.request.urlopen(url, timeout=120) as r, open(partial, "wb") as f:
        shutil.copyfileobj(r, f, length=1 << 20)
    partial.rename(target)  # only a complete download takes the final name
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path)
    p.add_argument("subsets", nargs="*")
    p.add_argument("--url", default=SUBSET_URL)
    p.add_argument("--lm-text", action="store_true", help="also fetch librispeech-lm-norm.txt.gz (4.3 GB unpacked)")
    p.add_argument("--keep-tarballs", default="true", choices=["true", "false"])
    args = p.parse_intermixed_args(argv)  # run.sh puts the options between DIR and the subsets
    args.dir.mkdir(parents=True, exist_ok=True)
    for subset in args.subsets:
        if (args.dir / "LibriSpeech" / subset).is_dir():
            print(f"{args.dir}/LibriSpeech/{subset} already there")
            continue
        tarball = fetch(f"{args.url}/{subset}.tar.gz", args.dir / f"{subset}.tar.gz")
        with tarfile.open(tarball) as tar:
            tar.extractall(args.dir, filter="data")
        if not (args.dir / "LibriSpeech" / subset).is_dir():
            sys.exit(f"{tarball} did not unpack to {args.dir}/LibriSpeech/{subset}")
        if args.keep_tarballs == "false":
            tarball.unlink()
    if args.lm_text:
        fetch(LM_TEXT_URL, args.dir / "librispeech-lm-norm.txt.gz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
