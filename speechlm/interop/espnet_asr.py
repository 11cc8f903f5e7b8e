"""Bring a whole ESPnet hybrid CTC/attention ASR model's weights (`ESPnetASRModel`'s
state_dict, e.g. `valid.acc.ave.pth`) over to `speechlm.models.ctc_attention.CTCAttentionModel`.

Key mapping (everything not listed keeps its name):

    encoder.*                                 via `espnet_encoder_state_dict_to_ours`
                                              (self-attention q/k/v fused into `qkv`)
    decoder.embed.0.weight                    decoder.embed.weight
    decoder.decoders.N.self_attn.linear_q/k/v decoder.decoders.N.self_attn.qkv  (q;k;v)
    decoder.decoders.N.src_attn.linear_k/v    decoder.decoders.N.src_attn.kv    (k;v)
    ctc.ctc_lo.*, normalize.mean/std          unchanged
    frontend.*                                left out (ESPnet's default frontend keeps no
                                              learned weights; build ours from its config)

    model.load_state_dict(espnet_asr_state_dict_to_ours(torch.load("valid.acc.ave.pth")))
"""
from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from speechlm.decoders.transformer import TransformerDecoder
from speechlm.features.cmvn import GlobalCMVN
from speechlm.interop.espnet import (
    encoder_from_espnet_config,
    espnet_encoder_state_dict_to_ours,
    espnet_input_size,
    ours_to_espnet_encoder_state_dict,
)
from speechlm.models.ctc_attention import CTCAttentionModel

log = logging.getLogger(__name__)


