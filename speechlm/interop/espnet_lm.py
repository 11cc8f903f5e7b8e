"""Load an ESPnet language model (espnet2's `LMTask`: `exp/lm_train*/config.yaml` and
`valid.loss.ave.pth`) as `speechlm.models.lm.TransformerLM` / `LSTMLM`, with identical
scores (tests/interop/test_espnet_lm.py).

    config.yaml                      here
    lm: transformer, lm_conf         TransformerLM(**lm_conf)   (ESPnet's TransformerLM)
    lm: seq_rnn, lm_conf             LSTMLM(**lm_conf)          (SequentialRNNLM: lstm, gru, rnn_tanh, rnn_relu)
    token_list, token_type, bpemodel the tokenizer (`speechlm.interop.espnet_asr.tokenizer_from_espnet_config`)
    model: lm, model_conf            sos = eos = the last token (ESPnetLanguageModel's rule);
                                     ignore_id only pads training targets
    anything else                    training only (optimizer, batching, init)

Weights: ESPnet's `lm.*` keys without the prefix; in a TransformerLM the self-attention
`linear_q/k/v` are fused into `qkv` (as in every speechlm attention). Any other `lm:`
(`transformer_opt`, a Hugging Face OPT) or `model:` (`lm_multitask`), and any `lm_conf` key
that is not an argument of the ESPnet class, is refused naming it. config.yaml is read with
`yaml.safe_load` and the model is built by `speechlm.models.build.build_model`, so a value
that is a `_target_` node naming anything but a module class is refused before it is built
(`speechlm.targets`); the `.pth` is read with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from torch import Tensor

from speechlm.interop.espnet import espnet_encoder_state_dict_to_ours
from speechlm.interop.espnet_asr import espnet_token_list, tokenizer_from_espnet_config
from speechlm.models.build import build_model
from speechlm.models.lm import LanguageModel, LSTMLM, TransformerLM
from speechlm.safe_load import load_weights

log = logging.getLogger(__name__)

# ESPnet `lm:` choice -> our class; every lm_conf key must be an argument of both
LM_CLASSES = {"transformer": TransformerLM, "seq_rnn": LSTMLM}
OURS_ONLY = {"special_ids", "frontend", "specaug", "normalize"}


def espnet_lm_model_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Hydra config (`_target_` tree) of our LM for an ESPnet LM `config.yaml` (as a dict)."""
    choice = config.get("lm", "seq_rnn")  # LMTask's default
    if choice not in LM_CLASSES:
        raise ValueError(f"ESPnet lm: {choice!r} is not supported (supported: {', '.join(LM_CLASSES)})")
    model = config.get("model", "lm")
    if model != "lm":
        raise ValueError(f"ESPnet model: {model!r} is not supported (only lm: ESPnetLanguageModel)")
    model_conf = dict(config.get("model_conf") or {})
    unknown = set(model_conf) - {"ignore_id"}
    if unknown:
        raise ValueError(f"ESPnet model_conf {sorted(unknown)}: not an option of ESPnetLanguageModel")
    cls = LM_CLASSES[choice]
    accepted = set(inspect.signature(cls).parameters) - OURS_ONLY - {"vocab_size"}
    lm_conf = dict(config.get("lm_conf") or {})
    for key in lm_conf:
        if key not in accepted:
            raise ValueError(f"ESPnet lm_conf {key}: not an option of ESPnet's {choice} LM "
                             f"(supported: {', '.join(sorted(accepted))})")
    vocab_size = len(espnet_token_list(config))
    return {"_target_": f"{cls.__module__}.{cls.__qualname__}", "vocab_size": vocab_size,
            "special_ids": {"sos": vocab_size - 1, "eos": vocab_size - 1}, **lm_conf}


def espnet_lm_state_dict_to_ours(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """`ESPnetLanguageModel` state_dict (`lm.*`) -> our LM's."""
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):  # a training checkpoint.pth
        state_dict = state_dict["model"]
    lm = {k[len("lm."):]: v for k, v in state_dict.items() if k.startswith("lm.")}
    if not lm:
        raise KeyError("no key starts with 'lm.': not an ESPnet language model's state_dict")
    return espnet_encoder_state_dict_to_ours(lm)  # fuses self_attn.linear_{q,k,v} into qkv


def find_config(model_pth: Path) -> Path:
    for directory in (model_pth.parent, model_pth.parent.parent):
        if (directory / "config.yaml").is_file():
            return directory / "config.yaml"
    raise FileNotFoundError(f"{model_pth}: no config.yaml beside it (or one directory up); "
                            "an ESPnet LM needs the config.yaml of its experiment")


def load_espnet_lm(model_pth: str | os.PathLike, config_yaml: str | os.PathLike | None = None,
                   map_location: str = "cpu") -> tuple[LanguageModel, dict | None]:
    """(our LM in eval mode, its tokenizer's dict, or None where config.yaml's tokenizer
    cannot be rebuilt here, e.g. a bpemodel path that does not exist on this machine)."""
    model_pth = Path(model_pth)
    config_yaml = Path(config_yaml) if config_yaml is not None else find_config(model_pth)
    try:
        config = yaml.safe_load(config_yaml.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{config_yaml}: not a readable ESPnet config ({str(e).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_yaml}: not an ESPnet config (a mapping)")
    try:
        model = build_model(espnet_lm_model_config(config), initialize=False, source=str(config_yaml))
    except ValueError as e:
        raise ValueError(f"{config_yaml}: {e}") from None
    model.load_state_dict(espnet_lm_state_dict_to_ours(load_weights(model_pth, map_location)), strict=True)
    try:
        tokenizer = tokenizer_from_espnet_config(config).to_dict()
    except (ValueError, OSError) as e:
        log.warning("%s: the LM's tokenizer cannot be rebuilt (%s); its ids are the config's token_list", config_yaml, e)
        tokenizer = None
    return model.eval(), tokenizer
