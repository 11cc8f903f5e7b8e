"""collate_audio / pad_sequence_with_lengths: shapes, padding values, lengths, key handling."""

from __future__ import annotations

import pytest
import torch

from speechlm.data.collate import IGNORE_ID, collate_audio, pad_sequence_with_lengths


def item(uid, num_samples, tokens=None, text=None, **extra):
    out = {"id": uid, "audio": torch.arange(1, num_samples + 1, dtype=torch.float32), **extra}
    if tokens is not None:
        out["tokens"] = tokens
    if text is not None:
        out["text"] = text
    return out


def test_ignore_id_is_minus_one():
    assert IGNORE_ID == -1


def test_audio_is_zero_padded_with_lengths_in_given_order():
    batch = collate_audio([item("a", 3), item("b", 5), item("c", 1)])
    assert batch["ids"] == ["a", "b", "c"]  # not sorted by length
    assert batch["audio"].shape == (3, 5) and batch["audio"].dtype == torch.float32
    assert batch["audio_lens"].tolist() == [3, 5, 1] and batch["audio_lens"].dtype == torch.long
    assert batch["audio"][0].tolist() == [1, 2, 3, 0, 0]
    assert batch["audio"][2].tolist() == [1, 0, 0, 0, 0]
    assert batch["audio"][1].tolist() == [1, 2, 3, 4, 5]
    assert "tokens" not in batch and "texts" not in batch and "token_lens" not in batch


def test_tokens_padded_with_ignore_id_from_lists_and_tensors():
    batch = collate_audio(
        [item("a", 2, tokens=[5, 0, 7], text="x y"), item("b", 4, tokens=torch.tensor([0]), text="z"),
         item("c", 1, tokens=[], text="")]
    )
    assert batch["texts"] == ["x y", "z", ""]
    assert batch["tokens"].dtype == torch.long
    assert batch["tokens"].tolist() == [[5, 0, 7], [0, -1, -1], [-1, -1, -1]]
    assert batch["token_lens"].tolist() == [3, 1, 0] and batch["token_lens"].dtype == torch.long


def test_other_keys_pass_through_as_lists():
    batch = collate_audio([item("a", 2, lang="en", speed=1.0), item("b", 3, lang="de", speed=0.9)])
    assert batch["lang"] == ["en", "de"]
    assert batch["speed"] == [1.0, 0.9]


def test_key_in_some_items_only_raises():
    with pytest.raises(ValueError, match="'tokens' is missing"):
        collate_audio([item("a", 2, tokens=[1]), item("b", 3)])
    with pytest.raises(ValueError, match="'lang' is missing"):
        collate_audio([item("a", 2), item("b", 3, lang="en")])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="empty"):
        collate_audio([])
    with pytest.raises(ValueError, match="1-D"):
        collate_audio([{"id": "a", "audio": torch.zeros(2, 10)}])
    with pytest.raises(ValueError, match="'audio'"):
        collate_audio([{"id": "a"}])


def test_pad_sequence_with_lengths_keeps_trailing_dims():
    seqs = [torch.ones(2, 3), torch.ones(4, 3) * 2]
    padded, lengths = pad_sequence_with_lengths(seqs, pad_value=-5.0)
    assert padded.shape == (2, 4, 3)
    assert lengths.tolist() == [2, 4] and lengths.dtype == torch.long
    assert torch.all(padded[0, 2:] == -5.0) and torch.all(padded[0, :2] == 1.0)
    assert torch.equal(padded[1], seqs[1])
