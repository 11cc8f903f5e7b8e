"""Atomic file writes: readers, and a run killed mid-write, see the old file or the new
one, never half of one. Data dirs, tokenizers, CMVN stats and checkpoints all use this.

Durable too: the finished temporary file is fsynced before the rename and its directory
after it, so after a crash of the machine (not only of the process) the name points at
complete data. A process killed mid-write (SIGKILL, out of memory) leaves its temporary
file behind (`.NAME.PID.tmp`, nothing can remove it then): `sweep_temp_files` clears
them when the next run starts."""
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
        fsync_path(tmp)
        os.replace(tmp, path)
        tmp.unlink(missing_ok=True)  # still there if it was a hard link to `path` (rename did nothing)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file's data, or a directory's entries (on POSIX; a no-op for directories
    where the OS cannot open them, e.g. Windows)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if Path(path).is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except (IsADirectoryError, PermissionError):
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sweep_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files `atomic_path` left in `directory` when a writer was killed
    (`.NAME.PID.tmp` whose process no longer runs); returns those removed."""
    removed = []
    for tmp in Path(directory).glob(".*.*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and int(pid) != os.getpid() and _running(int(pid)):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8 with `\\n` line endings whatever the platform (Kaldi files)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
