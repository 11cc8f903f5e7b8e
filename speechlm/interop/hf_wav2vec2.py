"""Hugging Face wav2vec 2.0 / HuBERT / WavLM weights <-> speechlm's parts:
`speechlm.encoders.wav2vec2.ConvFeatureEncoder` (the frontend) + `Wav2Vec2Encoder` or
`speechlm.encoders.wavlm.WavLMEncoder`, and the pretraining tensors beside them.

    frontend_cfg, encoder_cfg, state = load_hf("wav2vec2-base")   # config.json + weights
    frontend, encoder, extras = load_parts(frontend_cfg, encoder_cfg, state)
    save_hf("out", frontend, encoder, extras)     # Wav2Vec2ForPreTraining.from_pretrained("out")

Read: Wav2Vec2Model / ForPreTraining / ForCTC, HubertModel / ForCTC, WavLMModel / ForCTC
(state_dict + config.json as a dict). The cfgs are Hydra nodes (`_target_`); `state` keys:

    frontend.*                   the CNN and its final LayerNorm
    encoder.*                    the context network
    mask_emb                     (D,)            HF masked_spec_embed
    quantizer.codevectors        (1, G*V, d/G)   Gumbel codebook: G groups of V entries, d = codevector_dim
    quantizer.weight_proj.{weight,bias}  (G*V, C), (G*V,)
    project_q.{weight,bias}      (P, d), (P,)    quantized -> contrastive space
    final_proj.{weight,bias}     (P, D), (P,)    HF project_hid: context -> contrastive space
    ctc.ctc_lo.{weight,bias}     (V, D), (V,)    HF lm_head (ForCTC), as `speechlm.models.ctc.CTC`

Written: Wav2Vec2ForPreTraining when quantizer/project_q/final_proj are given, ForCTC with a
CTC head, else Wav2Vec2Model (HubertModel / WavLMModel by model_type). HF has no place for
HuBERT's pretraining head (final_proj, label embeddings): leave those out of `extras`.

Key mapping (HF, without its `wav2vec2.` / `hubert.` / `wavlm.` prefix -> ours; N: a layer):

    feature_extractor.conv_layers.N.conv / .layer_norm   frontend.conv_layers.N.conv / .norm
    feature_projection.layer_norm / .projection          frontend.layer_norm / encoder.embed
    encoder.pos_conv_embed.conv                          encoder.pos_conv.conv (weight norm: g, v)
    encoder.layer_norm                                   encoder.before_norm (post-LN) | after_norm (pre-LN)
    encoder.layers.N.attention.{q,k,v}_proj              encoder.encoders.N.self_attn.qkv (fused q; k; v)
    encoder.layers.N.attention.out_proj                  encoder.encoders.N.self_attn.linear_out
    encoder.layers.N.layer_norm / final_layer_norm       encoder.encoders.N.norm1 / norm2
    encoder.layers.N.feed_forward.intermediate_dense / output_dense   ...feed_forward.w_1 / w_2
    encoder.layers.0.attention.rel_attn_embed (WavLM)    encoder.rel_pos.embed
    encoder.layers.N.attention.gru_rel_pos_{linear,const}  encoder.encoders.N.self_attn.gru_rel_pos_*
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from speechlm.atomic import atomic_path, atomic_write_text
from speechlm.encoders.wav2vec2 import ConvFeatureEncoder
from speechlm.encoders.wavlm import WavLMEncoder
from speechlm.interop.key_templates import rename_keys
from speechlm.interop.whisper import load_checked
from speechlm.models.build import build_model
from speechlm.safe_load import load_weights

FRONTEND = "speechlm.encoders.wav2vec2.ConvFeatureEncoder"
ENCODERS = {"wav2vec2": "speechlm.encoders.wav2vec2.Wav2Vec2Encoder",
            "hubert": "speechlm.encoders.wav2vec2.Wav2Vec2Encoder",
            "wavlm": "speechlm.encoders.wavlm.WavLMEncoder"}
PREFIXES = {"wav2vec2": "wav2vec2.", "hubert": "hubert.", "wavlm": "wavlm."}
CLASS_NAMES = {"wav2vec2": "Wav2Vec2", "hubert": "Hubert", "wavlm": "WavLM"}

# The values Hugging Face's configs default to, for the keys read here
HF_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "hidden_act": "gelu", "hidden_dropout": 0.1, "activation_dropout": 0.1, "attention_dropout": 0.1,
    "feat_proj_dropout": 0.0, "layerdrop": 0.1, "layer_norm_eps": 1e-5, "feat_extract_norm": "group",
    "feat_extract_activation": "gelu", "conv_dim": [512] * 7, "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_bias": False, "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16, "do_stable_layer_norm": False, "feat_proj_layer_norm": True,
    "conv_pos_batch_norm": False, "add_adapter": False, "adapter_attn_dim": None, "num_buckets": 320,
    "max_bucket_distance": 800,
}

_LAYER = [("attention.qkv.{p}", "self_attn.qkv.{p}"), ("attention.out_proj.{p}", "self_attn.linear_out.{p}"),
          ("attention.gru_rel_pos_linear.{p}", "self_attn.gru_rel_pos_linear.{p}"),
          ("attention.gru_rel_pos_const", "self_attn.gru_rel_pos_const"),
          ("layer_norm.{p}", "norm1.{p}"), ("final_layer_norm.{p}", "norm2.{p}"),
          ("feed_forward.intermediate_dense.{p}", "feed_forward.w_1.{p}"),
          ("feed_forward.output_dense.{p}", "feed_forward.w_2.{p}")]
_WEIGHT_NORM = "conv.parametrizations.weight.original"  # original0: g (1, 1, K), original1: v


def key_table(layer_norm_first: bool) -> list[tuple[str, str]]:
    """(HF key template, ours) pairs; {i}: layer number, {p}: weight | bias."""
    final = "after_norm" if layer_norm_first else "before_norm"
    return [
        ("feature_extractor.conv_layers.{i}.conv.{p}", "frontend.conv_layers.{i}.conv.{p}"),
        ("feature_extractor.conv_layers.{i}.layer_norm.{p}", "frontend.conv_layers.{i}.norm.{p}"),
        ("feature_projection.layer_norm.{p}", "frontend.layer_norm.{p}"),
        ("feature_projection.projection.{p}", "encoder.embed.{p}"),
        ("encoder.pos_conv_embed.conv.bias", "encoder.pos_conv.conv.bias"),
        *[(f"encoder.pos_conv_embed.{_WEIGHT_NORM}{n}", f"encoder.pos_conv.{_WEIGHT_NORM}{n}") for n in "01"],
        ("encoder.layer_norm.{p}", f"encoder.{final}.{{p}}"),
        ("encoder.layers.0.attention.rel_attn_embed.weight", "encoder.rel_pos.embed.weight"),
        *[(f"encoder.layers.{{i}}.{a}", f"encoder.encoders.{{i}}.{b}") for a, b in _LAYER],
        ("masked_spec_embed", "mask_emb"),
        ("quantizer.codevectors", "quantizer.codevectors"),
        ("quantizer.weight_proj.{p}", "quantizer.weight_proj.{p}"),
        ("project_q.{p}", "project_q.{p}"),
        ("project_hid.{p}", "final_proj.{p}"),
        ("lm_head.{p}", "ctc.ctc_lo.{p}"),
    ]


_QKV = re.compile(r"(?P<module>.*\.attention)\.(?P<which>[qkv])_proj\.(?P<p>weight|bias)")


def fuse_qkv(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """`X.attention.{q,k,v}_proj.P` -> one `X.attention.qkv.P` (q, k, v stacked on dim 0)."""
    out, parts = {}, {}
    for key, value in state.items():
        m = _QKV.fullmatch(key)
        if m:
            parts.setdefault((m["module"], m["p"]), {})[m["which"]] = value
        else:
            out[key] = value
    for (module, p), qkv in parts.items():
        missing = [f"{module}.{n}_proj.{p}" for n in "qkv" if n not in qkv]
        if missing:
            raise ValueError(f"missing '{missing[0]}' (q, k and v projections come together)")
        out[f"{module}.qkv.{p}"] = torch.cat([qkv["q"], qkv["k"], qkv["v"]])
    return out


def split_qkv(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of `fuse_qkv`."""
    out = {}
    for key, value in state.items():
        if re.fullmatch(r".*\.attention\.qkv\.(weight|bias)", key):
            module, p = key.rsplit(".qkv.", 1)
            for n, part in zip("qkv", value.chunk(3)):
                out[f"{module}.{n}_proj.{p}"] = part
        else:
            out[key] = value
    return out


