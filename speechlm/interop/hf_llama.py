"""Hugging Face `LlamaForCausalLM` / `Qwen2ForCausalLM` directories <-> `CausalLM`.

    lm = load_hf_causal_lm("Qwen2-0.5B/")           # config.json + model.safetensors (or shards)
    save_hf_causal_lm(lm, "out/", arch="llama")      # config.json, generation_config.json, model.safetensors

Weights: HF's names are ours with `model.` in front (`lm_head.weight` as is; absent when the
embeddings are tied). A pytorch_model.bin is read with `torch.load(weights_only=True)` only.
The config covers what these two families vary: GQA heads, head_dim, rope_theta and
`rope_scaling` (linear, dynamic, llama3, yarn; both transformers 4's `rope_theta` +
`rope_scaling` and 5's `rope_parameters`), tied embeddings, attention biases (Qwen2: on
q/k/v; LLaMA's `attention_bias`: on q/k/v/o), bos/eos/pad ids. What `CausalLM` does not
compute (MLP biases, another activation, Qwen2's sliding window) is refused by name.
transformers itself is not needed (it is the tests' peer)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from speechlm.atomic import atomic_path, atomic_write_text
from speechlm.decoders.causal_lm import CausalLM
from speechlm.interop.hf_wav2vec2 import _read_weights as read_hf_weights
from speechlm.nn.rotary import LlamaRotaryEmbedding, rope_type

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def _first(value: Any) -> int | None:
    """eos_token_id may be a list (Llama 3 instruct): the first is the LM's eos."""
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value else None
    return None if value is None else int(value)


def hf_config_to_kwargs(config: dict[str, Any], where: str = "config.json") -> dict[str, Any]:
    """A LLaMA / Qwen2 config.json (as a dict) -> `CausalLM` keyword arguments."""
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"{where}: model_type {model_type!r} is not supported (llama or qwen2)")
    for key, ok in (("hidden_act", "silu"), ("mlp_bias", False), ("use_sliding_window", False)):
        if config.get(key, ok) != ok:
            raise ValueError(f"{where}: {key}={config[key]!r} is not supported (CausalLM computes {key}={ok!r})")
    if config.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(f"{where}: partial_rotary_factor={config['partial_rotary_factor']} is not supported")
    heads = config["num_attention_heads"]
    # transformers 5 keeps theta and the scaling in rope_parameters; 4 in rope_theta + rope_scaling
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    theta = rope.pop("rope_theta", config.get("rope_theta", 10000.0))
    rope.pop("partial_rotary_factor", None)
    kind = rope_type(rope)  # raises on an unsupported type
    scaling = None if kind == "default" else {**{k: v for k, v in rope.items() if k != "type"}, "rope_type": kind}
    qwen2 = model_type == "qwen2"
    return dict(
        vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"], num_layers=config["num_hidden_layers"],
        num_heads=heads, num_kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or config["hidden_size"] // heads,
        rope_theta=float(theta), rope_scaling=scaling, rms_norm_eps=config.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        attention_bias=True if qwen2 else bool(config.get("attention_bias", False)),
        output_bias=False if qwen2 else bool(config.get("attention_bias", False)),
        max_position_embeddings=config.get("max_position_embeddings", 2048),
        bos_id=_first(config.get("bos_token_id")), eos_id=_first(config.get("eos_token_id")),
        pad_id=_first(config.get("pad_token_id")), attention_dropout=float(config.get("attention_dropout", 0.0)))


def hf_state_to_speechlm(state: dict[str, Tensor], tied: bool, where: str) -> dict[str, Tensor]:
    """HF names -> ours; rotary inv_freq tables (old checkpoints keep them) are dropped."""
    ours = {}
    for key, value in state.items():
        if key.endswith("rotary_emb.inv_freq"):
            continue
        ours[key.removeprefix("model.")] = value
    if tied:
        ours.pop("lm_head.weight", None)
    elif "lm_head.weight" not in ours:
        raise ValueError(f"{where}: no lm_head.weight, and tie_word_embeddings is false")
    return ours


