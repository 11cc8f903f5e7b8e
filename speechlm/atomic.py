"""Atomic file writes: readers, and a run killed mid-write, see the old file or the new
one, never half of one. Data dirs, tokenizers, CMVN stats and checkpoints all use this."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed over `path`
    (same directory, so `os.replace` is atomic), on error it is removed.

    The temporary file is opened with plain `open()` semantics by the caller, so it gets
    the usual umask permissions (mkstemp would make it private to its writer)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8 with `\\n` line endings whatever the platform (Kaldi files)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
