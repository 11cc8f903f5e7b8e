"""Convert an ESPnet ASR experiment (hybrid CTC/attention, `frontend: default`) into one
self-contained speechlm checkpoint, which decode and transcribe read like a model.avg.ckpt.

    python -m speechlm.bin.convert_espnet --config exp/asr_train/config.yaml \
        --model exp/asr_train/valid.acc.ave.pth --out exp/asr_train/model.ckpt
    python -m speechlm.bin.decode checkpoint=exp/asr_train/model.ckpt data_dir=data/test
    python -m speechlm.bin.transcribe --model exp/asr_train/model.ckpt a.wav

The checkpoint holds the weights (global_mvn statistics included, as buffers), the model
as a Hydra `_target_` tree (its frontend is ESPnet's `frontend_conf` as `LogMelFbank`),
and the tokenizer made from `token_list` + `token_type` (char, word, or bpe with
`bpemodel`). Paths in config.yaml are relative to the ESPnet recipe directory: run from
there, or give the sentencepiece model with --bpemodel.

Every option of the config is decided (`speechlm.interop.espnet_options`; `--list-options`
prints the table): options this code does not implement are refused with the reason, never
dropped; those that do not change the converted model (training-only augmentation, loss
variants, kernels) are listed in the checkpoint under `converted_from.left_out`.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import yaml

from speechlm.atomic import atomic_path
from speechlm.interop.espnet_options import AT_DEFAULT, options_markdown
from speechlm.interop.espnet_asr import (
    ctc_attention_from_espnet_config,
    espnet_asr_model_config,
    tokenizer_from_espnet_config,
)
from speechlm.safe_load import load_weights


def espnet_checkpoint(config_yaml: str | os.PathLike, model_pth: str | os.PathLike,
                      bpemodel: str | os.PathLike | None = None) -> dict:
    """The checkpoint dict: `state_dict` and `speechlm` {config: {frontend, model,
    vocab_size, converted_from}, tokenizer}, as `speechlm.train.pretrained.load_pretrained`
    reads it (with torch.load(weights_only=True)). The ESPnet files are read as data too:
    config.yaml with `yaml.safe_load`, the model with `load_weights` (weights_only)."""
    with open(config_yaml, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    left_out: dict[str, str] = {}
    model_config = espnet_asr_model_config(config, left_out)
    if model_config["frontend"] is None:
        raise ValueError(f"input_size: {config['input_size']}: the model reads precomputed features, "
                         "and a speechlm checkpoint takes audio")
    tokenizer = tokenizer_from_espnet_config(config, bpemodel)
    state = load_weights(model_pth)
    model = ctc_attention_from_espnet_config(config, state)
    if (model.blank_id, model.sos) != (tokenizer.blank_id, tokenizer.sos_id):
        raise ValueError(f"model_conf puts blank at {model.blank_id} and <sos/eos> at {model.sos}; "
                         f"the token list has them at {tokenizer.blank_id} and {tokenizer.sos_id}")
    resolved = {
        "frontend": dict(model_config["frontend"]),
        "model": model_config,
        "vocab_size": tokenizer.vocab_size,
        "converted_from": {"espnet_config": str(config_yaml), "espnet_model": str(model_pth),
                           "espnet_version": str(config.get("version", "unknown")), "left_out": left_out},
    }
    return {"state_dict": model.state_dict(), "speechlm": {"config": resolved, "tokenizer": tokenizer.to_dict()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="the ESPnet experiment's config.yaml")
    p.add_argument("--model", type=Path, help="valid.acc.ave.pth (or any ESPnet model .pth)")
    p.add_argument("--out", type=Path, help="the speechlm checkpoint to write")
    p.add_argument("--bpemodel", type=Path, help="sentencepiece model (default: config.yaml's bpemodel)")
    p.add_argument("--list-options", action="store_true",
                   help="print every ESPnet config option and what the converter does with it (Markdown)")
    args = p.parse_args(argv)
    if args.list_options:
        print(options_markdown(), end="")
        return 0
    if not (args.config and args.model and args.out):
        p.error("--config, --model and --out are required")
    try:
        checkpoint = espnet_checkpoint(args.config, args.model, args.bpemodel)
        with atomic_path(args.out) as tmp:
            torch.save(checkpoint, tmp)
    except (ValueError, KeyError, OSError, yaml.YAMLError) as e:
        print(f"convert_espnet: error: {e}", file=sys.stderr)
        return 1
    meta = checkpoint["speechlm"]
    left_out = meta["config"]["converted_from"]["left_out"]
    print(f"{args.config} + {args.model} -> {args.out} (vocab_size {meta['config']['vocab_size']}, "
          f"{meta['tokenizer']['_target_'].rsplit('.', 1)[-1]}, "
          f"{meta['config']['frontend']['sample_rate']} Hz)")
    for key, why in left_out.items():
        if not why.startswith(AT_DEFAULT):
            print(f"  left out: {key}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
