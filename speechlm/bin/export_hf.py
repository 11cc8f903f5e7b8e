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
# wav2vec 2.0 pretraining options (conf/model/wav2vec2_pretrain.yaml) -> HF config keys
PRETRAINING_OPTIONS = {"num_negatives": "num_negatives", "logit_temp": "contrastive_logits_temperature",
                       "mask_prob": "mask_time_prob", "mask_length": "mask_time_length",
                       "min_masks": "mask_time_min_masks", "diversity_weight": "diversity_loss_weight"}


def hf_parts(state: dict, model_config: dict) -> tuple[dict, dict]:
    """(extras keyed as `speechlm.interop.hf_wav2vec2` names them, HF config overrides) from a
    model's state_dict and its config: with the whole quantizer and both projections, what
    `Wav2Vec2ForPreTraining` holds and its training options; otherwise a CTC head and the
    mask embedding, where the model has them."""
    if all(k in state for k in PRETRAINING):
        overrides = {hf: model_config[ours] for ours, hf in PRETRAINING_OPTIONS.items() if ours in model_config}
        if "quantizer_temperature" in model_config:
            names = ("max_gumbel_temperature", "min_gumbel_temperature", "gumbel_temperature_decay")
            overrides.update(zip(names, model_config["quantizer_temperature"]))
        return {k: state[k] for k in PRETRAINING}, overrides
    return {k: state[k] for k in ("ctc.ctc_lo.weight", "ctc.ctc_lo.bias", "mask_emb") if k in state}, {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("out", type=Path, help="the HF model directory to write")
    p.add_argument("--model-type", choices=("wav2vec2", "hubert", "wavlm"), default=None,
                   help="HF model type (default: wavlm for a WavLM encoder, else wav2vec2)")
    args = p.parse_args(argv)
    try:
        model, _, config = load_pretrained(args.checkpoint)
        extras, overrides = hf_parts(model.state_dict(), config["model"])
        config = save_hf(args.out, model.frontend, model.encoder, extras, args.model_type, overrides)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.out}: {config['architectures'][0]} ({config['model_type']}, {config['num_hidden_layers']} layers, "
          f"d={config['hidden_size']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
