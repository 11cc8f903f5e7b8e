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
    `speechlm.bin.train_tokenizer` wrote). An item without a transcript is an error naming it;
    one whose transcript gives no token, or only unknown ones, is marked bad (`item["bad"]`,
    the reason: the dataset's policy drops or refuses it) rather than trained on."""

    def __init__(self, tokenizer_dir: str | os.PathLike | None = None, tokenizer: Tokenizer | None = None):
        if (tokenizer_dir is None) == (tokenizer is None):
            raise ValueError("TokenizeText needs a tokenizer_dir or a tokenizer (one of them)")
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(tokenizer_dir)

    def __call__(self, item: dict) -> dict:
        if "text" not in item:
            raise ValueError(f"utterance '{item['id']}' has no transcript (the data dir has no `text`), "
                             "but data.transforms tokenizes text")
        item["tokens"] = torch.tensor(self.tokenizer.encode(item["text"]), dtype=torch.long)
        unk = self.tokenizer.special_ids.get("unk")
        if len(item["tokens"]) == 0:
            item.setdefault("bad", "empty transcript (no token to train on)")
        elif unk is not None and bool((item["tokens"] == unk).all()):
            item.setdefault("bad", f"transcript {item['text'][:40]!r} is only unknown tokens")
        return item


class MultitaskTargets:
    """Whisper-style decoder targets (`speechlm.models.multitask`) from an item's tables:

        dec_in      [<|startofprev|> prev...] <|startoftranscript|> <|lang|> <|task|> body
        dec_target  ignore_id on the prompt,  <|lang|> <|task|> body <|endoftext|>

    where body is `<|notimestamps|> text` or, with word times, one timestamped segment per
    word `<|t0|> word <|t1|><|t2|> word <|t3|> ...`. Text is encoded with a leading space, as
    Whisper's training data. A transcript with speaker-change marks (`speaker_change`, e.g.
    "one two <sc> three"; serialized output training) gets the vocabulary's speaker-change
    token between speakers, who come in the order of the transcript (first in, first out).

    Per item, a task is drawn with the `tasks` weights among those it has data for
    (transcribe: `text`; translate: the `translation` key, e.g. a table `text.en` read as
    `data.tables.text_en`); timestamps are used with probability `timestamps` when the item
    has `word_times` (a table: start end per word of `text`, in seconds), and the previous
    text (`prev_text` key) as prompt with probability `prev_text`. `language` is the item's
    `lang` (utt2lang) or `default_language`. With `ctc=True`, `ctc_tokens` are the
    transcript's text tokens (for an auxiliary CTC head).
    """

    def __init__(self, tokenizer_dir: str | os.PathLike | None = None, tokenizer: Tokenizer | None = None,
                 tasks: dict[str, float] | None = None, timestamps: float = 0.0, prev_text: float = 0.0,
                 translation: str = "text_en", default_language: str | None = None, speaker_change: str = "<sc>",
                 ctc: bool = False, ignore_id: int = -1, max_prompt_tokens: int = 223):
        if (tokenizer_dir is None) == (tokenizer is None):
            raise ValueError("MultitaskTargets needs a tokenizer_dir or a tokenizer (one of them)")
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(tokenizer_dir)
        if not hasattr(self.tokenizer, "sot_sequence"):
            raise ValueError(f"{type(self.tokenizer).__name__} has no Whisper-style special tokens "
                             "(train one with --multitask-languages, or use WhisperTokenizer)")
        self.tasks = dict(tasks or {"transcribe": 1.0})
        unknown = set(self.tasks) - {"transcribe", "translate"}
        if unknown:
            raise ValueError(f"unknown tasks {sorted(unknown)} (transcribe, translate)")
        self.timestamps = timestamps
        self.prev_text = prev_text
        self.translation = translation
        self.default_language = default_language
        self.speaker_change = speaker_change
        self.ctc = ctc
        self.ignore_id = ignore_id
        self.max_prompt_tokens = max_prompt_tokens
        self.ids = self.tokenizer.special_ids

    def _text(self, text: str) -> list[int]:
        """Text tokens; speaker-change marks become the speaker-change token."""
        parts = text.split(self.speaker_change) if self.speaker_change else [text]
        if len(parts) > 1 and "speaker_change" not in self.ids:
            raise ValueError(f"a transcript with {self.speaker_change!r} needs a vocabulary with a speaker-change token")
        out: list[int] = []
        for k, part in enumerate(parts):
            if k:
                out.append(self.ids["speaker_change"])
            if part.strip():
                out += self.tokenizer.encode(" " + " ".join(part.split()))
        return out

    def _timestamped(self, text: str, times: str, utt: str) -> list[int]:
        words, values = text.split(), [float(v) for v in times.split()]
        if len(values) != 2 * len(words):
            raise ValueError(f"utterance '{utt}': word_times has {len(values)} values for {len(words)} words "
                             "(start and end of each word)")
        out: list[int] = []
        for k, word in enumerate(words):
            start, end = values[2 * k], values[2 * k + 1]
            if not 0 <= start <= end <= 30:
                raise ValueError(f"utterance '{utt}': word '{word}' times {start} {end} are not 0 <= start <= end <= 30")
            out += [self.tokenizer.timestamp_id(start)] + self.tokenizer.encode(" " + word) + \
                   [self.tokenizer.timestamp_id(end)]
        return out

    def __call__(self, item: dict) -> dict:
        utt = item["id"]
        if "text" not in item:
            raise ValueError(f"utterance '{utt}' has no transcript (the data dir has no `text`)")
        available = {t: w for t, w in self.tasks.items() if w > 0 and (t == "transcribe" or self.translation in item)}
        if not available:
            raise ValueError(f"utterance '{utt}': none of the tasks {sorted(self.tasks)} has data "
                             f"(translate needs the item key '{self.translation}')")
        names = list(available)
        task = names[int(torch.multinomial(torch.tensor([available[t] for t in names]), 1))]
        language = item.get("lang", self.default_language)
        sot = self.tokenizer.sot_sequence(language, task)
        text = item["text"] if task == "transcribe" else item[self.translation]
        if task == "transcribe" and "word_times" in item and float(torch.rand(())) < self.timestamps:
            body = self._timestamped(text, item["word_times"], utt)
        else:
            body = [self.ids["no_timestamps"]] + self._text(text)
        sequence = sot + body + [self.ids["eot"]]
        prompt: list[int] = []
        if item.get("prev_text") and float(torch.rand(())) < self.prev_text:
            prompt = [self.ids["sot_prev"]] + self._text(item["prev_text"])[-self.max_prompt_tokens:]
        item["dec_in"] = torch.tensor(prompt + sequence[:-1], dtype=torch.long)
        item["dec_target"] = torch.tensor([self.ignore_id] * len(prompt) + sequence[1:], dtype=torch.long)
        if self.ctc:
            item["ctc_tokens"] = torch.tensor(self._text(item["text"].replace(self.speaker_change, " ")
                                                         if self.speaker_change else item["text"]), dtype=torch.long)
        return item
