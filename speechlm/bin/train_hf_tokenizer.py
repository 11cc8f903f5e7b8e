"""Train a Hugging Face tokenizer (tokenizer.json) for an LM trained here, with a chat template.

    python -m speechlm.bin.train_hf_tokenizer --text data/lm/raw.txt --vocab-size 512 \
        --chat-template chatml_inline --out data/lm_tokenizer

--text files are plain text, one sentence (or chat-formatted line) per line; blank lines are
skipped. The vocabulary is a sentencepiece-style BPE with byte fallback
(`speechlm.tokenizers.hf_train.train_hf_tokenizer`); its special tokens are, unless --special
changes them: unk <unk>, sos <s>, eos </s>, pad <pad>, audio <|audio|>, start_of_turn
<|im_start|>, end_of_turn <|im_end|> (ids 0 .. 6, in this order).

The output directory is both a speechlm tokenizer (tokens.txt, tokenizer.yaml:
`speechlm.tokenizers.load_tokenizer`) and a Hugging Face one (tokenizer_config.json,
special_tokens_map.json: `transformers.AutoTokenizer.from_pretrained`), sharing one
tokenizer.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechlm.tokenizers.chat_template import CHAT_TEMPLATES
from speechlm.tokenizers.hf_train import DEFAULT_SPECIAL_TOKENS, MODELS, train_hf_tokenizer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m speechlm.bin.train_hf_tokenizer", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--text", type=Path, action="append", required=True, metavar="FILE",
                        help="plain text, a sentence per line (repeat for more files)")
    parser.add_argument("--vocab-size", type=int, required=True,
                        help="the whole vocabulary: special tokens, 256 byte tokens (bpe) and learned pieces")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--chat-template", metavar="NAME|FILE",
                        help=f"{' or '.join(CHAT_TEMPLATES)} (speechlm.tokenizers.chat_template.CHATML / CHATML_INLINE), "
                        "or a jinja2 template file")
    parser.add_argument("--special", action="append", default=[], metavar="ROLE=TOKEN",
                        help="add or replace a special token role (repeatable), e.g. --special audio='<|speech|>'")
    parser.add_argument("--model", choices=MODELS, default="bpe", help="bpe (default) or wordlevel")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    roles = dict(DEFAULT_SPECIAL_TOKENS)
    for item in args.special:
        role, sep, token = item.partition("=")
        if not sep or not role or not token:
            parser.error(f"--special wants ROLE=TOKEN, got {item!r}")
        roles[role] = token
    try:
        template = _chat_template(args.chat_template)
        lines = []
        for path in args.text:
            with open(path, encoding="utf-8") as f:
                lines += [line.rstrip("\r\n") for line in f if line.strip()]
        if not lines:
            raise ValueError(f"no text in {', '.join(map(str, args.text))}")
        tokenizer = train_hf_tokenizer(lines, args.vocab_size, roles, template, model=args.model)
        tokenizer.save_pretrained(args.out)
        tokenizer.save(args.out)  # tokenizer.yaml last: the directory is complete
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.model} tokenizer: vocab_size {tokenizer.vocab_size} from {len(lines)} lines -> {args.out}")
    return 0


def _chat_template(value: str | None) -> str | None:
    if value is None or value in CHAT_TEMPLATES:
        return CHAT_TEMPLATES.get(value) if value else None
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"--chat-template: {value!r} is neither {' nor '.join(CHAT_TEMPLATES)} nor a file")
    return path.read_text(encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