def _strip(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    if not prefix:
        return dict(state_dict)
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def espnet_decoder_state_dict_to_ours(state_dict: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """ESPnet `TransformerDecoder` state_dict -> our `TransformerDecoder`'s; `prefix`
    selects and strips a sub-module's keys (`"decoder."` on a whole ASR model)."""
    sd = _strip(state_dict, prefix)
    if not sd:
        raise KeyError(f"no key starts with {prefix!r}: is this an ESPnet model's state_dict?")
    out = {}
    for key, value in sd.items():
        if key == "embed.0.weight":
            out["embed.weight"] = value
        elif ".src_attn.linear_k." in key:
            head, kind = key.split(".src_attn.linear_k.")
            out[f"{head}.src_attn.kv.{kind}"] = torch.cat([value, sd[f"{head}.src_attn.linear_v.{kind}"]], dim=0)
        elif ".src_attn.linear_v." in key:
            continue  # fused with linear_k above
        elif key.startswith("embed."):
            raise KeyError(f"{key}: only input_layer 'embed' decoders are supported")
        else:
            out[key] = value
    return espnet_encoder_state_dict_to_ours(out)  # fuses self_attn.linear_{q,k,v} into qkv


def ours_to_espnet_decoder_state_dict(state_dict: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """Our decoder's state_dict -> ESPnet's; `prefix` is prepended to every key."""
    out = {}
    for key, value in ours_to_espnet_encoder_state_dict(state_dict).items():  # splits qkv
        if key == "embed.weight":
            out[prefix + "embed.0.weight"] = value
        elif ".src_attn.kv." in key:
            head, kind = key.split(".src_attn.kv.")
            k, v = value.chunk(2, dim=0)
            out[f"{prefix}{head}.src_attn.linear_k.{kind}"] = k.clone()
            out[f"{prefix}{head}.src_attn.linear_v.{kind}"] = v.clone()
        else:
            out[prefix + key] = value
    return out


def espnet_asr_state_dict_to_ours(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A whole `ESPnetASRModel` state_dict (or a training checkpoint holding it under
    "model") -> `CTCAttentionModel`'s. Unknown keys raise KeyError."""
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    out = {f"encoder.{k}": v for k, v in espnet_encoder_state_dict_to_ours(state_dict, "encoder.").items()}
    if any(k.startswith("decoder.") for k in state_dict):
        out.update({f"decoder.{k}": v for k, v in espnet_decoder_state_dict_to_ours(state_dict, "decoder.").items()})
    for key, value in state_dict.items():
        if key.startswith(("encoder.", "decoder.")):
            continue
        if key.startswith("ctc.") or key in ("normalize.mean", "normalize.std"):
            out[key] = value.float() if key.startswith("normalize.") else value
        elif key.startswith("frontend."):
            log.info("ESPnet %s left out: the frontend is built from its config", key)
        else:
            raise KeyError(f"ESPnet ASR model key {key!r} has no counterpart here")
    return out


def ours_to_espnet_asr_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """`CTCAttentionModel`'s state_dict -> `ESPnetASRModel`'s (encoder, decoder, ctc,
    normalize; other keys unchanged)."""
    out = {}
    out.update(ours_to_espnet_encoder_state_dict(_strip(state_dict, "encoder."), "encoder."))
    decoder = _strip(state_dict, "decoder.")
    if decoder:
        out.update(ours_to_espnet_decoder_state_dict(decoder, "decoder."))
    out.update({k: v for k, v in state_dict.items() if not k.startswith(("encoder.", "decoder."))})
    return out


# --- building our model from an ESPnet experiment's config.yaml -------------------------

# ESPnet `decoder_conf` keys that change how ESPnet computes, never what it computes.
_DECODER_NO_EFFECT = {
    "use_flash_attn": "an attention kernel choice (flash_attn is CUDA-only); same math",
    "gradient_checkpoint_layers": "trades memory for compute in training; same outputs",
}
# ESPnet decoder options implemented only at ESPnet's default value.
_DECODER_ONLY_AT_DEFAULT = {"input_layer": "embed", "concat_after": False, "qk_norm": False, "pos_enc_class": None}
# `model_conf` keys that only change what ESPnet reports (CER/WER), never the loss.
_MODEL_CONF_REPORTING = {"report_cer", "report_wer", "sym_space", "extract_feats_in_collect_stats",
                         "autocast_frontend"}


def espnet_decoder_kwargs(decoder_conf: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """ESPnet's `decoder_conf` (decoder: transformer) -> our `TransformerDecoder`'s keyword
    arguments (without vocab_size and encoder_output_size), and the keys left out with why."""
    params = inspect.signature(TransformerDecoder).parameters
    kwargs, dropped = {}, {}
    for key, value in decoder_conf.items():
        if key in ("vocab_size", "encoder_output_size"):
            raise ValueError(f"{key} is not part of ESPnet's decoder_conf; it comes from the model")
        if key in _DECODER_ONLY_AT_DEFAULT and value != _DECODER_ONLY_AT_DEFAULT[key]:
            raise ValueError(f"ESPnet TransformerDecoder option {key}: {value!r} is not supported "
                             f"(only {_DECODER_ONLY_AT_DEFAULT[key]!r})")
        if key in params:
            kwargs[key] = value
        elif key in _DECODER_NO_EFFECT:
            dropped[key] = _DECODER_NO_EFFECT[key]
        elif key in _DECODER_ONLY_AT_DEFAULT:
            dropped[key] = "ESPnet's default, the only value implemented here"
        else:
            raise ValueError(f"ESPnet TransformerDecoder option {key}: {value!r} is not supported")
    return kwargs, dropped


def ctc_attention_from_espnet_config(config: Mapping[str, Any],
                                     state_dict: Mapping[str, Tensor] | None = None) -> CTCAttentionModel:
    """Our `CTCAttentionModel` from an ESPnet ASR `config.yaml` (as a dict): encoder,
    decoder (transformer), CTC, loss weights, token conventions, global_mvn normalisation.
    No frontend: the model reads features (ESPnet's default frontend is an STFT log-mel,
    `frontend_conf` in the config). With `state_dict` (ESPnet's keys) weights load strictly."""
    token_list = list(config["token_list"])
    vocab_size = len(token_list)
    model_conf = dict(config.get("model_conf") or {})
    for key in _MODEL_CONF_REPORTING:
        model_conf.pop(key, None)
    sym_sos, sym_eos = model_conf.pop("sym_sos", "<sos/eos>"), model_conf.pop("sym_eos", "<sos/eos>")
    sos = token_list.index(sym_sos) if sym_sos in token_list else vocab_size - 1
    eos = token_list.index(sym_eos) if sym_eos in token_list else vocab_size - 1
    if sos != eos:
        raise ValueError(f"<sos> ({sym_sos}, id {sos}) and <eos> ({sym_eos}, id {eos}) differ; one shared id is supported")
    sym_blank = model_conf.pop("sym_blank", "<blank>")
    blank_id = token_list.index(sym_blank) if sym_blank in token_list else 0
    for key in ("lang_token_id", "transducer_multi_blank_durations", "aux_ctc"):
        if model_conf.get(key) not in (None, -1, []):
            raise ValueError(f"ESPnet model_conf {key}: {model_conf[key]!r} is not supported")
        model_conf.pop(key, None)
    known = ("ctc_weight", "interctc_weight", "ignore_id", "lsm_weight", "length_normalized_loss")
    if set(model_conf) - set(known):
        raise ValueError(f"ESPnet model_conf keys not supported: {sorted(set(model_conf) - set(known))}")
    model_conf.setdefault("ctc_weight", 0.5)  # ESPnetASRModel's defaults, which the config may rely on
    model_conf.setdefault("lsm_weight", 0.0)

    input_size = espnet_input_size(config)
    encoder = encoder_from_espnet_config(config["encoder"], config.get("encoder_conf") or {}, input_size)
    decoder = None
    if model_conf["ctc_weight"] < 1.0:
        if config.get("decoder") != "transformer":
            raise ValueError(f"decoder: {config.get('decoder')} is not supported (only transformer)")
        kwargs, dropped = espnet_decoder_kwargs(config.get("decoder_conf") or {})
        for key, why in dropped.items():
            log.info("ESPnet decoder_conf %s left out: %s", key, why)
        decoder = TransformerDecoder(vocab_size, encoder.output_size(), **kwargs)

    ctc_conf = dict(config.get("ctc_conf") or {})
    ctc_dropout = ctc_conf.pop("dropout_rate", 0.0)
    zero_infinity = ctc_conf.pop("zero_infinity", True)
    ignore_nan_grad = ctc_conf.pop("ignore_nan_grad", None)  # ESPnet's old name for zero_infinity
    if not (zero_infinity if ignore_nan_grad is None else ignore_nan_grad):
        raise ValueError("ESPnet ctc_conf zero_infinity: false is not supported")
    for key, default in (("ctc_type", "builtin"), ("reduce", True)):
        if ctc_conf.pop(key, default) != default:
            raise ValueError(f"ESPnet ctc_conf {key} other than {default!r} is not supported")
    if ctc_conf:
        raise ValueError(f"ESPnet ctc_conf keys not supported: {sorted(ctc_conf)}")

    normalize = None
    if config.get("normalize") == "global_mvn":
        conf = config.get("normalize_conf") or {}
        normalize = GlobalCMVN(torch.zeros(input_size), torch.ones(input_size),
                               conf.get("norm_means", True), conf.get("norm_vars", True))
    elif config.get("normalize") not in (None, "none"):
        raise ValueError(f"normalize: {config['normalize']} is not supported (global_mvn or none)")

    model = CTCAttentionModel(vocab_size, encoder, decoder, normalize=normalize, sos_eos_id=sos,
                              blank_id=blank_id, ctc_dropout_rate=ctc_dropout, **model_conf)
    if state_dict is not None:
        ours = espnet_asr_state_dict_to_ours(state_dict)
        model.load_state_dict(ours, strict=True)
    return model


def load_espnet_asr(config_yaml: str | os.PathLike, model_pth: str | os.PathLike,
                    map_location: str = "cpu") -> tuple[CTCAttentionModel, list[str]]:
    """Our model, in eval mode, and the token list of an ESPnet ASR experiment: its
    `config.yaml` and a model file (`valid.acc.ave.pth`, or a training `checkpoint.pth`)."""
    import yaml

    with open(config_yaml, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    state = torch.load(model_pth, map_location=map_location, weights_only=True)
    model = ctc_attention_from_espnet_config(config, state)
    return model.eval(), list(config["token_list"])
