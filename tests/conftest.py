"""Shared fixtures: small Kaldi data dirs written by the tests themselves."""
from __future__ import annotations

from pathlib import Path

import pytest

from fixtures import make_data_dir


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return make_data_dir(tmp_path)
