"""Make a Hugging Face model's tokenizer a speechlm tokenizer directory (`tokenizer_dir=`),
naming the roles a speech-LLM needs that the model's files do not name:

    python -m speechlm.bin.import_hf_tokenizer Qwen2-0.5B-Instruct data/qwen2_tokenizer \\
        --special audio='<|AUDIO|>' --special end_of_turn='<|im_end|>'
    python -m speechlm.bin.import_hf_tokenizer Llama-3.2-1B-Instruct data/llama_tokenizer \\
        --special audio='<|reserved_special_token_0|>' --special end_of_turn='<|eot_id|>'

The audio placeholder can be any token of the vocabulary that text never produces (a
reserved special token): its embedding is never used, the speech replaces it. Roles bos,
eos, unk and pad come from tokenizer_config.json / special_tokens_map.json, the chat
template from the directory unless --chat-template (chatml, chatml_inline or a jinja2
file) replaces it. The output holds speechlm's files (tokens.txt, tokenizer.yaml) and the
Hugging Face ones, sharing one tokenizer.json. Exit status 0 on success, 1 on error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechlm.bin.train_hf_tokenizer import _chat_template
from speechlm.tokenizers.hf import HFTokenizer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m speechlm.bin.import_hf_tokenizer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("hf_dir", type=Path, help="a Hugging Face model or tokenizer directory (tokenizer.json)")
    p.add_argument("out", type=Path)
    p.add_argument("--special", action="append", default=[], metavar="ROLE=TOKEN",
                   help="name a role's token (repeatable), e.g. --special audio='<|AUDIO|>'")
    p.add_argument("--chat-template", metavar="NAME|FILE", help="replace the directory's chat template")
    args = p.parse_args(argv)
    roles = {}
    for item in args.special:
        role, sep, token = item.partition("=")
        if not sep or not role or not token:
            p.error(f"--special wants ROLE=TOKEN, got {item!r}")
        roles[role] = token
    try:
        tokenizer = HFTokenizer.from_pretrained(args.hf_dir, special_tokens=roles or None,
                                                chat_template=_chat_template(args.chat_template))
        tokenizer.save_pretrained(args.out)
        tokenizer.save(args.out)  # tokenizer.yaml last: the directory is complete
    except (ValueError, OSError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    roles_text = ", ".join(f"{r} {t}" for r, t in tokenizer.special_tokens.items())
    print(f"{args.out}: vocab_size {tokenizer.vocab_size}; roles: {roles_text}; "
          f"chat template: {'yes' if tokenizer.chat_template else 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
