"""Bring ESPnet's Conformer, E-Branchformer and Transformer encoders over: their state_dicts,
their `encoder_conf`, and an ESPnet experiment's `config.yaml` + `*.pth` as it lies on disk.

Our encoders take ESPnet's constructor arguments and keep ESPnet's state_dict keys, with one
exception: each self-attention's `linear_q`, `linear_k`, `linear_v` are one fused `qkv`
Linear (one matmul instead of three), stacked in that order along the output dimension:

    qkv.weight = cat([linear_q.weight, linear_k.weight, linear_v.weight], dim=0)  # (3D, D)

    encoder = load_espnet_encoder("exp/asr_train/config.yaml", "exp/asr_train/valid.acc.ave.pth")

The features are not part of the encoder: ESPnet's default frontend is an 80-bin log-mel
fbank, and `normalize: global_mvn` reads the `feats_stats.npz` that
`speechlm.features.GlobalCMVN` also reads.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from speechlm.interop.espnet_options import check_choice, check_options
from speechlm.safe_load import load_weights

log = logging.getLogger(__name__)


def _fused_qkv_prefixes(keys) -> list[str]:
    """'encoders.0.self_attn.' for every module that has linear_q, linear_k and linear_v."""
    prefixes = []
    for key in keys:
        if key.endswith(".linear_q.weight"):
            prefix = key[: -len("linear_q.weight")]
            if all(f"{prefix}linear_{n}.weight" in keys for n in "kv"):
                prefixes.append(prefix)
    return prefixes


def espnet_encoder_state_dict_to_ours(
    state_dict: Mapping[str, Tensor], prefix: str = ""
) -> dict[str, Tensor]:
    """ESPnet encoder state_dict -> ours (q/k/v fused into `qkv`, all else unchanged).

    `prefix` selects and strips a sub-module's keys, e.g. `prefix="encoder."` on a whole
    ESPnetASRModel state_dict (which also holds `decoder.*`, `ctc.*`, `normalize.*`).
    """
    if prefix:
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if not state_dict:
            raise KeyError(f"no key starts with {prefix!r}: is this an ESPnet model's state_dict?")
    out = dict(state_dict)
    for p in _fused_qkv_prefixes(state_dict):
        for kind in ("weight", "bias"):
            parts = [out.pop(f"{p}linear_{n}.{kind}", None) for n in "qkv"]
            if all(t is not None for t in parts):
                out[f"{p}qkv.{kind}"] = torch.cat(parts, dim=0)
            elif any(t is not None for t in parts):
                raise KeyError(f"{p}linear_{{q,k,v}}.{kind}: some but not all are present")
    return out


def ours_to_espnet_encoder_state_dict(
    state_dict: Mapping[str, Tensor], prefix: str = ""
) -> dict[str, Tensor]:
    """Our encoder state_dict -> ESPnet's (`qkv` split back into linear_q/k/v); `prefix` is
    prepended to every key (`"encoder."` for an ESPnetASRModel)."""
    out = {}
    for key, value in state_dict.items():
        head, sep, kind = key.rpartition("qkv.")
        if sep and (head == "" or head.endswith(".")) and kind in ("weight", "bias"):
            if value.shape[0] % 3:
                raise ValueError(f"{key}: first dimension {value.shape[0]} is not 3 x D")
            for name, part in zip("qkv", value.chunk(3, dim=0)):
                out[f"{prefix}{head}linear_{name}.{kind}"] = part.clone()
        else:
            out[prefix + key] = value
    return out


# ESPnet's `encoder:` names and class names -> our class's module and name.
_ENCODERS = {
    "conformer": ("speechlm.encoders.conformer", "ConformerEncoder"),
    "e_branchformer": ("speechlm.encoders.e_branchformer", "EBranchformerEncoder"),
    "transformer": ("speechlm.encoders.transformer", "TransformerEncoder"),
}


def espnet_encoder_name(family: str | type) -> str:
    """ESPnet's `encoder:` name for a name or an encoder class (ESPnet's or ours)."""
    name = family if isinstance(family, str) else family.__name__
    for espnet_name, (_, class_name) in _ENCODERS.items():
        if name in (espnet_name, class_name):
            return espnet_name
    raise ValueError(f"ESPnet encoder {name!r} has no counterpart here; supported: {', '.join(_ENCODERS)}")


def our_encoder_class(family: str | type) -> type:
    """Our class for an ESPnet encoder: its `encoder:` name in config.yaml ("conformer",
    "e_branchformer", "transformer") or its class (ESPnet's `ConformerEncoder`, ...)."""
    import importlib

    module, name = _ENCODERS[espnet_encoder_name(family)]
    return getattr(importlib.import_module(module), name)  # only the family asked for is imported


def espnet_encoder_kwargs(
    family: str | type, encoder_conf: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Check an ESPnet `encoder_conf` against `espnet_options` and turn it into our
    constructor's keyword arguments.

    Returns (kwargs, left_out), `left_out` naming each ESPnet key not passed on and why.
    Raises ValueError for options that describe a network we do not implement."""
    name = espnet_encoder_name(family)
    if "input_size" in encoder_conf:
        raise ValueError("input_size is not part of ESPnet's encoder_conf; pass it separately")
    kwargs, left_out = check_options("encoder", name, encoder_conf)
    if kwargs.pop("interctc_use_conditioning", False):
        raise ValueError("encoder_conf interctc_use_conditioning: true (self-conditioned CTC) needs the model's CTC "
                         "head: convert the whole model (speechlm.interop.espnet_asr), not the encoder alone")
    # which layers to return is the caller's (`return_layers`), not a constructor argument here
    kwargs.pop("interctc_layer_idx", None)
    if name == "conformer":  # ESPnet's Conformer defaults to legacy relative positions, ours not
        kwargs.setdefault("rel_pos_type", "legacy")
    return kwargs, left_out


def encoder_from_espnet_config(
    family: str | type,
    encoder_conf: Mapping[str, Any],
    input_size: int,
    state_dict: Mapping[str, Tensor] | None = None,
    prefix: str = "",
) -> nn.Module:
    """Our encoder built from ESPnet's `encoder:` name (or class) and `encoder_conf`; with
    `state_dict` (ESPnet's keys; `prefix="encoder."` for a whole ASR model) its weights are
    loaded strictly."""
    kwargs, dropped = espnet_encoder_kwargs(family, encoder_conf)
    for key, why in dropped.items():
        log.info("ESPnet encoder_conf %s left out: %s", key, why)
    encoder = our_encoder_class(family)(input_size=input_size, **kwargs)
    if state_dict is not None:
        encoder.load_state_dict(espnet_encoder_state_dict_to_ours(state_dict, prefix), strict=True)
    return encoder


def encoder_from_espnet(
    espnet_encoder: nn.Module, encoder_conf: Mapping[str, Any], input_size: int
) -> nn.Module:
    """Our copy of a built ESPnet encoder, weights included. ESPnet modules do not keep their
    constructor arguments, so the `encoder_conf` it was built with is needed too."""
    ours = encoder_from_espnet_config(
        type(espnet_encoder), encoder_conf, input_size, espnet_encoder.state_dict()
    )
    return ours.train(espnet_encoder.training)


def espnet_input_size(config: Mapping[str, Any]) -> int:
    """The encoder's input dimension in an ESPnet ASR config.yaml, as ESPnet's build_model
    works it out: `input_size` if given (features from the data loader), else the frontend's
    output (the default frontend: `frontend_conf.n_mels`, 80 unless set)."""
    check_choice("preencoder", config.get("preencoder"))
    if config.get("input_size") is not None:
        return int(config["input_size"])
    check_choice("frontend", config.get("frontend", "default"))
    return int((config.get("frontend_conf") or {}).get("n_mels", 80))


def load_espnet_encoder(
    config_yaml: str | os.PathLike, model_pth: str | os.PathLike, map_location: str = "cpu"
) -> nn.Module:
    """Our encoder, in eval mode, from an ESPnet ASR experiment: its `config.yaml` (keys
    `encoder`, `encoder_conf`, `input_size`, `frontend`, `frontend_conf`) and a model file
    (`valid.acc.ave.pth` etc.: the ESPnetASRModel state_dict; a training `checkpoint.pth`,
    which holds it under "model", works too)."""
    import yaml

    with open(config_yaml, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if not config.get("encoder"):
        raise ValueError(f"{config_yaml}: no `encoder:` entry")
    state = load_weights(model_pth, map_location)
    if "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    encoder = encoder_from_espnet_config(
        config["encoder"], config.get("encoder_conf") or {}, espnet_input_size(config),
        state, prefix="encoder.",
    )
    return encoder.eval()
