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

    model.load_state_dict(espnet_asr_state_dict_to_ours(torch.load("valid.acc.ave.pth", weights_only=True)))

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

import torch
from torch import Tensor

from speechlm.interop.espnet import (
    espnet_encoder_kwargs,
    espnet_encoder_state_dict_to_ours,
    espnet_input_size,
    our_encoder_class,
    ours_to_espnet_encoder_state_dict,
)
from speechlm.interop.espnet_options import CLASSES, TRAINING_ONLY, check_choice, check_options, check_task_options
from speechlm.models.build import build_model
from speechlm.models.ctc_attention import CTCAttentionModel
from speechlm.safe_load import load_weights
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
    conditioning = {k: v for k, v in state_dict.items() if k.startswith("encoder.conditioning_layer.")}
    state_dict = {k: v for k, v in state_dict.items() if k not in conditioning}
    out = {f"encoder.{k}": v for k, v in espnet_encoder_state_dict_to_ours(state_dict, "encoder.").items()}
    out.update({k.removeprefix("encoder."): v for k, v in conditioning.items()})  # self-conditioned CTC
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
    out = {f"encoder.{k}": v for k, v in state_dict.items() if k.startswith("conditioning_layer.")}
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith("conditioning_layer.")}
    out.update(ours_to_espnet_encoder_state_dict(_strip(state_dict, "encoder."), "encoder."))
    decoder = _strip(state_dict, "decoder.")
    if decoder:
        out.update(ours_to_espnet_decoder_state_dict(decoder, "decoder."))
    out.update({k: v for k, v in state_dict.items() if not k.startswith(("encoder.", "decoder."))})
    return out


# --- building our model from an ESPnet experiment's config.yaml -------------------------
# Every option is decided in `speechlm.interop.espnet_options`; here the mapped ones become
# our modules' arguments.


