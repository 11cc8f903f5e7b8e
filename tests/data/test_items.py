"""What a batch holds comes from config: a data dir without `text` gives audio-only
batches (pretraining), `utt2lang` gives `lang`, an integer table (HuBERT's `km`) is padded
by collate with its lengths, transforms add keys, and a broken table is named."""
from __future__ import annotations

import pytest
import torch

from fixtures import make_data_dir
from speechlm.data.kaldi_dir import DataDirError
from speechlm.data.transforms import TokenizeText
from speechlm.tokenizers import CharTokenizer
from speechlm.train.data_module import SpeechDataModule


def batches(data, **kwargs):
    dm = SpeechDataModule(data, data, max_seconds=100.0, num_buckets=1, **kwargs)
    dm.setup()
    return list(dm.train_dataloader())


def test_audio_only_data_dir_gives_audio_only_batches(tmp_path):
    data = make_data_dir(tmp_path)
    (data / "text").unlink()
    (batch,) = batches(data)
    assert set(batch) == {"ids", "audio", "audio_lens"} and len(batch["ids"]) == 6
    with pytest.raises(ValueError, match="has no transcript"):  # a tokenizing transform needs text
        batches(data, transforms={"tokens": TokenizeText(tokenizer=CharTokenizer.train(["a b"]))})


def test_tables_and_transforms_reach_the_batch(tmp_path):
    data = make_data_dir(tmp_path)
    utts = (data / "utt2spk").read_text().split()[::2]
    (data / "utt2lang").write_text("".join(f"{u} {'en' if i % 2 else 'de'}\n" for i, u in enumerate(utts)))
    frames = {u: list(range(i + 1)) for i, u in enumerate(utts)}  # 1..6 cluster ids per utterance
    (data / "km").write_text("".join(f"{u} {' '.join(map(str, frames[u]))}\n" for u in utts))
    tok = CharTokenizer.train((data / "text").read_text().split("\n"))
    (batch,) = batches(data, tables={"lang": "utt2lang", "km": "km"},
                       transforms={"tokens": TokenizeText(tokenizer=tok)})
    order = batch["ids"]
    assert batch["lang"] == ["en" if utts.index(u) % 2 else "de" for u in order]
    assert batch["km"].dtype == torch.long and batch["km_lens"].tolist() == [len(frames[u]) for u in order]
    for row, u in enumerate(order):
        n = len(frames[u])
        assert batch["km"][row, :n].tolist() == frames[u] and (batch["km"][row, n:] == -1).all()
    assert batch["tokens"].shape[0] == 6 and batch["token_lens"].min() > 0


def test_a_table_missing_an_utterance_is_named(tmp_path):
    data = make_data_dir(tmp_path)
    first = (data / "utt2spk").read_text().split()[0]
    (data / "km").write_text(f"{first} 1 2 3\n")
    with pytest.raises(DataDirError, match=r"km: no entry for 5 utterance\(s\)"):
        batches(data, tables={"km": "km"})
    with pytest.raises(DataDirError, match="missing"):
        batches(data, tables={"x": "nonexistent"})


def test_a_table_named_null_is_left_out(tmp_path):
    """A preset drops a default table by naming it null (conf/data/multitask.yaml's `lang`
    for data dirs without utt2lang)."""
    data = make_data_dir(tmp_path)
    (batch,) = batches(data, tables={"lang": None})
    assert "lang" not in batch and len(batch["ids"]) == 6
