"""Write a trained Whisper-architecture model as an OpenAI Whisper checkpoint file
({"dims", "model_state_dict"}), which `whisper.load_model(path)` and the `whisper` command
read (and `speechlm.bin.transcribe --model` too).

    python -m speechlm.bin.export_whisper exp/finetune/model.avg.ckpt finetuned.pt [--drop-ctc]

The model must be OpenAI's architecture: `WhisperEncoder` + `MultitaskDecoder`, Whisper's
log-mel frontend, no normalisation, a Whisper vocabulary (e.g. fine-tuned from an OpenAI
checkpoint with `model.init_from=tiny.pt`). An auxiliary CTC head has no place in the
format: `--drop-ctc` leaves it out.
"""
from __future__ import annotations

import argparse
import sys

from speechlm.interop.whisper import save_openai_checkpoint
from speechlm.train.pretrained import load_pretrained


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a speechlm checkpoint (model.avg.ckpt, last.ckpt, ...)")
    p.add_argument("out", help="the OpenAI-format .pt to write")
    p.add_argument("--drop-ctc", action="store_true", help="leave an auxiliary CTC head out")
    args = p.parse_args(argv)
    model, _, _ = load_pretrained(args.checkpoint)
    save_openai_checkpoint(model, args.out, drop_ctc=args.drop_ctc)
    print(f"export_whisper: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