def espnet_decoder_kwargs(decoder_conf: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """ESPnet's `decoder_conf` (decoder: transformer) -> our `TransformerDecoder`'s keyword
    arguments (without vocab_size and encoder_output_size), and the keys left out with why."""
    for key in ("vocab_size", "encoder_output_size"):
        if key in decoder_conf:
            raise ValueError(f"{key} is not part of ESPnet's decoder_conf; it comes from the model")
    return check_options("decoder", "transformer", decoder_conf)


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


def espnet_frontend_config(config: Mapping[str, Any], left_out: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Hydra node (`_target_` + arguments) of our frontend for an ESPnet ASR config:
    `frontend: default` + `frontend_conf` -> `speechlm.features.LogMelFbank`. None when the
    model reads features (`input_size` set: ESPnet then builds no frontend either)."""
    if config.get("input_size") is not None:
        return None
    check_choice("frontend", config.get("frontend", "default"))
    kwargs, dropped = check_options("frontend", "default", config.get("frontend_conf") or {})
    _note(left_out, "frontend_conf", dropped)
    node = {"_target_": "speechlm.features.LogMelFbank", "sample_rate": espnet_sample_rate(kwargs.pop("fs", 16000))}
    node.update(kwargs)
    node.setdefault("n_mels", 80)
    node.setdefault("hop_length", 128)  # ESPnet's defaults, whatever LogMelFbank's are
    node.setdefault("n_fft", 512)
    return node


def espnet_normalize_config(config: Mapping[str, Any], left_out: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Hydra node of our normaliser for `normalize` + `normalize_conf`: global_mvn ->
    `GlobalCMVN` (statistics from the model's weights), utterance_mvn -> `UtteranceMVN`.
    An absent `normalize` is ESPnet's default, utterance_mvn; `null` is none."""
    name = config.get("normalize", "utterance_mvn")
    name = None if name in ("none", "null") else name
    check_choice("normalize", name)
    if name is None:
        return None
    kwargs, dropped = check_options("normalize", name, config.get("normalize_conf") or {})
    _note(left_out, "normalize_conf", dropped)
    if name == "global_mvn":  # the statistics are buffers in the model file
        return {"_target_": "speechlm.features.GlobalCMVN.empty", "dim": espnet_input_size(config),
                "norm_means": kwargs.get("norm_means", True), "norm_vars": kwargs.get("norm_vars", True)}
    return {"_target_": "speechlm.features.UtteranceMVN", **kwargs}


def _note(left_out: dict[str, str] | None, section: str, dropped: Mapping[str, str]) -> None:
    for key, why in dropped.items():
        log.info("ESPnet %s %s left out: %s", section, key, why)
        if left_out is not None:
            left_out[f"{section}.{key}"] = why


def espnet_asr_model_config(config: Mapping[str, Any], left_out: dict[str, str] | None = None) -> dict[str, Any]:
    """Hydra config (a `_target_` tree) of our `CTCAttentionModel` for an ESPnet ASR
    `config.yaml` (as a dict): frontend, normalisation, encoder, decoder (transformer), CTC,
    loss weights, token conventions. Every option is checked against
    `speechlm.interop.espnet_options`; refused ones raise ValueError with the reason, and the
    options not carried over are added to `left_out` (`section.key` -> why).
    `speechlm.models.build.build_model` builds it (config.yaml's values reach it, so a
    `_target_` node among them is refused unless it names a module class); the state_dict
    (`espnet_asr_state_dict_to_ours`) holds the weights and a global_mvn's statistics."""
    _note(left_out, "config", check_task_options(config))
    for section, default in (("model", "espnet"), ("preencoder", None), ("postencoder", None),
                             ("specaug", None), ("preprocessor", "default")):
        choice = config.get(section, default)
        if check_choice(section, choice) == TRAINING_ONLY and choice != default:
            _note(left_out, section, {str(choice): f"training only (with its {section}_conf)"})
    token_list = espnet_token_list(config)
    vocab_size = len(token_list)
    model_conf, dropped = check_options("model", "espnet", config.get("model_conf") or {})
    _note(left_out, "model_conf", dropped)

    def token_id(key: str, fallback: int) -> int:  # ESPnetASRModel's rule, fallback included
        symbol = model_conf.pop(key, CLASSES[("model", "espnet")][1][key].default)
        return token_list.index(symbol) if symbol in token_list else fallback

    sos, eos = token_id("sym_sos", vocab_size - 1), token_id("sym_eos", vocab_size - 1)
    blank_id = token_id("sym_blank", 0)
    if sos != eos:
        raise ValueError(f"<sos> (id {sos}) and <eos> (id {eos}) differ; one shared id is supported")
    model_conf.setdefault("ctc_weight", 0.5)  # ESPnetASRModel's defaults, which the config may rely on
    model_conf.setdefault("lsm_weight", 0.0)

    input_size = espnet_input_size(config)
    encoder_name = config.get("encoder")
    check_choice("encoder", encoder_name)
    encoder_cls = our_encoder_class(encoder_name)
    encoder_conf = dict(config.get("encoder_conf") or {})
    if encoder_conf.pop("interctc_use_conditioning", False):  # the model's, here
        model_conf["interctc_use_conditioning"] = True
    if encoder_conf.get("interctc_layer_idx"):  # ESPnet's encoder option; which layers the model reads
        model_conf["interctc_layer_idx"] = list(encoder_conf["interctc_layer_idx"])
    kwargs, dropped = espnet_encoder_kwargs(encoder_name, encoder_conf)
    _note(left_out, "encoder_conf", dropped)
    kwargs.setdefault("output_size", inspect.signature(encoder_cls).parameters["output_size"].default)
    encoder = {"_target_": f"{encoder_cls.__module__}.{encoder_cls.__qualname__}", "input_size": input_size, **kwargs}

    decoder = None
    decoder_name = config.get("decoder")
    check_choice("decoder", decoder_name)
    if model_conf["ctc_weight"] < 1.0:
        if decoder_name is None:
            raise ValueError(f"model_conf ctc_weight: {model_conf['ctc_weight']} needs a decoder, and decoder is null")
        kwargs, dropped = espnet_decoder_kwargs(config.get("decoder_conf") or {})
        _note(left_out, "decoder_conf", dropped)
        decoder = {"_target_": "speechlm.decoders.transformer.TransformerDecoder", "vocab_size": vocab_size,
                   "encoder_output_size": encoder["output_size"], **kwargs}
    elif decoder_name is not None:
        _note(left_out, "decoder", {decoder_name: "ctc_weight 1.0: ESPnet drops the decoder too"})

    ctc, dropped = check_options("ctc", "ctc", config.get("ctc_conf") or {})
    _note(left_out, "ctc_conf", dropped)
    return {"_target_": "speechlm.models.ctc_attention.CTCAttentionModel", "vocab_size": vocab_size,
            "encoder": encoder, "decoder": decoder, "frontend": espnet_frontend_config(config, left_out),
            "normalize": espnet_normalize_config(config, left_out), "specaug": None, "sos_eos_id": sos,
            "blank_id": blank_id, "ctc_dropout_rate": ctc.get("dropout_rate", 0.0), **model_conf}


def ctc_attention_from_espnet_config(config: Mapping[str, Any], state_dict: Mapping[str, Tensor] | None = None,
                                     left_out: dict[str, str] | None = None) -> CTCAttentionModel:
    """Our `CTCAttentionModel` from an ESPnet ASR `config.yaml` (as a dict), built from
    `espnet_asr_model_config` (`left_out` as there). With `frontend: default` it takes raw
    audio (B, T) as ESPnet's model does; with `input_size` set, features. With `state_dict`
    (ESPnet's keys) weights load strictly."""
    model = build_model(espnet_asr_model_config(config, left_out), initialize=False, source="ESPnet config")
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
    state = load_weights(model_pth, map_location)
    model = ctc_attention_from_espnet_config(config, state)
    return model.eval(), espnet_token_list(config)
