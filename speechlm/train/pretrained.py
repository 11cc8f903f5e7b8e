"""Load a trained model from a checkpoint alone: a Lightning checkpoint (`last.ckpt`,
`epochNNN.ckpt`), an averaged `model.avg.ckpt` or a converted one. Each carries the
resolved config and the tokenizer (`speechlm` block) and loads with
`torch.load(weights_only=True)`: the model is its config instantiated (no `init_from`: the
weights follow) and its state_dict loaded, nothing else."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from speechlm.models.build import build_model
from speechlm.safe_load import load_weights
from speechlm.tokenizers.base import Tokenizer, tokenizer_from_dict


def migrate_model_config(model: dict, config: dict) -> dict:
    """A checkpoint written before the statistics became part of the module (2026-12) names
    its CMVN stats file (`GlobalCMVN.from_stats_file`, a path that need not exist where the
    checkpoint is loaded); the statistics are in its state_dict, so the node becomes the
    module of the right size."""
    normalize = model.get("normalize")
    if isinstance(normalize, dict) and normalize.get("_target_", "").endswith("GlobalCMVN.from_stats_file"):
        dim = int((config.get("frontend") or {}).get("n_mels") or model["encoder"]["input_size"])
        model = {**model, "normalize": {"_target_": "speechlm.features.GlobalCMVN.empty", "dim": dim,
                                        "norm_means": normalize.get("norm_means", True),
                                        "norm_vars": normalize.get("norm_vars", True)}}
    return model


# Where a model config names parts loaded from elsewhere (frozen references, not in the
# checkpoint): a speech-LLM's encoder checkpoint and LM directory (speechlm.models.speech_llm).
REFERENCE_KEYS = (("encoder_checkpoint",), ("lm", "path"))


def resolve_references(model: dict, checkpoint: str | Path) -> dict:
    """The model config with each relative reference (`REFERENCE_KEYS`) that does not exist
    from the working directory resolved against the checkpoint's nearest ancestor directory
    holding it — the recipe directory the model was trained in —, so that
    `exp/<tag>/model.avg.ckpt` loads from anywhere. The model checks what it then loads
    against the fingerprints in its state_dict (a wrong match fails, naming the reference)."""
    model = dict(model)
    for keys in REFERENCE_KEYS:
        node = model
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                break
            node[key] = dict(node[key])  # copies: the checkpoint's config stays as saved
            node = node[key]
        else:
            ref = node.get(keys[-1])
            if not isinstance(ref, str) or Path(ref).is_absolute() or Path(ref).exists():
                continue
            for folder in Path(checkpoint).resolve().parents:
                if (folder / ref).exists():
                    node[keys[-1]] = str(folder / ref)
                    break
            else:
                raise FileNotFoundError(
                    f"{checkpoint}: its model's {'.'.join(keys)} {ref!r} is not found from the working directory "
                    f"nor from any directory above the checkpoint (run from the recipe directory it was trained in, "
                    f"or give the checkpoint a config naming where it now is)")
    return model


def load_pretrained(path: str | Path, device: str = "cpu") -> tuple[nn.Module, Tokenizer | None, dict]:
    """(model in eval mode, tokenizer (None for a model trained without text), resolved
    training config). An OpenAI Whisper checkpoint (`tiny.pt`: {"dims", "model_state_dict"})
    loads too, converted by `speechlm.interop.whisper`."""
    ckpt = load_weights(path, map_location=device)
    if isinstance(ckpt, dict) and "dims" in ckpt and "model_state_dict" in ckpt:
        from speechlm.interop.whisper import model_from_openai_checkpoint

        return model_from_openai_checkpoint(ckpt, str(path), device)
    meta = ckpt.get("speechlm")
    if not meta or "config" not in meta:
        raise ValueError(f"{path}: not a speechlm checkpoint (no 'speechlm' block with the config)")
    config = meta["config"]
    model = build_model(resolve_references(migrate_model_config(config["model"], config), path), initialize=False)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    model.load_state_dict(state)
    tokenizer = tokenizer_from_dict(meta["tokenizer"]) if meta.get("tokenizer") else None
    return model.eval().to(device), tokenizer, config


def model_sample_rate(model: nn.Module, config: dict) -> int:
    """The audio sample rate a loaded model takes: its training config's frontend, or, for a
    model whose frontend lives inside a part loaded from elsewhere (a speech-LLM's encoder
    checkpoint), the model's own `sample_rate`."""
    frontend = config.get("frontend")
    if frontend and frontend.get("sample_rate"):
        return int(frontend["sample_rate"])
    rate = getattr(model, "sample_rate", None)
    if rate is None:
        raise ValueError(f"{type(model).__name__}: its config has no frontend and the model names no sample_rate: "
                         "the audio rate it takes is unknown")
    return int(rate)
