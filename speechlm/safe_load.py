"""Reading model files without running code in them.

A `.ckpt` / `.pt` / `.pth` / `.bin` file is a pickle, and unpickling can call any function
the file names. `load_weights` reads one with `torch.load(weights_only=True)`: tensors,
numbers, strings and containers only. A file that holds anything else (a pickled object, a
payload) is refused with `UnsafeFileError` naming the file and what it holds, before any of
it runs. (PyTorch's own message suggests `weights_only=False`; nothing in speechlm needs it,
and a file that needs it is not one speechlm wrote.)
"""
from __future__ import annotations

import os
import pickle
import re
from typing import Any

import torch


class UnsafeFileError(ValueError):
    """A model file holding pickled Python objects beyond tensors and plain data."""


def _what(message: str) -> str:
    """The line of PyTorch's weights_only error that says what the file holds."""
    for pattern in (r"(Trying to load unsupported GLOBAL [^\n]*)", r"(Unsupported global: [^\n]*)",
                    r"WeightsUnpickler error: \s*([^\n]+)"):
        m = re.search(pattern, message)
        if m:
            return m.group(1).strip()[:200]
    return message.strip().splitlines()[0][:200] if message.strip() else "not plain data"


def load_weights(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """`torch.load(path, map_location, weights_only=True)`, with UnsafeFileError (a
    ValueError) naming `path` for a file that holds more than tensors and plain data, and
    a ValueError naming it for a file that is not a pickle at all."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():  # not refused: a truncated or corrupt file
            raise ValueError(f"{path}: not a readable PyTorch file ({str(e).strip()[:200]})") from None
        raise UnsafeFileError(f"{path}: refused: not only tensors and plain data ({_what(str(e))}); unpickling it "
                              "could run code, so it is not loaded") from None
