"""Instruction data for speech-LLMs (`speechlm.models.speech_llm`) from Kaldi data dirs: per
utterance, a task is drawn from a configured mix; its instruction goes into the LM's chat
template with the audio placeholder, its answer is a per-utterance table of the data dir.

    data.tables:        {qa_count: qa_count, translate_de: translate_de}   (item key -> file)
    data.transforms.targets:
      _target_: speechlm.data.instructions.InstructionTargets
      tokenizer_dir: data/lm_tokenizer        # an HFTokenizer with `audio` and `end_of_turn` roles
      tasks:
        transcribe: {table: text, instructions: [Transcribe the audio.], weight: 1.0}
        qa_count:   {table: qa_count, instructions: [How many digits are spoken?], weight: 1.0}

An item gets `prompt_ids` (the rendered chat prompt up to the assistant's turn, holding one
audio token where the speech is spliced in), `answer_ids` (the answer's tokens and the
end-of-turn token: what the loss is on) and `task` (the task's name). The draw uses the
global torch generator (seeded per dataloader worker by Lightning), like
`speechlm.data.transforms.MultitaskTargets`; a task whose table the item lacks is not drawn.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from speechlm.tokenizers.base import Tokenizer, load_tokenizer


def audio_token(tokenizer: Tokenizer) -> str:
    """The tokenizer's audio placeholder token (its `audio` role)."""
    if "audio" not in tokenizer.special_tokens:
        raise ValueError(f"{type(tokenizer).__name__} has no 'audio' special token (the placeholder where the "
                         "speech is spliced in): train it with one (speechlm.bin.train_hf_tokenizer does) or "
                         "name one: HFTokenizer.from_pretrained(dir, special_tokens={'audio': '<|audio|>'})")
    return tokenizer.special_tokens["audio"]


def chat_messages(instruction: str, audio: str, system: str | None = None) -> list[dict[str, str]]:
    """The conversation of one speech instruction: [system], user = audio placeholder + instruction."""
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": f"{audio} {instruction}".strip()}]


def chat_prompt_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Ids of a conversation up to the assistant's turn (the template's generation prompt),
    starting with the tokenizer's bos (`sos` role) as the LM saw every training sequence
    start: a template that writes it itself (LLaMA-3's) gets no second one, a vocabulary
    without one (Qwen2's) none."""
    ids = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    bos = tokenizer.special_ids.get("sos")
    return ids if bos is None or ids[:1] == [bos] else [bos] + ids


def prompt_ids(tokenizer, instruction: str, system: str | None = None) -> list[int]:
    """Ids of the chat prompt asking `instruction` about the audio, ending where the
    assistant's answer starts (`chat_prompt_ids`)."""
    ids = chat_prompt_ids(tokenizer, chat_messages(instruction, audio_token(tokenizer), system))
    audio_id = tokenizer.special_ids["audio"]
    if ids.count(audio_id) != 1:
        raise ValueError(f"the chat prompt for {instruction!r} holds {ids.count(audio_id)} audio tokens, not one "
                         "(does the instruction or system prompt spell the audio token out?)")
    return list(ids)


def answer_ids(tokenizer, answer: str) -> list[int]:
    """Ids of an answer as the assistant's turn: its tokens and the end-of-turn token."""
    ids = tokenizer.special_ids
    end = ids.get("end_of_turn", ids.get("eos"))
    if end is None:
        raise ValueError(f"{type(tokenizer).__name__} has neither an 'end_of_turn' nor an 'eos' token to end answers")
    return list(tokenizer.encode(answer)) + [end]


class InstructionTargets:
    """Item transform: draws a task (weighted, among those whose table the item has) and adds
    `prompt_ids`, `answer_ids` and `task` (module docstring).

    Args:
        tasks: name -> {table: item key of the answer (`text`, or a `data.tables` key),
            instructions: list of phrasings (one drawn per item) or instruction: one,
            weight: relative frequency (default 1)}.
        system: an optional system prompt for every item.
    """

    def __init__(self, tasks: Mapping[str, Mapping[str, Any]], tokenizer_dir: str | os.PathLike | None = None,
                 tokenizer: Tokenizer | None = None, system: str | None = None):
        if (tokenizer_dir is None) == (tokenizer is None):
            raise ValueError("InstructionTargets needs a tokenizer_dir or a tokenizer (one of them)")
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(tokenizer_dir)
        if not tasks:
            raise ValueError("InstructionTargets: no tasks (data.transforms.targets.tasks)")
        self.tasks: dict[str, tuple[str, list[list[int]], float]] = {}
        for name, spec in tasks.items():
            spec = dict(spec)
            unknown = set(spec) - {"table", "instructions", "instruction", "weight"}
            if unknown or "table" not in spec:
                raise ValueError(f"task {name!r}: needs `table` and `instructions` (or `instruction`), optional "
                                 f"`weight`; got {sorted(spec)}")
            phrasings = spec.get("instructions") or [spec.get("instruction")]
            if isinstance(phrasings, str):
                phrasings = [phrasings]
            if not all(isinstance(p, str) and p.strip() for p in phrasings):
                raise ValueError(f"task {name!r}: instructions must be non-empty strings, got {phrasings!r}")
            weight = float(spec.get("weight", 1.0))
            if weight < 0:
                raise ValueError(f"task {name!r}: weight {weight} < 0")
            if weight > 0:
                self.tasks[name] = (str(spec["table"]), [prompt_ids(self.tokenizer, p, system) for p in phrasings],
                                    weight)
        if not self.tasks:
            raise ValueError("InstructionTargets: every task has weight 0")

    def __call__(self, item: dict) -> dict:
        available = [name for name, (table, _, _) in self.tasks.items() if table in item]
        if not available:
            tables = sorted({table for table, _, _ in self.tasks.values()})
            raise ValueError(f"utterance '{item['id']}' has none of the task tables {tables} "
                             "(add them to data.tables, or the data dir lacks them)")
        weights = torch.tensor([self.tasks[name][2] for name in available])
        name = available[int(torch.multinomial(weights, 1))] if len(available) > 1 else available[0]
        table, prompts, _ = self.tasks[name]
        prompt = prompts[int(torch.randint(len(prompts), ()))] if len(prompts) > 1 else prompts[0]
        answer = item[table]
        if isinstance(answer, torch.Tensor):  # a table of integers (speechlm.data.dataset.table_value)
            answer = " ".join(str(v) for v in answer.tolist())
        answer = " ".join(str(answer).split())
        if not answer:
            item.setdefault("bad", f"empty answer in table {table!r} (task {name})")
            answer_tokens: list[int] = []
        else:
            answer_tokens = answer_ids(self.tokenizer, answer)
        item["prompt_ids"] = torch.tensor(prompt, dtype=torch.long)
        item["answer_ids"] = torch.tensor(answer_tokens, dtype=torch.long)
        item["task"] = name
        return item


__all__: Sequence[str] = ("InstructionTargets", "answer_ids", "audio_token", "chat_messages", "chat_prompt_ids",
                          "prompt_ids")
