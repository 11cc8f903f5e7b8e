"""speechlm.data.digit_tasks: answer tables of a digits data dir and the LM's text corpus."""
from __future__ import annotations

import pytest

from speechlm.bin.make_digit_tasks import main
from speechlm.data.digit_tasks import lm_corpus, task_answers, write_task_tables
from speechlm.data.kaldi_dir import read_table

TASKS = {"qa_sum": {"table": "qa_sum", "instructions": ["What is the sum of the digits?"]},
         "translate_de": {"table": "translate_de", "instructions": ["Translate the digits into German."], "weight": 2}}


def test_answers():
    assert task_answers("nine eight zero seven") == {
        "text": "nine eight zero seven", "qa_sum": "24", "qa_count": "4", "qa_last": "seven",
        "translate_de": "neun acht null sieben"}
    assert task_answers("zero")["qa_sum"] == "0"


def test_tables_of_a_data_dir(tmp_path):
    (tmp_path / "text").write_text("u1 three four five\nu2 one one\n")
    main([str(tmp_path)])
    assert read_table(tmp_path / "qa_count") == {"u1": "3", "u2": "2"}
    assert (tmp_path / "qa_sum").read_text() == "u1 12\nu2 2\n"
    assert read_table(tmp_path / "qa_last") == {"u1": "five", "u2": "one"}
    assert read_table(tmp_path / "translate_de") == {"u1": "drei vier fünf", "u2": "eins eins"}


def test_a_word_that_is_not_a_digit_is_named(tmp_path):
    (tmp_path / "text").write_text("u1 one two\nu2 one twelve\n")
    with pytest.raises(ValueError, match=r"text: utterance 'u2': 'twelve' is not a digit word"):
        write_task_tables(tmp_path)
    assert not (tmp_path / "qa_sum").exists()  # nothing half-written


def test_lm_corpus_mix_and_answers():
    lines = lm_corpus(TASKS, 2000, seed=3)
    assert lines == lm_corpus(TASKS, 2000, seed=3)  # seeded
    chats = [line for line in lines if "?" in line or "German." in line]
    arithmetic = [line for line in lines if line not in chats and ("=" in line or " is " in line)]
    assert 0.06 < len(arithmetic) / len(lines) < 0.14
    for line in arithmetic:
        lhs, rhs = line.split(" = ") if " = " in line else line.split(" is ")
        terms = lhs.split(" + ") if " + " in lhs else [str(task_answers(w)["qa_sum"]) for w in lhs.split(" plus ")]
        assert sum(int(t) for t in terms) == int(rhs), line
    german = [line for line in chats if "German." in line]
    assert 0.8 < len(chats) / len(lines) < 0.9 and 0.55 < len(german) / len(chats) < 0.78  # mix 0.85, weights 1:2
    for line in german:
        assert line.startswith("user ")
        words, answer = line.removeprefix("user ").split(" Translate the digits into German. assistant ")
        assert task_answers(words)["translate_de"] == answer


def test_lm_corpus_in_a_chat_template_refuses_newlines():
    def render(messages):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages)

    lines = lm_corpus(TASKS, 50, seed=0, render=render, mix=(0, 0, 1))
    assert all(line.startswith("<user>") and "<assistant>" in line for line in lines)
    with pytest.raises(ValueError, match="newline"):
        lm_corpus(TASKS, 50, seed=0, render=lambda m: "a\nb", mix=(0, 0, 1))
