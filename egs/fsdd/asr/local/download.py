"""Fetch the Free Spoken Digit Dataset (Zohar Jackson and contributors, CC BY-SA 4.0) from
its GitHub repository into DIR/recordings.

    python local/download.py downloads/fsdd
"""
from __future__ import annotations

import io
import shutil
import sys
import urllib.request
import zipfile
from pathlib import Path

URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/heads/master.zip"


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "downloads/fsdd")
    if (out / "recordings").is_dir():
        print(f"{out}/recordings already there")
        return 0
    print(f"downloading {URL}")
    with urllib.request.urlopen(URL, timeout=120) as r:
        archive = zipfile.ZipFile(io.BytesIO(r.read()))
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for member in archive.namelist():
        parts = member.split("/", 1)
        if len(parts) == 2 and parts[1].startswith("recordings/") and member.endswith(".wav"):
            target = tmp / parts[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(member))
    tmp.rename(out)  # only a complete download takes the final name
    print(f"{out}/recordings: {len(list((out / 'recordings').glob('*.wav')))} recordings (CC BY-SA 4.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
