"""Export a speechlm model with wav2vec 2.0's architecture (the CNN frontend
`ConvFeatureEncoder` + `Wav2Vec2Encoder` or `WavLMEncoder`) as a Hugging Face model directory
(config.json + model.safetensors) that `transformers` loads with `from_pretrained`:

    python -m speechlm.bin.export_hf exp/pretrain_w2v2/model.avg.ckpt hf/w2v2   # -> Wav2Vec2ForPreTraining
    python -m speechlm.bin.export_hf exp/ft_ctc/model.avg.ckpt hf/w2v2_ctc       # CTC head -> Wav2Vec2ForCTC

What is written depends on the model: a wav2vec 2.0 pretraining model with its quantizer and
projections (`Wav2Vec2ForPreTraining`, with its negatives / temperature / masking options in
the config), a CTC model's head (`...ForCTC`; the vocabulary is speechlm's, not written as a
HF tokenizer), otherwise the bare encoder (`Wav2Vec2Model`, `HubertModel` with --model-type
hubert, `WavLMModel`), HuBERT's pretraining head left out (HF has no place for it).
Exit status 0 on success, 1 on error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechlm.interop.hf_wav2vec2 import save_hf
from speechlm.train.pretrained import load_pretrained

PRETRAINING = ("mask_emb", "quantizer.codevectors", "quantizer.weight_proj.weight", "quantizer.weight_proj.bias",
               "project_q.weight", "project_q.bias", "final_proj.weight", "final_proj.bias")


def hf_parts(model) -> tuple[dict, dict]:
    """(extras keyed as `speechlm.interop.hf_wav2vec2` names them, HF config overrides) of a
    speechlm model."""
    state = model.state_dict()
    from speechlm.models.ssl.wav2vec2 import Wav2Vec2PretrainModel

    if isinstance(model, Wav2Vec2PretrainModel):
        q = model.quantizer
        overrides = {"max_gumbel_temperature": q.max_temperature, "min_gumbel_temperature": q.min_temperature,
                     "gumbel_temperature_decay": q.temperature_decay,"num_negatives": model.num_negatives, "contrastive_logits_temperature": model.logit_temp,
                     "mask_time_prob": model.mask_prob, "mask_time_length": model.mask_length,
                     "mask_time_min_masks": model.min_masks, "diversity_loss_weight": model.diversity_weight}
        return {k: state[k] for k in PRETRAINING}, overrides
    extras = {k: state[k] for k in ("ctc.ctc_lo.weight", "ctc.ctc_lo.bias") if k in state}
    if "mask_emb" in state:
        extras["mask_emb"] = state["mask_emb"]
    return extras, {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("out", type=Path, help="the HF model directory to write")
    p.add_argument("--model-type", choices=("wav2vec2", "hubert", "wavlm"), default=None,
                   help="HF model type (default: wavlm for a WavLM encoder, else wav2vec2)")
    args = p.parse_args(argv)
    try:
        model, _, _ = load_pretrained(args.checkpoint)
        frontend, encoder = getattr(model, "frontend", None), getattr(model, "encoder", None)
        if frontend is None or not hasattr(frontend, "conv_config"):
            raise ValueError(f"{args.checkpoint}: the model's frontend is not wav2vec 2.0's CNN "
                             f"({type(frontend).__name__}); HF's wav2vec2 family needs one")
        extras, overrides = hf_parts(model)
        config = save_hf(args.out, frontend, encoder, extras, args.model_type, overrides)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.out}: {config['architectures'][0]} ({config['model_type']}, {config['num_hidden_layers']} layers, "
          f"d={config['hidden_size']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
