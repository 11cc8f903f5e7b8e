"""Instruction tasks on spoken digit strings (egs/digits/speechllm): answer tables of a
digits data dir, and the text corpus its small LM is pretrained on.

Tables (one line per utterance, `utt-id answer`, from the dir's English `text`):

    qa_sum        the sum of the digits, a numeral          one two three -> 6
    qa_count      how many digits, a numeral                              -> 3
    qa_last       the last digit, a word                                  -> three
    translate_de  the digits in German words                              -> eins zwei drei

The LM corpus holds the same conversations with the digit words where the audio will be,
so the pretrained LM already answers them from text and the speech-LLM's adapter has to
map speech to what the LM reads as those words:

    <|im_start|>user one two three What is the sum of the digits?<|im_end|><|im_start|>assistant 6<|im_end|>

plus bare digit strings and arithmetic ("2 + 5 + 1 = 8", "two plus five plus one is 8").
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from speechlm.atomic import atomic_write_text
from speechlm.data.digits import DIGITS
from speechlm.data.kaldi_dir import read_table
from speechlm.data.multilingual_digits import DIGIT_WORDS

_VALUE = {w: i for i, w in enumerate(DIGITS)}


def digit_values(text: str, where: str = "") -> list[int]:
    """'one two three' -> [1, 2, 3]; a word that is not an English digit is an error naming `where`."""
    words = text.split()
    if not words:
        raise ValueError(f"{where}: empty digit string")
    bad = [w for w in words if w not in _VALUE]
    if bad:
        raise ValueError(f"{where}: {bad[0]!r} is not a digit word ({' '.join(DIGITS)})")
    return [_VALUE[w] for w in words]


TABLES: dict[str, Callable[[list[int]], str]] = {
    "qa_sum": lambda v: str(sum(v)),
    "qa_count": lambda v: str(len(v)),
    "qa_last": lambda v: DIGITS[v[-1]],
    "translate_de": lambda v: " ".join(DIGIT_WORDS["de"][d] for d in v),
}


def task_answers(text: str, where: str = "") -> dict[str, str]:
    """table name -> answer, for one English digit string (plus `text` itself)."""
    values = digit_values(text, where)
    return {"text": " ".join(DIGITS[d] for d in values), **{name: f(values) for name, f in TABLES.items()}}


def write_task_tables(data_dir: str | Path) -> dict[str, Path]:
    """Write the TABLES of a data dir from its `text` (sorted by utterance id, atomically)."""
    data_dir = Path(data_dir)
    text = read_table(data_dir / "text")
    rows: dict[str, list[str]] = {name: [] for name in TABLES}
    for utt in sorted(text):
        answers = task_answers(text[utt], f"{data_dir / 'text'}: utterance '{utt}'")
        for name in TABLES:
            rows[name].append(f"{utt} {answers[name]}\n")
    out = {}
    for name, lines in rows.items():
        out[name] = data_dir / name
        atomic_write_text(out[name], "".join(lines))
    return out


def random_digits(rng: random.Random, min_len: int = 1, max_len: int = 7) -> list[int]:
    return [rng.randrange(10) for _ in range(rng.randint(min_len, max_len))]


def arithmetic_line(rng: random.Random) -> str:
    """A sum of digits, in numerals or in words: '2 + 5 + 1 = 8', 'two plus five plus one is 8'."""
    values = random_digits(rng, 2, 7)
    if rng.random() < 0.5:
        return " + ".join(map(str, values)) + f" = {sum(values)}"
    return " plus ".join(DIGITS[v] for v in values) + f" is {sum(values)}"


def conversations(tasks: Mapping[str, Mapping], rng: random.Random) -> Iterator[tuple[str, str, str]]:
    """Endless (digit words, instruction, answer) of the configured tasks (name -> {table,
    instructions}), the task drawn by weight, the phrasing uniformly."""
    names = list(tasks)
    weights = [float(tasks[n].get("weight", 1.0)) for n in names]
    while True:
        name = rng.choices(names, weights)[0]
        spec = tasks[name]
        phrasings = spec.get("instructions") or [spec["instruction"]]
        phrasings = [phrasings] if isinstance(phrasings, str) else list(phrasings)
        words = " ".join(DIGITS[d] for d in random_digits(rng))
        answers = task_answers(words)
        table = spec["table"]
        if table not in answers:
            raise ValueError(f"task {name!r}: table {table!r} is not a digit task table ({sorted(answers)})")
        yield words, rng.choice(phrasings), answers[table]


def lm_corpus(tasks: Mapping[str, Mapping], lines: int, seed: int = 0,
              render: Callable[[list[dict[str, str]]], str] | None = None,
              mix: tuple[float, float, float] = (0.05, 0.1, 0.85)) -> list[str]:
    """`lines` lines of the LM's pretraining text: digit strings, arithmetic and task
    conversations in the proportions `mix`. `render(messages)` writes a conversation in the
    chat template (HFTokenizer.render_chat); without it, as plain text, each turn's role word
    before its content (what the tokenizer is trained on: "user" and "assistant" become
    whole tokens, which keeps a question's digits close to its answer)."""
    rng = random.Random(seed)
    chats = conversations(tasks, rng)
    out = []
    for _ in range(lines):
        kind = rng.choices(("digits", "arithmetic", "chat"), mix)[0]
        if kind == "digits":
            out.append(" ".join(DIGITS[d] for d in random_digits(rng)))
        elif kind == "arithmetic":
            out.append(arithmetic_line(rng))
        else:
            words, instruction, answer = next(chats)
            messages = [{"role": "user", "content": f"{words} {instruction}"}, {"role": "assistant", "content": answer}]
            out.append(render(messages) if render else " ".join(f"{m['role']} {m['content']}" for m in messages))
        if "\n" in out[-1]:
            raise ValueError("a line of the LM corpus holds a newline (use a newline-free chat template, "
                             "e.g. speechlm.tokenizers.chat_template.CHATML_INLINE, for line-based text)")
    return out