def hf_config_to_speechlm(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A HF wav2vec2 / hubert / wavlm config (config.json as a dict) -> (frontend_cfg, encoder_cfg);
    ValueError for an option that changes the network in a way speechlm does not compute."""
    model_type = config.get("model_type", "wav2vec2")
    if model_type not in ENCODERS:
        raise ValueError(f"model_type {model_type!r}: speechlm reads {', '.join(ENCODERS)}")

    def get(key: str) -> Any:
        return config.get(key, HF_DEFAULTS[key])

    wanted = {"hidden_act": "gelu", "feat_extract_activation": "gelu", "add_adapter": False,
              "adapter_attn_dim": None, "conv_pos_batch_norm": False}
    for key, want in wanted.items():
        if get(key) != want:
            raise ValueError(f"{model_type} config {key}={get(key)!r}: speechlm computes {key}={want!r}")
    if abs(float(get("layer_norm_eps")) - 1e-5) > 1e-12:
        raise ValueError(f"{model_type} config layer_norm_eps={get('layer_norm_eps')}: speechlm's LayerNorms use 1e-5")
    if get("feat_extract_norm") not in ("group", "layer"):
        raise ValueError(f"{model_type} config feat_extract_norm={get('feat_extract_norm')!r}: group or layer")
    dims, kernels, strides = list(get("conv_dim")), list(get("conv_kernel")), list(get("conv_stride"))
    n = config.get("num_feat_extract_layers", len(dims))
    if not len(dims) == len(kernels) == len(strides) == n:
        raise ValueError(f"{model_type} config: conv_dim, conv_kernel, conv_stride (and num_feat_extract_layers) "
                         f"disagree in length ({len(dims)}, {len(kernels)}, {len(strides)}, {n})")
    frontend = {"_target_": FRONTEND,
                "conv_layers": [[int(d), int(k), int(s)] for d, k, s in zip(dims, kernels, strides)],
                "norm": get("feat_extract_norm"), "conv_bias": bool(get("conv_bias")),
                "final_norm": bool(get("feat_proj_layer_norm")) if model_type == "hubert" else True,
                "grad_mult": 1.0, "sample_rate": 16000}
    encoder = {"_target_": ENCODERS[model_type], "input_size": int(dims[-1]), "output_size": int(get("hidden_size")),
               "attention_heads": int(get("num_attention_heads")), "linear_units": int(get("intermediate_size")),
               "num_blocks": int(get("num_hidden_layers")), "dropout_rate": float(get("hidden_dropout")),
               "attention_dropout_rate": float(get("attention_dropout")),
               "activation_dropout_rate": float(get("activation_dropout")),
               "input_dropout_rate": float(get("feat_proj_dropout")),
               "layer_norm_first": bool(get("do_stable_layer_norm")), "conv_pos": int(get("num_conv_pos_embeddings")),
               "conv_pos_groups": int(get("num_conv_pos_embedding_groups")), "layer_drop_rate": float(get("layerdrop"))}
    if model_type == "wavlm":
        encoder.update(num_buckets=int(get("num_buckets")), max_distance=int(get("max_bucket_distance")))
    return frontend, encoder


def hf_state_dict_to_speechlm(state_dict: Mapping[str, Tensor], layer_norm_first: bool, prefix: str = "wav2vec2.",
                              source: str = "Hugging Face state_dict") -> dict[str, Tensor]:
    """HF weights (any of the classes above) -> speechlm keys (module docstring). `prefix`: the
    base model's, removed where present; legacy weight_g / weight_v names are read too."""
    sd = {}
    for key, value in state_dict.items():
        key = key.removeprefix(prefix)
        key = re.sub(r"conv\.weight_g$", f"{_WEIGHT_NORM}0", re.sub(r"conv\.weight_v$", f"{_WEIGHT_NORM}1", key))
        sd[key] = value
    return rename_keys(fuse_qkv(sd), key_table(layer_norm_first), False, source)


def hf_to_speechlm(state_dict: Mapping[str, Tensor],
                   config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Tensor]]:
    """HF weights + config dict -> (frontend_cfg, encoder_cfg, state) (module docstring)."""
    frontend, encoder = hf_config_to_speechlm(config)
    prefix = PREFIXES[config.get("model_type", "wav2vec2")]
    return frontend, encoder, hf_state_dict_to_speechlm(state_dict, encoder["layer_norm_first"], prefix)


