"""`python -m speechlm.bin.train` with a planted fault inside a checkpoint write:

    python fault_run.py KILL_AT_SAVE OVERRIDES...

The KILL_AT_SAVE-th checkpoint file written (1-based) gets half its bytes into the
temporary file, then the process SIGKILLs itself: a crash in the middle of torch.save."""
from __future__ import annotations

import io
import os
import signal
import sys

import torch

import speechlm.train.checkpoint_io as checkpoint_io
from speechlm.bin.train import main

kill_at = int(sys.argv.pop(1))
saves = 0
real_save = torch.save


class _HalfWritingTorch:
    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def save(obj, f, *args, **kwargs):
        global saves
        saves += 1
        if saves < kill_at:
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        with open(f, "wb") as out:
            out.write(data[: len(data) // 2])
            out.flush()
            os.fsync(out.fileno())
        os.kill(os.getpid(), signal.SIGKILL)


checkpoint_io.torch = _HalfWritingTorch()
sys.exit(main())