def load_hf_causal_lm(path: str | os.PathLike, dtype: torch.dtype | None = None) -> CausalLM:
    """A HF LLaMA / Qwen2 directory -> `CausalLM` in eval mode, in `dtype` (None: as stored).
    Built on the meta device and filled by assignment, so a large LM is held once in memory."""
    directory = Path(path)
    where = str(directory / "config.json")
    config = json.loads((directory / "config.json").read_text())
    kwargs = hf_config_to_kwargs(config, where)
    state = hf_state_to_speechlm(read_hf_weights(directory), kwargs["tie_word_embeddings"], str(directory))
    if dtype is None:
        dtype = state["embed_tokens.weight"].dtype
    with torch.device("meta"):
        model = CausalLM(**kwargs)
    expected = {k for k in model.state_dict() if not (kwargs["tie_word_embeddings"] and k == "lm_head.weight")}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{directory}: weights do not fit the {config.get('architectures')} config: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    shapes = model.state_dict()
    for key, value in state.items():
        if value.shape != shapes[key].shape:
            raise ValueError(f"{directory}: {key} has shape {tuple(value.shape)}, "
                             f"the config gives {tuple(shapes[key].shape)}")
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False, assign=True)
    if kwargs["tie_word_embeddings"]:
        model.lm_head.weight = model.embed_tokens.weight
    cfg = model.config
    model.rotary_emb = LlamaRotaryEmbedding(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling, cfg.max_position_embeddings)
    return model.eval()


def causal_lm_to_hf_config(lm: CausalLM, arch: str | None = None) -> dict[str, Any]:
    """config.json of `lm` as `arch` ("llama" | "qwen2"; None: qwen2 when only q/k/v have biases)."""
    cfg = lm.config
    if arch is None:
        arch = "qwen2" if cfg.attention_bias and not cfg.output_bias else "llama"
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch {arch!r}: llama or qwen2")
    if arch == "llama" and cfg.attention_bias != cfg.output_bias:
        raise ValueError("LlamaForCausalLM has biases on all of q/k/v/o or none: attention_bias must equal output_bias "
                         "(save q/k/v-only biases as arch='qwen2')")
    if arch == "qwen2" and not (cfg.attention_bias and not cfg.output_bias):
        raise ValueError("Qwen2ForCausalLM has biases on q/k/v and none on o: "
                         "needs attention_bias=True, output_bias=False")
    scaling = None
    if cfg.rope_scaling:
        scaling = {k: v for k, v in cfg.rope_scaling.items() if k not in ("type", "rope_theta")}
        scaling["rope_type"] = rope_type(cfg.rope_scaling)
    dtype = str(lm.embed_tokens.weight.dtype).removeprefix("torch.")
    config = {
        "architectures": [ARCHITECTURES[arch]], "model_type": arch,
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim, "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings, "rms_norm_eps": cfg.rms_norm_eps,
        # transformers 4's spelling; 5 reads it into rope_parameters
        "rope_theta": cfg.rope_theta, "rope_scaling": scaling,
        "tie_word_embeddings": cfg.tie_word_embeddings, "attention_dropout": cfg.attention_dropout,
        "bos_token_id": cfg.bos_id, "eos_token_id": cfg.eos_id, "pad_token_id": cfg.pad_id,
        "initializer_range": 0.02, "use_cache": True, "torch_dtype": dtype,
    }
    if arch == "llama":
        config.update(attention_bias=cfg.attention_bias, mlp_bias=False)
    else:
        config.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.num_layers)
    return config


def save_hf_causal_lm(lm: CausalLM, path: str | os.PathLike, arch: str | None = None) -> Path:
    """Write config.json, generation_config.json and model.safetensors (pytorch_model.bin without
    the safetensors package), each atomically, that
    `transformers.AutoModelForCausalLM.from_pretrained(path)` loads; returns the directory."""
    try:
        from safetensors.torch import save_file
    except ImportError:  # safetensors is not a dependency of speechlm: a .bin then (transformers reads both)
        save_file = None
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    config = causal_lm_to_hf_config(lm, arch)
    state = {}
    for key, value in lm.state_dict().items():
        if key == "lm_head.weight":
            if not lm.config.tie_word_embeddings:
                state[key] = value
        else:
            state[f"model.{key}"] = value
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_path(directory / ("model.safetensors" if save_file else "pytorch_model.bin")) as tmp:
        if save_file:
            save_file(state, str(tmp), metadata={"format": "pt"})
        else:
            torch.save(state, tmp)
    generation = {"_from_model_config": True, "bos_token_id": lm.config.bos_id, "eos_token_id": lm.config.eos_id}
    if lm.config.pad_id is not None:
        generation["pad_token_id"] = lm.config.pad_id
    atomic_write_text(directory / "generation_config.json", json.dumps(generation, indent=2) + "\n")
    atomic_write_text(directory / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory
