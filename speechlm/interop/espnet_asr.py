"""Bring a whole ESPnet hybrid CTC/attention ASR model's weights (`ESPnetASRModel`'s
state_dict, e.g. `valid.acc.ave.pth`) over to `speechlm.models.ctc_attention.CTCAttentionModel`.

Key mapping (everything not listed keeps its name):

    encoder.*                                 via `espnet_encoder_state_dict_to_ours`
                                              (self-attention q/k/v fused into `qkv`)
    decoder.embed.0.weight                    decoder.embed.weight
    decoder.decoders.N.self_attn.linear_q/k/v decoder.decoders.N.self_attn.qkv  (q;k;v)
    decoder.decoders.N.src_attn.linear_k/v    decoder.decoders.N.src_attn.kv    (k;v)
    ctc.ctc_lo.*, normalize.mean/std          unchanged
    frontend.logmel.melmat                    left out (ESPnet's default frontend keeps no
                                              learned weights; ours is built from frontend_conf)

    model.load_state_dict(espnet_asr_state_dict_to_ours(torch.load("valid.acc.ave.pth")))

A whole experiment: `load_espnet_asr("exp/asr_train/config.yaml", "exp/asr_train/valid.acc.ave.pth")`
gives a model that takes raw audio like ESPnet's (`frontend: default` becomes
`speechlm.features.LogMelFbank`); `python -m speechlm.bin.convert_espnet` writes it, with its
tokenizer, as a speechlm checkpoint.
"""
from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra.utils
import torch
from torch import Tensor

from speechlm.decoders.transformer import TransformerDecoder
from speechlm.features.cmvn import GlobalCMVN
from speechlm.interop.espnet import (
    espnet_encoder_kwargs,
    espnet_encoder_state_dict_to_ours,
    espnet_input_size,
    our_encoder_class,
    ours_to_espnet_encoder_state_dict,
)
from speechlm.models.ctc_attention import CTCAttentionModel
from speechlm.tokenizers import CharTokenizer, SentencePieceTokenizer, Tokenizer, WordTokenizer
from speechlm.tokenizers.sentencepiece import sentencepiece_model_type

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
        elif key == "frontend.logmel.melmat":
            continue  # the default frontend's mel filterbank, built from frontend_conf
        elif key.startswith("frontend."):
            raise KeyError(f"ESPnet ASR model key {key!r}: a frontend with weights is not supported")
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


# ESPnet DefaultFrontend arguments that `LogMelFbank` takes under the same name (`fs` is
# our `sample_rate`), and those it implements only at ESPnet's default value.
_FRONTEND_ARGS = ("n_fft", "win_length", "hop_length", "window", "center", "normalized", "n_mels", "fmin", "fmax", "htk")
_FRONTEND_ONLY_AT_DEFAULT = {
    "apply_stft": (True, "apply_stft: false reads precomputed STFTs, not audio"),
    "onesided": (True, "onesided: false gives n_fft bins, which ESPnet's own LogMel cannot take"),
}


def espnet_sample_rate(fs: int | float | str) -> int:
    """ESPnet's `fs`: a number or a size string as humanfriendly reads it ("16k", "44.1k")."""
    text = str(fs).strip()
    scale = 1000 if text[-1:] in "kK" else 1
    try:
        rate = float(text[:-1] if scale == 1000 else text) * scale
    except ValueError:
        raise ValueError(f"fs: {fs!r} is not a sample rate (a number, or e.g. 16k)") from None
    if rate <= 0 or rate != int(rate):
        raise ValueError(f"fs: {fs!r} is not a whole number of Hz")
    return int(rate)


def espnet_frontend_config(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """Hydra node (`_target_` + arguments) of our frontend for an ESPnet ASR config:
    `frontend: default` + `frontend_conf` -> `speechlm.features.LogMelFbank`. None when the
    model reads features (`input_size` set: ESPnet then builds no frontend either)."""
    if config.get("input_size") is not None:
        return None
    frontend = config.get("frontend", "default")
    if frontend != "default":
        raise ValueError(f"frontend: {frontend} is not supported (only ESPnet's default STFT log-mel)")
    conf = dict(config.get("frontend_conf") or {})
    node = {"_target_": "speechlm.features.LogMelFbank", "sample_rate": espnet_sample_rate(conf.pop("fs", 16000))}
    enhancement = conf.pop("frontend_conf", None) or {}  # ESPnet's multi-channel WPE / beamformer
    if enhancement.get("use_wpe") or enhancement.get("use_beamformer"):
        raise ValueError("frontend_conf.frontend_conf: multi-channel WPE / beamforming is not supported")
    for key, (default, why) in _FRONTEND_ONLY_AT_DEFAULT.items():
        if conf.pop(key, default) != default:
            raise ValueError(f"ESPnet frontend_conf {why}; not supported")
    unknown = sorted(set(conf) - set(_FRONTEND_ARGS))
    if unknown:
        raise ValueError(f"ESPnet frontend_conf keys not supported: {unknown}")
    node.update(conf)
    node.setdefault("n_mels", 80)
    return node


def espnet_asr_model_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Hydra config (a `_target_` tree) of our `CTCAttentionModel` for an ESPnet ASR
    `config.yaml` (as a dict): frontend (ESPnet's default STFT log-mel), global_mvn
    normalisation, encoder, decoder (transformer), CTC, loss weights, token conventions.
    `hydra.utils.instantiate` builds it; `normalize` names ESPnet's stats file, which need
    not exist (the statistics are buffers in the state_dict), so pass `normalize=` yourself."""
    token_list = espnet_token_list(config)
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

    if config.get("postencoder") is not None:
        raise ValueError(f"postencoder: {config['postencoder']} is not supported")
    if config.get("specaug") is not None:
        log.info("ESPnet specaug %s left out: it only acts in training", config["specaug"])
    input_size = espnet_input_size(config)
    encoder_cls = our_encoder_class(config["encoder"])
    kwargs, dropped = espnet_encoder_kwargs(config["encoder"], config.get("encoder_conf") or {})
    for key, why in dropped.items():
        log.info("ESPnet encoder_conf %s left out: %s", key, why)
    kwargs.setdefault("output_size", inspect.signature(encoder_cls).parameters["output_size"].default)
    encoder = {"_target_": f"{encoder_cls.__module__}.{encoder_cls.__qualname__}", "input_size": input_size, **kwargs}
    decoder = None
    if model_conf["ctc_weight"] < 1.0:
        if config.get("decoder") != "transformer":
            raise ValueError(f"decoder: {config.get('decoder')} is not supported (only transformer)")
        kwargs, dropped = espnet_decoder_kwargs(config.get("decoder_conf") or {})
        for key, why in dropped.items():
            log.info("ESPnet decoder_conf %s left out: %s", key, why)
        decoder = {"_target_": "speechlm.decoders.transformer.TransformerDecoder", "vocab_size": vocab_size,
                   "encoder_output_size": encoder["output_size"], **kwargs}

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
        normalize = {"_target_": "speechlm.features.GlobalCMVN.from_stats_file", "path": conf.get("stats_file"),
                     "norm_means": conf.get("norm_means", True), "norm_vars": conf.get("norm_vars", True)}
    elif config.get("normalize") not in (None, "none"):
        raise ValueError(f"normalize: {config['normalize']} is not supported (global_mvn or none)")

    return {"_target_": "speechlm.models.ctc_attention.CTCAttentionModel", "vocab_size": vocab_size,
            "encoder": encoder, "decoder": decoder, "frontend": espnet_frontend_config(config),
            "normalize": normalize, "specaug": None, "sos_eos_id": sos, "blank_id": blank_id,
            "ctc_dropout_rate": ctc_dropout, **model_conf}


def ctc_attention_from_espnet_config(config: Mapping[str, Any],
                                     state_dict: Mapping[str, Tensor] | None = None) -> CTCAttentionModel:
    """Our `CTCAttentionModel` from an ESPnet ASR `config.yaml` (as a dict), built from
    `espnet_asr_model_config`. With `frontend: default` it takes raw audio (B, T) as
    ESPnet's model does; with `input_size` set, features. With `state_dict` (ESPnet's
    keys) weights load strictly."""
    tree = espnet_asr_model_config(config)
    overrides = {}
    if tree["normalize"] is not None:
        dim, norm = espnet_input_size(config), tree["normalize"]
        overrides["normalize"] = GlobalCMVN(torch.zeros(dim), torch.ones(dim), norm["norm_means"], norm["norm_vars"])
    model = hydra.utils.instantiate(tree, **overrides)
    if state_dict is not None:
        if "model" in state_dict and isinstance(state_dict["model"], Mapping):
            state_dict = state_dict["model"]
        model.load_state_dict(espnet_asr_state_dict_to_ours(state_dict), strict=True)
        melmat = state_dict.get("frontend.logmel.melmat")
        if melmat is not None and model.frontend is not None and not (
                melmat.shape == model.frontend.mel_banks.shape
                and torch.allclose(melmat.float(), model.frontend.mel_banks, rtol=0, atol=1e-6)):
            raise ValueError("the model's frontend.logmel.melmat is not the mel filterbank of config.yaml's "
                             "frontend_conf: are config and weights from the same experiment?")
    return model


def espnet_token_list(config: Mapping[str, Any]) -> list[str]:
    """`token_list` of an ESPnet config: the list itself, or (before ESPnet expands it) the
    path of a file with one token per line."""
    tokens = config["token_list"]
    if isinstance(tokens, (str, os.PathLike)):
        with open(tokens, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f]
    return [str(t) for t in tokens]


def tokenizer_from_espnet_config(config: Mapping[str, Any], bpemodel: str | os.PathLike | None = None) -> Tokenizer:
    """Our tokenizer for an ESPnet ASR config's `token_list` + `token_type` (char, word, or
    bpe with `bpemodel`; `bpemodel` here overrides the config's path): the same ids, and the
    same text for them as ESPnet's `build_tokenizer` + `TokenIDConverter` give."""
    tokens, token_type = espnet_token_list(config), config.get("token_type")
    try:
        if token_type == "char":
            symbols = []
            if config.get("non_linguistic_symbols"):
                path = Path(config["non_linguistic_symbols"])
                if path.is_file():  # ESPnet also goes on without it (with a warning)
                    symbols = [s for s in path.read_text(encoding="utf-8").split("\n") if s.strip()]
                else:
                    log.warning("non_linguistic_symbols %s not found; transcripts are split into characters", path)
            return CharTokenizer(tokens, symbols)
        if token_type == "word":
            return WordTokenizer(tokens)
        if token_type == "bpe":
            path = bpemodel or config.get("bpemodel")
            if not path:
                raise ValueError("token_type bpe needs the sentencepiece model (bpemodel)")
            model = Path(path).read_bytes()
            return SentencePieceTokenizer(model, sentencepiece_model_type(model), tokens)
    except ValueError as e:
        raise ValueError(f"ESPnet token_type {token_type}: {e}") from e
    raise ValueError(f"ESPnet token_type {token_type!r} is not supported (char, word or bpe)")


def load_espnet_asr(config_yaml: str | os.PathLike, model_pth: str | os.PathLike,
                    map_location: str = "cpu") -> tuple[CTCAttentionModel, list[str]]:
    """Our model, in eval mode, and the token list of an ESPnet ASR experiment: its
    `config.yaml` and a model file (`valid.acc.ave.pth`, or a training `checkpoint.pth`).
    With ESPnet's default frontend the model takes raw audio at `frontend_conf.fs`."""
    import yaml

    with open(config_yaml, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    state = torch.load(model_pth, map_location=map_location, weights_only=True)
    model = ctc_attention_from_espnet_config(config, state)
    return model.eval(), espnet_token_list(config)
