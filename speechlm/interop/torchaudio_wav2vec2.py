"""torchaudio's wav2vec 2.0 / HuBERT / WavLM weights -> speechlm's parts.

`torchaudio.models.wav2vec2_model(**args)` (and `hubert_*`, which call it with HuBERT's
values) and `wavlm_model(**args)` build the same network as Hugging Face's classes under
other names; a state_dict of theirs plus those constructor arguments converts here to the
triple `speechlm.interop.hf_wav2vec2` gives (its docstring names the keys):

    frontend_cfg, encoder_cfg, state = torchaudio_to_speechlm(model.state_dict(), args)

torchaudio -> Hugging Face layout (then as there):

    encoder.feature_projection.*                     feature_projection.*
    encoder.transformer.{pos_conv_embed,layer_norm,layers}.*   encoder.{...}.*
    layers.N.attention.attention.in_proj_{weight,bias} (WavLM)  layers.N.attention.qkv.* (already fused)
    layers.N.attention.attention.out_proj.* (WavLM)  layers.N.attention.out_proj.*
    aux.* (the CTC head of aux_num_out)              lm_head.* -> ctc.ctc_lo.*
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from speechlm.encoders.wav2vec2 import DEFAULT_CONV_LAYERS
from speechlm.interop.hf_wav2vec2 import hf_config_to_speechlm, hf_state_dict_to_speechlm

# torchaudio argument -> Hugging Face config key
ARGS = {
    "extractor_mode": "feat_extract_norm", "extractor_conv_layer_config": None, "extractor_conv_bias": "conv_bias",
    "encoder_embed_dim": "hidden_size", "encoder_projection_dropout": "feat_proj_dropout",
    "encoder_pos_conv_kernel": "num_conv_pos_embeddings", "encoder_pos_conv_groups": "num_conv_pos_embedding_groups",
    "encoder_num_layers": "num_hidden_layers", "encoder_num_heads": "num_attention_heads",
    "encoder_attention_dropout": "attention_dropout", "encoder_ff_interm_features": "intermediate_size",
    "encoder_ff_interm_dropout": "activation_dropout", "encoder_dropout": "hidden_dropout",
    "encoder_layer_norm_first": "do_stable_layer_norm", "encoder_layer_drop": "layerdrop", "aux_num_out": None,
}
WAVLM_ARGS = {"encoder_num_buckets": "num_buckets", "encoder_max_distance": "max_bucket_distance"}
NORMS = {"group_norm": "group", "layer_norm": "layer"}

_KEYS = [
    (r"^encoder\.feature_projection\.", "feature_projection."),
    (r"^encoder\.transformer\.", "encoder."),
    (r"\.attention\.attention\.in_proj_(weight|bias)$", r".attention.qkv.\1"),
    (r"\.attention\.attention\.out_proj\.", ".attention.out_proj."),
    (r"^aux\.", "lm_head."),
]


def torchaudio_args_to_hf_config(args: Mapping[str, Any]) -> dict[str, Any]:
    """`wav2vec2_model` / `wavlm_model` keyword arguments -> a HF config dict."""
    wavlm = any(k in args for k in WAVLM_ARGS)
    known = {**ARGS, **(WAVLM_ARGS if wavlm else {})}
    unknown = sorted(set(args) - set(known))
    missing = sorted(k for k in known if k not in args and k not in ("extractor_conv_layer_config", "aux_num_out"))
    if unknown or missing:
        raise ValueError(f"torchaudio {'wavlm' if wavlm else 'wav2vec2'}_model arguments: "
                         + "; ".join([f"unknown {unknown}"] * bool(unknown) + [f"missing {missing}"] * bool(missing)))
    if args["extractor_mode"] not in NORMS:
        raise ValueError(f"extractor_mode {args['extractor_mode']!r}: group_norm or layer_norm")
    config: dict[str, Any] = {"model_type": "wavlm" if wavlm else "wav2vec2"}
    for arg, key in known.items():
        if key is not None and arg in args:
            config[key] = args[arg]
    config["feat_extract_norm"] = NORMS[args["extractor_mode"]]
    conv = args.get("extractor_conv_layer_config") or DEFAULT_CONV_LAYERS
    config.update(conv_dim=[c[0] for c in conv], conv_kernel=[c[1] for c in conv], conv_stride=[c[2] for c in conv])
    return config


def torchaudio_to_speechlm(state_dict: Mapping[str, Tensor],
                           args: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Tensor]]:
    """A torchaudio Wav2Vec2Model's state_dict + its constructor arguments ->
    (frontend_cfg, encoder_cfg, state), as `speechlm.interop.hf_wav2vec2.hf_to_speechlm`."""
    frontend, encoder = hf_config_to_speechlm(torchaudio_args_to_hf_config(args))
    sd = {}
    for key, value in state_dict.items():
        for pattern, replacement in _KEYS:
            key = re.sub(pattern, replacement, key)
        sd[key] = value
    return frontend, encoder, hf_state_dict_to_speechlm(sd, encoder["layer_norm_first"], "", "torchaudio state_dict")
