"""Export the decoder-only LM of a speechlm checkpoint as a Hugging Face model directory
(config.json + model.safetensors, and the tokenizer's files when it is a Hugging Face
tokenizer, in transformers' layout and in speechlm's: the directory is a `tokenizer_dir` too) that `transformers.AutoModelForCausalLM.from_pretrained` loads:

    python -m speechlm.bin.export_causal_lm exp/lm/model.avg.ckpt exp/lm/hf          # a text LM (experiment=causal_lm)
    python -m speechlm.bin.export_causal_lm exp/speech_llm/model.avg.ckpt exp/merged   # a speech-LLM's LM, LoRA merged
    python -m speechlm.bin.export_causal_lm exp/speech_llm/model.avg.ckpt exp/adapter --peft-adapter
                                                                         # its LoRA as a peft adapter directory

A speech-LLM checkpoint's LM has its LoRA weights merged into the frozen ones (W + B A x
scaling), so the export is a plain LLaMA / Qwen2 model; `--peft-adapter` writes the LoRA
weights alone in peft's layout instead (`PeftModel.from_pretrained(base, dir)`, base = the
speech-LLM's reference LM). `--arch llama|qwen2` picks the HF architecture (default: Qwen2
when the q/k/v projections have biases and o_proj none, else LLaMA). Exit status 0 on
success, 1 on error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechlm.decoders.causal_lm import CausalLM
from speechlm.train.pretrained import load_pretrained


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("out", type=Path, help="the HF directory to write")
    p.add_argument("--arch", choices=("llama", "qwen2"), default=None)
    p.add_argument("--peft-adapter", action="store_true", help="write the LoRA weights alone (peft's layout)")
    args = p.parse_args(argv)
    try:
        model, tokenizer, _ = load_pretrained(args.checkpoint)
        lm = model if isinstance(model, CausalLM) else getattr(model, "lm", None)
        if not isinstance(lm, CausalLM):
            raise ValueError(f"{args.checkpoint}: {type(model).__name__} has no decoder-only LM (CausalLM) to export")
        from speechlm.nn.lora import CAUSAL_LM_TO_HF, export_peft_adapter, lora_layers, merge_lora

        if args.peft_adapter:
            if not lora_layers(lm):
                raise ValueError(f"{args.checkpoint}: the LM has no LoRA weights (--peft-adapter)")
            export_peft_adapter(lm, args.out, prefixes=CAUSAL_LM_TO_HF,
                                base_model_name_or_path=getattr(lm, "source_path", None))
            print(f"{args.out}: peft LoRA adapter ({len(lora_layers(lm))} modules)")
            return 0
        merged = len(lora_layers(lm))
        merge_lora(lm)
        lm.save_hf(args.out, arch=args.arch)
        if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(args.out)  # for transformers' AutoTokenizer
            tokenizer.save(args.out)  # for speechlm (tokenizer_dir=OUT): tokens.txt + tokenizer.yaml
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.out}: {sum(p.numel() for p in lm.parameters()):,} parameters"
          + (f", LoRA of {merged} modules merged" if merged else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
