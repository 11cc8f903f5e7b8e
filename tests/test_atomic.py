"""Atomic writes: a failed write leaves the old file; new files get umask permissions."""
from __future__ import annotations

import os

import pytest

from speechlm.atomic import atomic_path, atomic_write_text
from speechlm.data.kaldi_dir import write_table


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "text"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp, open(tmp, "w") as f:
            f.write("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["text"]


def test_written_files_are_not_private(tmp_path):
    old = os.umask(0o022)
    try:
        write_table(tmp_path / "utt2spk", {"b-1": "b", "a-1": "a"})
    finally:
        os.umask(old)
    assert (tmp_path / "utt2spk").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "utt2spk").read_text() == "a-1 a\nb-1 b\n"