def load_parts(frontend_cfg: Mapping[str, Any], encoder_cfg: Mapping[str, Any], state: Mapping[str, Tensor],
               source: str = "checkpoint") -> tuple[nn.Module, nn.Module, dict[str, Tensor]]:
    """(frontend, encoder) built from their cfgs (eval mode) with `state` loaded strictly (every
    fault named), and the other tensors (mask_emb, quantizer.*, ...) as a dict."""
    parts = nn.ModuleDict({"frontend": build_model(dict(frontend_cfg), initialize=False),
                           "encoder": build_model(dict(encoder_cfg), initialize=False)})
    own = {k: v for k, v in state.items() if k.startswith(("frontend.", "encoder."))}
    load_checked(parts, own, key_table(bool(encoder_cfg.get("layer_norm_first", False))), source)
    parts.eval()
    return parts["frontend"], parts["encoder"], {k: v for k, v in state.items() if k not in own}


def _model_type(encoder: nn.Module, model_type: str | None) -> str:
    is_wavlm = isinstance(encoder, WavLMEncoder)
    found = model_type or ("wavlm" if is_wavlm else "wav2vec2")
    if found not in ENCODERS or (found == "wavlm") != is_wavlm:
        raise ValueError(f"model_type {model_type!r} does not describe a {type(encoder).__name__}")
    return found


