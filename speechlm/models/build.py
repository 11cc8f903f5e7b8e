"""Building a model from its config, and the pretrained parts a config names.

Any module node of a model config may say where its starting weights come from:

    model:
      encoder:  {..., init_from: exp/asr/model.avg.ckpt}               # its `encoder.*` weights
      encoder:  {..., init_from: {checkpoint: x.ckpt, prefix: encoder.}}  # another part's
      encoder:  {..., init_from: {checkpoint: valid.acc.ave.pth, format: espnet}}
      model:    {..., init_from: tiny.pt}    # an OpenAI Whisper checkpoint (format: openai), converted
      encoder:  {..., init_from: {checkpoint: wav2vec2-base/, format: hf}}  # HF wav2vec2/HuBERT/WavLM
      frontend: {..., init_from: {checkpoint: wav2vec2-base/, format: hf}}  # its CNN
      normalize: {_target_: speechlm.features.GlobalCMVN.empty, dim: 80, init_from: data/cmvn.npz}

`build_model(cfg, initialize=True)` (training, from scratch) instantiates the config without
the `init_from` keys, then fills each such module: a module with an `initialize_from(path)`
method (e.g. `GlobalCMVN`: statistics) does it itself; any other gets the checkpoint's
weights under `prefix` (default: the module's own path), strictly. `initialize=False`
(loading a trained model, resuming) only instantiates: the state_dict follows. A config key
is the module's attribute (`model.encoder` for `model.encoder: {...}`), as in every
speechlm model.

A model config may come out of a checkpoint (`speechlm.train.pretrained`), so before
anything is instantiated every `_target_` of it must be an `nn.Module` class (or a
speechlm module's classmethod): `speechlm.targets.check_module_config`.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra.utils
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from speechlm.safe_load import load_weights
from speechlm.targets import check_module_config, resolved

log = logging.getLogger(__name__)
INIT_KEY = "init_from"


def split_init(cfg: Mapping[str, Any] | DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config without `init_from` keys, {module path ("" for the model, "encoder",
    "joiner.predictor"...): source}) with the nulls left out."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = copy.deepcopy(dict(cfg))
    found: dict[str, Any] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            source = node.pop(INIT_KEY, None)
            if source is not None:
                found[path] = source
            for key, child in node.items():
                walk(child, f"{path}.{key}" if path else str(key))

    walk(cfg, "")
    return cfg, found


def build_model(cfg: Mapping[str, Any] | DictConfig, initialize: bool = True,
                source: str = "model config") -> nn.Module:
    """The model of a config (`_target_` tree); with `initialize`, its `init_from` parts
    filled (module docstring). A `_target_` that is not a module class is refused
    (ConfigTargetError, a ValueError, naming `source`) before anything is built."""
    plain, inits = split_init(resolved(cfg))
    check_module_config(plain, source)
    model = hydra.utils.instantiate(plain)
    if initialize:
        for path, init in inits.items():
            initialize_part(model, path, init)
    return model


def initialize_part(model: nn.Module, path: str, source: str | Mapping[str, Any]) -> None:
    try:
        module = model.get_submodule(path) if path else model
    except AttributeError:
        raise ValueError(f"init_from at '{path}': the model has no such module") from None
    if isinstance(source, str) and hasattr(module, "initialize_from"):
        module.initialize_from(source)
        log.info("%s initialised from %s", path or "model", source)
        return
    options = {"checkpoint": source} if isinstance(source, str) else dict(source)
    unknown = set(options) - {"checkpoint", "prefix", "format"}
    if unknown or "checkpoint" not in options:
        raise ValueError(f"init_from at '{path}': give a path, or {{checkpoint, prefix, format}} (got {sorted(options)})")
    prefix = options.get("prefix", f"{path}." if path else "")
    state = checkpoint_state_dict(options["checkpoint"], options.get("format", "speechlm"))
    part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not part:
        raise ValueError(f"init_from at '{path}': {options['checkpoint']} has no weights under '{prefix}'")
    try:
        missing, unexpected = module.load_state_dict(part, strict=False)
    except RuntimeError as e:  # shapes that do not fit
        raise ValueError(f"init_from at '{path}': {options['checkpoint']} ('{prefix}*') does not fit "
                         f"model.{path}: {e}") from None
    if missing or unexpected:
        raise ValueError(f"init_from at '{path}': {options['checkpoint']} ('{prefix}*') does not fit model.{path}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    log.info("%s initialised from %s ('%s*', %d tensors)", path or "model", options["checkpoint"], prefix, len(part))


def checkpoint_state_dict(path: str | Path, fmt: str = "speechlm") -> dict[str, torch.Tensor]:
    """A model's weights, keyed as the model's own state_dict: a speechlm checkpoint
    (Lightning's, `model.` prefix removed, or an averaged/converted one), with
    `fmt="espnet"` an ESPnet ASR model file converted (`speechlm.interop.espnet_asr`), with
    `fmt="openai"` an OpenAI Whisper checkpoint ({"dims", "model_state_dict"}: `tiny.pt`)
    converted (`speechlm.interop.whisper`); the default format also recognises the latter.
    `fmt="hf"`: a Hugging Face wav2vec 2.0 / HuBERT / WavLM directory (config.json + weights)
    converted (`speechlm.interop.hf_wav2vec2`: keys `frontend.*`, `encoder.*`, `mask_emb`, ...)."""
    if fmt == "hf":
        from speechlm.interop.hf_wav2vec2 import load_hf

        return dict(load_hf(path)[2])
    state = load_weights(path)
    if fmt == "espnet":
        from speechlm.interop.espnet_asr import espnet_asr_state_dict_to_ours

        return espnet_asr_state_dict_to_ours(state)
    if fmt not in ("speechlm", "openai"):
        raise ValueError(f"init_from format {fmt!r}: speechlm, espnet, openai or hf")
    from speechlm.interop.whisper import is_openai_checkpoint, openai_state_dict_to_ours

    if is_openai_checkpoint(state):
        if fmt == "speechlm":
            log.info("%s is an OpenAI Whisper checkpoint: its weights are converted (speechlm.interop.whisper)", path)
        return openai_state_dict_to_ours(state["model_state_dict"])
    if fmt == "openai":
        raise ValueError(f"{path}: not an OpenAI Whisper checkpoint (no 'dims' + 'model_state_dict')")
    if "state_dict" not in state:
        raise ValueError(f"{path}: not a speechlm checkpoint (no state_dict)")
    return {k.removeprefix("model."): v for k, v in state["state_dict"].items()}
