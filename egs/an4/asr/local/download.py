"""Download CMU AN4 (an4_sphere.tar.gz, 64 MB: NIST SPHERE audio) and unpack it to DIR/an4.

    python local/download.py DIR [--url URL] [--sha256 HEX]

The URL is CMU's, which ESPnet's egs2/an4/asr1 (local/data.sh: data_url) also uses. The
archive is checked against --sha256 before unpacking (empty: no check) and unpacked with
tarfile's "data" filter (no absolute paths, links out of the tree or device files).
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

URL = "http://www.speech.cs.cmu.edu/databases/an4/an4_sphere.tar.gz"
# As published in NVIDIA NeMo's AN4 example code (AN4_SHA256); not re-computed here (no
# network on the machine this recipe was written on): pass --sha256 "" to skip the check.
SHA256 = "a0525579493735d32b60fb6fa5975dd0eaacde087b0a4eeb7f13b7ef33077b12"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path)
    p.add_argument("--url", default=URL)
    p.add_argument("--sha256", default=SHA256)
    args = p.parse_args(argv)
    if (args.dir / "an4" / "etc").is_dir():
        print(f"{args.dir}/an4 already there")
        return 0
    args.dir.mkdir(parents=True, exist_ok=True)
    tarball = args.dir / "an4_sphere.tar.gz"
    if not tarball.is_file():
        print(f"downloading {args.url}", flush=True)
        partial = tarball.with_name(tarball.name + ".partial")
        with urllib.request.urlopen(args.url, timeout=120) as r, open(partial, "wb") as f:
            shutil.copyfileobj(r, f, length=1 << 20)
        partial.rename(tarball)
    if args.sha256:
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
        if digest != args.sha256:
            sys.exit(f"{tarball}: sha256 {digest}, expected {args.sha256} (a different or damaged "
                     "download; delete it and retry, or pass --sha256 '' if the source changed)")
    with tarfile.open(tarball) as tar:
        tar.extractall(args.dir, filter="data")
    if not (args.dir / "an4" / "etc").is_dir():
        sys.exit(f"{tarball} did not unpack to {args.dir}/an4/etc")
    print(f"{args.dir}/an4 ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
