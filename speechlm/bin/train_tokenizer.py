"""Train a tokenizer from a Kaldi `text` file and save it as a directory.

    python -m speechlm.bin.train_tokenizer --data-dir data/train --type bpe --vocab-size 5000 \
        --non-linguistic-symbols data/nlsyms.txt --out data/token_list/bpe5000

The output directory holds `tokens.txt` (ESPnet token list), `tokenizer.yaml` and, for
sentencepiece, `bpe.model` / `unigram.model`; `speechlm.tokenizers.load_tokenizer` reads it.

With `--multitask-languages en,de,fr` a bpe/unigram vocabulary ends in Whisper's special
tokens (<|endoftext|>, <|startoftranscript|>, a token per language, tasks, timestamps,
<|sc|>) instead of <sos/eos>, for multitask (Whisper-style) models.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from speechlm.data.kaldi_dir import TableLine, iter_table
from speechlm.tokenizers import (
    CharTokenizer,
    MultitaskSentencePieceTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    WordTokenizer,
)

MAX_ERRORS_SHOWN = 20  # a bad file can have a fault per line; the first few say enough


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m speechlm.bin.train_tokenizer", description=__doc__.split("\n")[0]
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", type=Path, help="Kaldi text file: `utt-id transcript` lines")
    source.add_argument("--data-dir", type=Path, help="Kaldi data dir; reads DIR/text")
    parser.add_argument("--type", required=True, choices=("bpe", "unigram", "char", "word"))
    parser.add_argument(
        "--vocab-size", type=int, help="bpe/unigram: sentencepiece vocab size (ESPnet's nbpe)"
    )
    parser.add_argument(
        "--non-linguistic-symbols",
        type=Path,
        metavar="FILE",
        help="bpe/unigram/char: symbols like [noise] kept whole, one per line",
    )
    parser.add_argument(
        "--character-coverage", type=float, default=1.0, help="bpe/unigram (default 1.0)"
    )
    parser.add_argument(
        "--hard-vocab-limit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bpe/unigram: fail, rather than shrink the vocabulary, if the text is too small",
    )
    parser.add_argument(
        "--multitask-languages",
        metavar="CODES",
        help="bpe/unigram: comma-separated language codes (en,de,fr); the token list then ends in "
        "Whisper-style special tokens (languages, tasks, timestamps, speaker change), not <sos/eos>",
    )
    parser.add_argument("--min-count", type=int, default=1, help="word: drop rarer words")
    parser.add_argument("--max-vocab", type=int, help="word: keep this many most frequent words")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    is_sentencepiece = args.type in ("bpe", "unigram")
    if is_sentencepiece and args.vocab_size is None:
        parser.error(f"--type {args.type} needs --vocab-size")
    if not is_sentencepiece and args.vocab_size is not None:
        parser.error("--vocab-size is for --type bpe/unigram (word: see --max-vocab)")
    if args.type == "word" and args.non_linguistic_symbols is not None:
        parser.error("--non-linguistic-symbols is for --type bpe/unigram/char")
    languages = None
    if args.multitask_languages is not None:
        if not is_sentencepiece:
            parser.error("--multitask-languages is for --type bpe/unigram")
        languages = [code.strip() for code in args.multitask_languages.split(",")]
        if not all(languages):
            parser.error(f"--multitask-languages: empty language code in {args.multitask_languages!r}")

    errors: list[str] = []
    text_path = args.text if args.text is not None else args.data_dir / "text"
    transcripts = read_transcripts(text_path, errors)
    symbols = []
    if args.non_linguistic_symbols is not None:
        symbols = read_symbols(args.non_linguistic_symbols, errors)
    if errors:
        return _fail(errors)

    try:
        tokenizer = _train(args, transcripts, symbols, languages)
        tokenizer.save(args.out)
    except (ValueError, OSError) as e:
        return _fail([f"error: {e}"])
    print(
        f"{args.type} tokenizer: vocab_size {tokenizer.vocab_size} "
        f"from {len(transcripts)} transcripts -> {args.out}"
    )
    return 0


def _train(args: argparse.Namespace, transcripts: list[str], symbols: list[str],
           languages: list[str] | None = None) -> Tokenizer:
    if args.type == "char":
        return CharTokenizer.train(transcripts, non_linguistic_symbols=symbols)
    if args.type == "word":
        return WordTokenizer.train(transcripts, args.min_count, args.max_vocab)
    options = {
        "vocab_size": args.vocab_size,
        "model_type": args.type,
        "user_defined_symbols": symbols,
        "character_coverage": args.character_coverage,
        "hard_vocab_limit": args.hard_vocab_limit,
    }
    if languages is not None:
        return MultitaskSentencePieceTokenizer.train(transcripts, **options, languages=languages)
    return SentencePieceTokenizer.train(transcripts, **options)


def read_transcripts(path: Path, errors: list[str]) -> list[str]:
    """Transcripts of a Kaldi `text` file (`utt-id transcript`), the utterance ids dropped.

    Faults are appended to `errors` as `file:line: what is wrong`, all of them, so that one
    run lists everything to fix.
    """
    transcripts = []
    for tl in _table_lines(path, errors):
        if tl.value is None:
            errors.append(f"{path}:{tl.line}: empty transcript")
        else:
            transcripts.append(tl.value.strip())
    if not transcripts and not errors:
        errors.append(f"{path}: no transcripts")
    return transcripts


def read_symbols(path: Path, errors: list[str]) -> list[str]:
    """Non-linguistic symbols, one per line; blank lines are skipped (faults -> `errors`)."""
    symbols = []
    for tl in _table_lines(path, errors, blank_ok=True):
        if tl.value is not None:
            errors.append(f"{path}:{tl.line}: one symbol per line, got {len(tl.value.split()) + 1} fields")
        elif tl.key:
            symbols.append(tl.key)
    return symbols


def _table_lines(path: Path, errors: list[str], blank_ok: bool = False) -> Iterator[TableLine]:
    """Parsed lines of a Kaldi-style file; unreadable lines go to `errors`."""
    try:
        for tl in iter_table(path):
            if tl.error and not (blank_ok and tl.error == "empty line"):
                errors.append(f"{path}:{tl.line}: {tl.error}")
            elif not tl.error:
                yield tl
    except OSError as e:
        errors.append(f"{path}: {e.strerror}")


def _fail(errors: list[str]) -> int:
    for message in errors[:MAX_ERRORS_SHOWN]:
        print(message, file=sys.stderr)
    if len(errors) > MAX_ERRORS_SHOWN:
        print(f"... and {len(errors) - MAX_ERRORS_SHOWN} more", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
