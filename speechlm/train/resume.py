"""Where a re-run of `speechlm.bin.train` resumes from, and whether it may.

- `resume_checkpoint`: `checkpoints/last.ckpt` if it loads; if it is truncated or corrupt
  (a disk that filled up, a copy cut short, a machine that lost power before the data
  reached the disk) the error says so and the newest checkpoint that does load is used
  instead (`last.prev.ckpt`, which `AtomicCheckpointIO` keeps, then the epoch checkpoints).
- `resume_mismatches`: what differs between the checkpoint and this run in the pieces a
  resumed run must not change under a trained model: the model's config, the tokenizer and
  the CMVN statistics (by content, not by path). A run that differs refuses to resume
  unless `resume=force`; other config differences (trainer, optim, data) are listed in a
  warning.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from speechlm.safe_load import load_weights

log = logging.getLogger("speechlm.train")


class CheckpointError(RuntimeError):
    pass


def load_checkpoint_file(path: Path) -> dict:
    """A training checkpoint, `weights_only`; CheckpointError naming the file if it is not one."""
    try:
        ckpt = load_weights(path)
    except Exception as e:  # truncated zip, bad magic number, a pickle that is not plain data, ...
        raise CheckpointError(f"{path}: unreadable checkpoint ({str(e).splitlines()[0][:300]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a training checkpoint (no state_dict)")
    return ckpt


def resume_checkpoint(ckpt_dir: Path) -> tuple[Path, dict] | None:
    """(path, loaded checkpoint) to resume from, or None if there is none. Falls back past
    unreadable ones (each named in an error message) to the newest readable by global step."""
    last = ckpt_dir / "last.ckpt"
    candidates = [last, ckpt_dir / "last.prev.ckpt"]
    if not any(p.exists() for p in candidates):
        return None
    candidates += sorted((p for p in ckpt_dir.glob("*.ckpt") if p not in candidates),
                         key=lambda p: p.stat().st_mtime, reverse=True)
    good: list[tuple[int, Path, dict]] = []
    for path in candidates:
        if not path.exists():
            continue
        try:
            ckpt = load_checkpoint_file(path)
        except CheckpointError as e:
            log.error("%s", e)
            continue
        if path == last:
            return path, ckpt
        good.append((int(ckpt.get("global_step", 0)), path, ckpt))
    if not good:
        raise CheckpointError(f"{ckpt_dir}: no checkpoint there loads (see the errors above); "
                              "move the directory away to train from scratch")
    step, path, ckpt = max(good, key=lambda g: g[0])
    log.error("%s is unreadable: resuming from %s (step %d) instead", last, path, step)
    return path, ckpt


def file_fingerprint(path: str | Path | None) -> str | None:
    """sha256 of a file's content (None for no file)."""
    if not path:
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _strip_init_from(node: Any) -> Any:
    """A config without `init_from` entries (they only matter when starting from scratch)."""
    if isinstance(node, dict):
        return {k: _strip_init_from(v) for k, v in node.items() if k != "init_from"}
    if isinstance(node, list):
        return [_strip_init_from(v) for v in node]
    return node


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, as 'key: old -> new'."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{name}: (absent) -> {new[key]!r}")
            elif key not in new:
                out.append(f"{name}: {old[key]!r} -> (absent)")
            else:
                out += config_differences(old[key], new[key], name)
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def resume_mismatches(ckpt: dict, resolved: dict, tokenizer: dict | None, fingerprints: dict) -> tuple[list[str], list[str]]:
    """(blocking, other) differences between a checkpoint and this run. Blocking: the model
    config (init_from aside), the tokenizer, the CMVN statistics' content. Other: the rest of
    the config (trainer, optim, data, ...), which a resumed run may change on purpose."""
    meta = ckpt.get("speechlm") or {}
    old_config = meta.get("config") or {}
    blocking = [f"model.{d}" for d in config_differences(_strip_init_from(old_config.get("model")),
                                                         _strip_init_from(resolved.get("model")))]
    if meta.get("tokenizer") != tokenizer and "tokenizer" in meta:
        blocking.append("tokenizer: the tokenizer_dir's tokenizer is not the checkpoint's")
    old_prints = meta.get("fingerprints") or {}
    for name, value in fingerprints.items():
        if name in old_prints and old_prints[name] != value:
            blocking.append(f"{name}: file content differs from the checkpoint's ({old_prints[name][:12]} -> "
                            f"{str(value)[:12]})")
    other = [d for d in config_differences({k: v for k, v in old_config.items() if k != "model"},
                                           {k: v for k, v in resolved.items() if k != "model"})]
    return blocking, other
