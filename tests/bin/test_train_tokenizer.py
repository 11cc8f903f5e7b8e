"""`python -m speechlm.bin.train_tokenizer`: Kaldi text in, tokenizer directory out."""

import subprocess
import sys

import pytest

from speechlm.bin.train_tokenizer import main
from speechlm.tokenizers import load_tokenizer

TRANSCRIPTS = [
    "the quick brown fox jumps over the lazy dog",
    "one seven three",
    "two nine nine four one",
    "hello, world! it's a test.",
    "[noise] okay so one two three [noise]",
    'she said: "don\'t stop" -- then left?',
    "seven seven three one zero",
]


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data" / "train"
    d.mkdir(parents=True)
    # utterance ids with digits and "_" that appear in no transcript: they must not leak in
    lines = [f"spk1_utt{i:03d} {text}" for i, text in enumerate(TRANSCRIPTS)]
    (d / "text").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "nlsyms.txt").write_text("[noise]\n\n", encoding="utf-8")
    return d


TYPE_ARGS = [["bpe", "--vocab-size", "40"], ["unigram", "--vocab-size", "40"], ["char"], ["word"]]


@pytest.mark.parametrize("type_args", TYPE_ARGS)
def test_trains_from_a_data_dir(data_dir, tmp_path, capsys, type_args):
    out = tmp_path / "tok"
    argv = ["--data-dir", str(data_dir), "--type", *type_args, "--out", str(out)]
    if type_args[0] != "word":
        argv += ["--non-linguistic-symbols", str(tmp_path / "nlsyms.txt")]
    assert main(argv) == 0

    summary = capsys.readouterr().out.strip()
    assert summary.count("\n") == 0
    assert type_args[0] in summary and str(out) in summary
    tok = load_tokenizer(out)
    assert f"vocab_size {tok.vocab_size}" in summary
    assert (out / "tokens.txt").read_text(encoding="utf-8").splitlines() == tok.tokens
    for text in TRANSCRIPTS:
        assert tok.decode(tok.encode(text)) == text
    assert not any("spk1" in t or "utt" in t or "_" in t or "0" in t for t in tok.tokens)
    if type_args[0] != "word":
        assert "[noise]" in tok.tokens


def test_text_option_and_module_entry_point(data_dir, tmp_path):
    out = tmp_path / "tok"
    result = subprocess.run(
        [sys.executable, "-m", "speechlm.bin.train_tokenizer", "--text", str(data_dir / "text"),
         "--type", "char", "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert load_tokenizer(out).encode("one") != []


def test_bad_lines_are_named_by_file_and_line(tmp_path, capsys):
    text = tmp_path / "text"
    text.write_bytes(b"utt1 one seven three\nutt2 caf\xe9\nutt3\n\nutt5 ok\n")
    out = tmp_path / "tok"
    assert main(["--text", str(text), "--type", "char", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{text}:2: not valid UTF-8" in err
    assert f"{text}:3: empty transcript" in err
    assert f"{text}:4: empty line" in err
    assert f"{text}:1:" not in err and f"{text}:5:" not in err
    assert not out.exists()


def test_missing_file_and_impossible_vocab_size(tmp_path, data_dir, capsys):
    missing = tmp_path / "nope"
    assert main(["--data-dir", str(missing), "--type", "word", "--out", str(tmp_path)]) == 1
    assert str(tmp_path / "nope" / "text") in capsys.readouterr().err
    argv = ["--data-dir", str(data_dir), "--type", "bpe", "--vocab-size", "5000"]
    assert main([*argv, "--out", str(tmp_path / "tok")]) == 1
    assert "at most" in capsys.readouterr().err
    assert main([*argv, "--no-hard-vocab-limit", "--out", str(tmp_path / "tok")]) == 0


def test_sentencepiece_needs_vocab_size(data_dir, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["--data-dir", str(data_dir), "--type", "bpe", "--out", str(tmp_path / "tok")])
    assert exit_info.value.code == 2
