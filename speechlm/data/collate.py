"""Collate utterance dicts into padded batch tensors with their lengths.

Items keep the order the sampler chose: ``DurationBucketSampler`` already puts utterances
of similar length together, so sorting here would gain nothing and would break the link
between a sampler's batch and the rows of the tensors. Models that need length-sorted input
(packed RNNs) sort themselves; ``audio_lens`` says everything they need.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

# Padding of token targets. Losses skip it: ``F.cross_entropy(..., ignore_index=IGNORE_ID)``.
# -1 rather than 0 because 0 is usually a real token (<blank> or <unk>).
IGNORE_ID = -1

# Keys collate_audio turns into tensors or renames; other keys are padded (1-D tensors) or
# passed through as lists.
_HANDLED_KEYS = {"id", "audio", "text", "tokens"}


def pad_sequence_with_lengths(
    seqs: Sequence[torch.Tensor], pad_value: float | int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad sequences along their first dim and stack them.

    Args:
        seqs: B tensors of shape (T_i, *), same trailing dims and dtype.
        pad_value: value written after each sequence's end.

    Returns:
        padded: (B, T_max, *) with ``padded[b, :T_b] == seqs[b]``.
        lengths: (B,) long, ``T_b``.
    """
    if len(seqs) == 0:
        raise ValueError("cannot pad an empty list of sequences")
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    padded = pad_sequence(list(seqs), batch_first=True, padding_value=pad_value)
    return padded, lengths


def _require_all_or_none(items: list[dict], key: str) -> bool:
    present = [key in item for item in items]
    if any(present) and not all(present):
        missing = [item.get("id", i) for i, item in enumerate(items) if key not in item]
        raise ValueError(f"key {key!r} is missing from some items of the batch: {missing[:5]}")
    return all(present)


def collate_audio(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch utterance dicts for ``DataLoader(collate_fn=collate_audio)``.

    Args:
        items: B dicts with ``id: str``, ``audio``: (T_i,) float tensor, optionally
            ``text: str``, ``tokens``: list[int] or (L_i,) long tensor, and any other keys.

    Returns:
        ``ids``: list[str] (B); ``audio``: (B, T_max) zero-padded, dtype of the items;
        ``audio_lens``: (B,) long; if the items have them, ``texts``: list[str] (B),
        ``tokens``: (B, L_max) long padded with ``IGNORE_ID``, ``token_lens``: (B,) long.
        Every other key ``k`` whose values are 1-D tensors (e.g. HuBERT's per-frame ``km``)
        comes back padded, as ``k`` (B, L_max) (integers padded with ``IGNORE_ID``, floats
        with 0) and ``k_lens`` (B,); any other values as ``k``: list of the B values.
        Items marked bad (a ``bad`` key: the reason) are left out and listed in
        ``dropped``: [(id, reason)]; if all are, the batch is ``{"ids": [], "dropped"}``.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    dropped = [(item["id"], item["bad"]) for item in items if "bad" in item]
    if dropped:  # bad utterances (speechlm.data.dataset.AudioDataset): listed, not batched
        items = [item for item in items if "bad" not in item]
        if not items:
            return {"ids": [], "dropped": dropped}
        batch = collate_audio(items)
        batch["dropped"] = dropped
        return batch
    for key in ("id", "audio"):
        if not _require_all_or_none(items, key):
            raise ValueError(f"every item needs an {key!r} key")
    for item in items:
        if item["audio"].dim() != 1:
            shape = tuple(item["audio"].shape)
            raise ValueError(f"{item['id']}: audio must be 1-D (samples,), got shape {shape}")

    audio, audio_lens = pad_sequence_with_lengths([item["audio"] for item in items], pad_value=0.0)
    batch: dict[str, Any] = {"ids": [item["id"] for item in items], "audio": audio, "audio_lens": audio_lens}

    if _require_all_or_none(items, "text"):
        batch["texts"] = [item["text"] for item in items]
    if _require_all_or_none(items, "tokens"):
        tokens = [torch.as_tensor(item["tokens"], dtype=torch.long).reshape(-1) for item in items]
        batch["tokens"], batch["token_lens"] = pad_sequence_with_lengths(tokens, pad_value=IGNORE_ID)

    other_keys = dict.fromkeys(k for item in items for k in item if k not in _HANDLED_KEYS)
    for key in other_keys:  # first-seen order, so the batch's keys are reproducible
        _require_all_or_none(items, key)
        if key in batch or f"{key}_lens" in batch:
            raise ValueError(f"item key {key!r} clashes with an output key of collate_audio")
        values = [item[key] for item in items]
        if all(isinstance(v, torch.Tensor) and v.dim() == 1 for v in values):
            pad = IGNORE_ID if not values[0].is_floating_point() else 0.0
            batch[key], batch[f"{key}_lens"] = pad_sequence_with_lengths(values, pad_value=pad)
        else:
            batch[key] = values
    return batch


def select_rows(batch: dict[str, Any], rows: torch.Tensor) -> dict[str, Any]:
    """The batch of the utterances at `rows` (a 1-D long tensor of row indices): tensors and
    lists with one entry per utterance are indexed, anything else is kept as it is."""
    n = batch_size(batch)
    index = rows.tolist()
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if key == "dropped":
            out[key] = value
        elif isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n:
            out[key] = value[rows.to(value.device)]
        elif isinstance(value, list) and len(value) == n:
            out[key] = [value[i] for i in index]
        else:
            out[key] = value
    return out


def batch_size(batch: dict[str, Any]) -> int:
    """Utterances in a batch (0 for one whose every item was dropped as bad)."""
    return len(batch["audio_lens"]) if "audio_lens" in batch else len(batch.get("ids", ()))