def speechlm_to_hf_config(frontend: nn.Module, encoder: nn.Module, extras: Mapping[str, Tensor] | None = None,
                          model_type: str | None = None) -> dict[str, Any]:
    """The HF config dict (config.json) of our parts; the class it describes: `architectures`."""
    extras = dict(extras or {})
    if not isinstance(frontend, ConvFeatureEncoder):
        raise ValueError(f"the frontend is {type(frontend).__name__}, not wav2vec 2.0's CNN (ConvFeatureEncoder): "
                         "HF's wav2vec2 family has no other")
    model_type = _model_type(encoder, model_type)
    conv = frontend.conv_config
    config: dict[str, Any] = {
        "model_type": model_type, "hidden_size": encoder.output_size(), "num_hidden_layers": len(encoder.encoders),
        "num_attention_heads": encoder.attention_heads, "intermediate_size": encoder.linear_units,
        "hidden_act": "gelu", "hidden_dropout": encoder.dropout_rate,
        "activation_dropout": encoder.activation_dropout_rate, "attention_dropout": encoder.attention_dropout_rate,
        "feat_proj_dropout": encoder.input_dropout_rate,
        "layerdrop": encoder.layer_drop_rate, "layer_norm_eps": 1e-5, "feat_extract_norm": frontend.norm_type,
        "feat_extract_activation": "gelu", "conv_dim": [c[0] for c in conv], "conv_kernel": [c[1] for c in conv],
        "conv_stride": [c[2] for c in conv], "num_feat_extract_layers": len(conv),
        "conv_bias": frontend.conv_layers[0].conv.bias is not None,
        "num_conv_pos_embeddings": encoder.conv_pos, "num_conv_pos_embedding_groups": encoder.conv_pos_groups,
        "do_stable_layer_norm": encoder.layer_norm_first,
        # HF creates masked_spec_embed only when it masks: so exactly when there is a mask_emb
        "mask_time_prob": 0.05 if "mask_emb" in extras else 0.0, "mask_feature_prob": 0.0,
    }
    if frontend.output_size() != encoder.input_size:
        raise ValueError(f"the frontend gives {frontend.output_size()} channels, "
                         f"the encoder reads {encoder.input_size}")
    if frontend.layer_norm is None:
        if model_type != "hubert":
            raise ValueError("a frontend without its final LayerNorm: only HuBERT's config has that "
                             "(feat_proj_layer_norm); pass model_type='hubert'")
        config["feat_proj_layer_norm"] = False
    if model_type == "wavlm":
        config.update(num_buckets=encoder.rel_pos.num_buckets, max_bucket_distance=encoder.rel_pos.max_distance)
    name = CLASS_NAMES[model_type]
    pretraining = {"quantizer.codevectors", "quantizer.weight_proj.weight", "quantizer.weight_proj.bias",
                   "project_q.weight", "project_q.bias", "final_proj.weight", "final_proj.bias"}
    if pretraining & set(extras):
        missing = pretraining - set(extras)
        if missing or model_type != "wav2vec2":
            raise ValueError(f"Wav2Vec2ForPreTraining needs all of {sorted(pretraining)}"
                             + (f" (missing {sorted(missing)})" if missing else f", and no {model_type} encoder"))
        code_dim = extras["project_q.weight"].shape[1]
        groups = code_dim // extras["quantizer.codevectors"].shape[2]
        config.update(num_codevector_groups=groups,
                      num_codevectors_per_group=extras["quantizer.codevectors"].shape[1] // groups,
                      codevector_dim=code_dim, proj_codevector_dim=extras["project_q.weight"].shape[0])
        config["architectures"] = [f"{name}ForPreTraining"]
    elif "ctc.ctc_lo.weight" in extras:
        config.update(vocab_size=extras["ctc.ctc_lo.weight"].shape[0], architectures=[f"{name}ForCTC"])
    else:
        config["architectures"] = [f"{name}Model"]
    return config


