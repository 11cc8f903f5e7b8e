"""Item transforms: what a dataset item carries beyond `id` and `audio`, chosen in config
(`data.transforms`, name -> `_target_` node, applied in that order). Each is a callable
`item -> item`; collate pads whatever tensors they add (`speechlm.data.collate`).

    data.transforms.tokens:  {_target_: speechlm.data.transforms.TokenizeText, tokenizer_dir: data/tokenizer}

Per-utterance tables of the data dir (`utt2lang`, HuBERT's `km`, ...) are attached by the
dataset itself (`data.tables`), since they are read once per data dir.
"""
from __future__ import annotations

import os

import torch

from speechlm.tokenizers.base import Tokenizer, load_tokenizer


class TokenizeText:
    """`text` -> `tokens` (a long tensor) with a tokenizer (a `Tokenizer` or the directory
    `speechlm.bin.train_tokenizer` wrote). An item without a transcript is an error naming it."""

    def __init__(self, tokenizer_dir: str | os.PathLike | None = None, tokenizer: Tokenizer | None = None):
        if (tokenizer_dir is None) == (tokenizer is None):
            raise ValueError("TokenizeText needs a tokenizer_dir or a tokenizer (one of them)")
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(tokenizer_dir)

    def __call__(self, item: dict) -> dict:
        if "text" not in item:
            raise ValueError(f"utterance '{item['id']}' has no transcript (the data dir has no `text`), "
                             "but data.transforms tokenizes text")
        item["tokens"] = torch.tensor(self.tokenizer.encode(item["text"]), dtype=torch.long)
        return item
