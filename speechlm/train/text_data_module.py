"""Text-only data for language models: text files -> token-count-bucketed, padded batches.

    TextDataModule(train_text="data/train/text", valid_text="data/dev/text", tokenizer_dir="data/tokenizer")

A file is a Kaldi `text` table (`utt-id word word ...`, `text_format: kaldi`, the default:
an ASR recipe's transcripts train its LM as they are) or plain text, one sentence per line
(`text_format: plain`; an item's id is then `FILE:LINE`). Every line is tokenized once, up
front, by the tokenizer the ASR model uses (`tokenizer_dir`). Lines that give no token (empty,
an utterance id alone, only characters the tokenizer drops) or only unknown tokens are left
out, counted, logged and listed with their reason in `<exp dir>/bad_text_lines`
(`bad_lines: skip`, the default), or stop the run naming file and line (`bad_lines: error`).

Batches come from the audio data's `DurationBucketSampler` with a line's token count (+1
for eos) as its "duration": `max_tokens` bounds a batch's padded tokens, lines of similar
length are batched together, every rank gets a disjoint shard with the same number of
batches (DDP), and the `ResumableDataLoader` makes a run resumed from a mid-epoch checkpoint
continue with the epoch's remaining batches (`speechlm.train.data_module`).

A batch: `ids` (list of B), `tokens` (B, L) long padded with IGNORE_ID, `token_lens` (B,)
— no sos/eos: the language model adds them (`speechlm.models.lm`). With `loss_on: assistant`
(instruction tuning: chat-formatted lines, as TRL's completion-only collator) also
`loss_mask` (B, L) bool: the loss is on the assistant turns' tokens only (after the chat
template's generation prompt, through the end-of-turn token) and on every token of a line
without a turn (plain pretraining text); a question's unpredictable content (random digits)
then adds no noise to the answers' gradients.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from speechlm.atomic import atomic_write_text
from speechlm.data.collate import IGNORE_ID, pad_sequence_with_lengths
from speechlm.tokenizers.base import Tokenizer, load_tokenizer
from speechlm.train.data_module import bucketed_loader

log = logging.getLogger(__name__)
TEXT_FORMATS = ("kaldi", "plain")
LOSS_ON = ("all", "assistant")


def read_text_lines(path: str | Path, text_format: str = "kaldi") -> list[tuple[str, str, int]]:
    """(id, text, 1-based line number) of every line of `path`; a line that is not UTF-8 is
    an error naming file and line. Kaldi: the first field is the id (a line of only an id
    has empty text, an empty line an empty id); plain: the id is `FILE:LINE`."""
    if text_format not in TEXT_FORMATS:
        raise ValueError(f"text_format {text_format!r}: one of {TEXT_FORMATS}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such text file")
    lines = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{number}: not UTF-8 ({e.reason} at byte {e.start})") from None
            if text_format == "kaldi":
                fields = line.strip().split(maxsplit=1)
                lines.append((fields[0] if fields else "", fields[1] if len(fields) > 1 else "", number))
            else:
                lines.append((f"{path}:{number}", line.strip(), number))
    return lines


class TextDataset(Dataset):
    """The tokenized lines of one text file. `dropped`: [(FILE:LINE id, reason)] of the
    lines left out; item i -> {"id": str, "tokens": (L,) long}."""

    def __init__(self, path: str | Path, tokenizer: Tokenizer, text_format: str = "kaldi", bad_lines: str = "skip",
                 loss_on: str = "all"):
        if bad_lines not in ("skip", "error"):
            raise ValueError(f"bad_lines={bad_lines!r}: skip or error")
        if loss_on not in LOSS_ON:
            raise ValueError(f"loss_on={loss_on!r}: one of {LOSS_ON}")
        self.turns = assistant_turn_ids(tokenizer) if loss_on == "assistant" else None
        self.path = Path(path)
        unk = tokenizer.special_ids.get("unk")
        self.ids: list[str] = []
        self.tokens: list[np.ndarray] = []
        self.dropped: list[tuple[str, str]] = []
        self.total_lines = 0
        for utt, text, number in read_text_lines(path, text_format):
            self.total_lines += 1
            ids = tokenizer.encode(text) if text else []
            reason = ("no token (empty line)" if not text.strip() else "no token" if not ids
                      else "only unknown tokens" if unk is not None and all(i == unk for i in ids) else None)
            if reason is not None:
                where = f"{self.path}:{number}"
                if bad_lines == "error":
                    raise ValueError(f"{where}: {reason} (data.bad_lines=skip leaves such lines out)")
                self.dropped.append((where if text_format == "plain" or not utt else f"{where} {utt}", reason))
                continue
            self.ids.append(utt)
            self.tokens.append(np.asarray(ids, dtype=np.int64))
        if not self.ids:
            raise ValueError(f"{self.path}: none of its {self.total_lines} lines gives a token to train on")

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> list[int]:
        """Tokens each item costs a batch, eos included."""
        return [len(t) + 1 for t in self.tokens]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {"id": self.ids[index], "tokens": torch.from_numpy(self.tokens[index])}
        if self.turns is not None:
            item["loss_mask"] = torch.from_numpy(assistant_mask(self.tokens[index], *self.turns))
        return item


def assistant_turn_ids(tokenizer: Tokenizer) -> tuple[list[int], int]:
    """(the ids that open an assistant turn in the tokenizer's chat template — its generation
    prompt, e.g. `<|im_start|> ▁assistant` —, the end-of-turn id)."""
    if not hasattr(tokenizer, "apply_chat_template") or "end_of_turn" not in tokenizer.special_ids:
        raise ValueError(f"loss_on=assistant needs a tokenizer with a chat template and an end_of_turn token "
                         f"({type(tokenizer).__name__} has {'no chat template' if not hasattr(tokenizer, 'render_chat') else 'no end_of_turn'})")
    turn = [{"role": "user", "content": "x"}]
    with_prompt = tokenizer.apply_chat_template(turn, add_generation_prompt=True)
    without = tokenizer.apply_chat_template(turn, add_generation_prompt=False)
    if with_prompt[: len(without)] != without or len(with_prompt) == len(without):
        raise ValueError("loss_on=assistant: the chat template's generation prompt does not extend the conversation")
    return list(with_prompt[len(without):]), int(tokenizer.special_ids["end_of_turn"])


def assistant_mask(tokens: np.ndarray, opening: list[int], end_of_turn: int) -> np.ndarray:
    """Which tokens the loss is on: those of every assistant turn (after its opening ids,
    through its end-of-turn token); every token of a line with no assistant turn (plain text)."""
    mask = np.zeros(len(tokens), dtype=bool)
    n, k, found = len(tokens), len(opening), False
    i = 0
    while i + k <= n:
        if list(tokens[i : i + k]) == opening:
            found = True
            j = i + k
            while j < n and tokens[j] != end_of_turn:
                j += 1
            mask[i + k : min(j + 1, n)] = True
            i = j + 1
        else:
            i += 1
    return mask if found else np.ones(len(tokens), dtype=bool)


def collate_tokens(items: list[dict[str, Any]]) -> dict[str, Any]:
    """B items -> {"ids": [B], "tokens": (B, L_max) padded with IGNORE_ID, "token_lens": (B,)}."""
    tokens, lens = pad_sequence_with_lengths([item["tokens"] for item in items], pad_value=IGNORE_ID)
    batch = {"ids": [item["id"] for item in items], "tokens": tokens, "token_lens": lens}
    if "loss_mask" in items[0]:  # (B, L_max) bool, False on padding
        batch["loss_mask"] = pad_sequence_with_lengths([item["loss_mask"] for item in items], pad_value=False)[0]
    return batch


class TextDataModule(L.LightningDataModule):
    def __init__(
        self,
        train_text: str | Path,
        valid_text: str | Path,
        tokenizer_dir: str | Path | None,
        text_format: str = "kaldi",
        max_tokens: int = 4000,
        valid_max_tokens: int | None = None,
        num_buckets: int = 10,
        max_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        bad_lines: str = "skip",
        loss_on: str = "all",
    ):
        super().__init__()
        if tokenizer_dir is None:
            raise ValueError("a language model's text data needs tokenizer_dir=DIR (speechlm.bin.train_tokenizer)")
        self.train_text, self.valid_text = train_text, valid_text
        self.tokenizer_dir = tokenizer_dir
        self.text_format, self.bad_lines = text_format, bad_lines
        self.max_tokens, self.valid_max_tokens = max_tokens, valid_max_tokens or max_tokens
        self.num_buckets, self.max_batch_size = num_buckets, max_batch_size
        self.num_workers, self.seed = num_workers, seed
        self.loss_on = loss_on

    def setup(self, stage: str | None = None) -> None:
        tokenizer = load_tokenizer(self.tokenizer_dir)
        self.train_set, self.valid_set = (TextDataset(path, tokenizer, self.text_format, self.bad_lines, self.loss_on)
                                          for path in (self.train_text, self.valid_text))
        dropped = []
        for kind, data in (("training", self.train_set), ("validation", self.valid_set)):
            log.info("%s text %s: %d lines, %d tokens", kind, data.path, len(data), sum(data.lengths()) - len(data))
            if data.dropped:
                reasons = Counter(reason for _, reason in data.dropped)
                log.warning("%s text %s: %d of %d lines left out (%s), e.g. %s", kind, data.path, len(data.dropped),
                            data.total_lines, ", ".join(f"{n} {r}" for r, n in reasons.most_common()),
                            ", ".join(where for where, _ in data.dropped[:3]))
                dropped += data.dropped
        trainer = self.trainer
        if dropped and trainer is not None and trainer.is_global_zero:
            listing = Path(trainer.default_root_dir) / "bad_text_lines"
            atomic_write_text(listing, "".join(f"{where}: {reason}\n" for where, reason in dropped))
            log.warning("the %d lines left out are listed in %s", len(dropped), listing)

    def _loader(self, dataset: TextDataset, max_tokens: int, shuffle: bool) -> DataLoader:
        return bucketed_loader(dataset, dataset.lengths(), max_tokens, collate_tokens, self, shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.max_tokens, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.valid_set, self.valid_max_tokens, shuffle=False)