def speechlm_to_hf(frontend: nn.Module, encoder: nn.Module, extras: Mapping[str, Tensor] | None = None,
                   model_type: str | None = None, config_overrides: Mapping[str, Any] | None = None):
    """Our parts (+ extras keyed as in the module docstring) -> (HF config dict, HF state_dict),
    so that `Wav2Vec2ForPreTraining(Wav2Vec2Config(**config)).load_state_dict(state)` (or the
    class in config["architectures"]) loads strictly. `config_overrides`: HF training options
    the parts do not hold (mask_time_prob, feat_quantizer_dropout, ...)."""
    extras = dict(extras or {})
    config = speechlm_to_hf_config(frontend, encoder, extras, model_type)
    config.update(config_overrides or {})
    ours = {**{f"frontend.{k}": v for k, v in frontend.state_dict().items()},
            **{f"encoder.{k}": v for k, v in encoder.state_dict().items()}, **extras}
    state = split_qkv(rename_keys(ours, key_table(encoder.layer_norm_first), True, "speechlm parts"))
    if not config["architectures"][0].endswith("Model"):
        state = {f"{PREFIXES[config['model_type']]}{k}" if not k.startswith(("quantizer.", "project_", "lm_head."))
                 else k: v for k, v in state.items()}
    return config, {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _read_weights(directory: Path) -> dict[str, Tensor]:
    """model.safetensors or pytorch_model.bin, or their sharded *.index.json forms; a .bin
    with `torch.load(weights_only=True)` (tensors only, no pickled objects)."""
    try:
        from safetensors.torch import load_file
    except ImportError:  # safetensors is not a dependency of speechlm
        load_file = None
    names = (["model.safetensors"] if load_file else []) + ["pytorch_model.bin"]
    for name in names:
        files = [directory / name]
        index = directory / f"{name}.index.json"
        if index.exists():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            outside = [f for f in shards if not isinstance(f, str) or Path(f).name != f]
            if outside:  # a shard is a file next to the index, nothing elsewhere
                raise ValueError(f"{index}: shard names must be file names in {directory}, got {outside[0]!r}")
            files = [directory / f for f in shards]
        if all(f.exists() for f in files):
            state = {}
            for f in files:
                state.update(load_file(f) if f.suffix == ".safetensors"
                             else load_weights(f))
            return state
    raise FileNotFoundError(f"{directory}: no {' or '.join(names)} (nor a sharded index of one)")


def load_hf(path: str | os.PathLike):
    """A HF model directory (config.json + weights) -> (frontend_cfg, encoder_cfg, state)."""
    directory = Path(path)
    config = json.loads((directory / "config.json").read_text())
    return hf_to_speechlm(_read_weights(directory), config)


def save_hf(directory: str | os.PathLike, frontend: nn.Module, encoder: nn.Module,
            extras: Mapping[str, Tensor] | None = None, model_type: str | None = None,
            config_overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write config.json + model.safetensors (pytorch_model.bin without safetensors), each
    atomically, that `<architectures[0]>.from_pretrained(directory)` reads; returns the config."""
    config, state = speechlm_to_hf(frontend, encoder, extras, model_type, config_overrides)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        from safetensors.torch import save_file
    except ImportError:
        save_file = None
    with atomic_path(directory / ("model.safetensors" if save_file else "pytorch_model.bin")) as tmp:
        if save_file:
            save_file(state, str(tmp), metadata={"format": "pt"})
        else:
            torch.save(state, tmp)
    atomic_write_text(directory / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    return config
