"""LoRA (Hu et al. 2021): a frozen linear layer plus a trainable low-rank update,

    y = W x + b + (B A dropout(x)) * scaling,   A (r, in), B (out, r),
    scaling = alpha / r   (rsLoRA, Kalajdzievski 2023: alpha / sqrt(r))

A is initialised as peft does (kaiming-uniform, a=sqrt(5)), B with zeros, so a freshly wrapped
model computes exactly what it did before. Written here (no peft at run time) and tested
against peft: same outputs, same gradients, same merge, and adapters move both ways through
peft's directory format (adapter_config.json + adapter_model.safetensors, keys
`base_model.model.<module path>.lora_A.weight`).

    paths = apply_lora(lm, ["q_proj", "v_proj"], r=8, alpha=16)   # every other weight frozen
    export_peft_adapter(lm, "adapter/", prefixes=CAUSAL_LM_TO_HF)   # PeftModel.from_pretrained(hf, "adapter/")
    merge_lora(lm)                                                  # W += B A scaling; plain nn.Linear again

Module paths are the model's own (`named_modules`); `prefixes` maps them to the peer model's
(CausalLM's `layers.0.self_attn.q_proj` is `model.layers.0.self_attn.q_proj` in a
LlamaForCausalLM)."""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from speechlm.atomic import atomic_path, atomic_write_text

# speechlm.decoders.causal_lm.CausalLM module paths -> transformers' LlamaForCausalLM / Qwen2ForCausalLM
CAUSAL_LM_TO_HF = {"": "model.", "lm_head": "lm_head"}
PEFT_PREFIX = "base_model.model."
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


class LoRALinear(nn.Linear):
    """An nn.Linear whose `weight`/`bias` are the frozen base layer's own Parameters (so the
    base keys of a state_dict do not change) plus `lora_A`, `lora_B` (peft's names).

    x (..., in_features) -> (..., out_features)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False):
        if r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {r}")
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.r, self.alpha, self.use_rslora = int(r), float(alpha), bool(use_rslora)
        self.scaling = self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)
        # half-precision base weights get float32 adapters (peft's autocast_adapter_dtype)
        dtype = torch.float32 if base.weight.dtype in (torch.float16, torch.bfloat16) else base.weight.dtype
        factory = dict(device=base.weight.device, dtype=dtype)
        self.lora_A = nn.Linear(self.in_features, self.r, bias=False, **factory)
        self.lora_B = nn.Linear(self.r, self.out_features, bias=False, **factory)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: Tensor) -> Tensor:
        result = super().forward(x)
        update = self.lora_B(self.lora_A(self.lora_dropout(x.to(self.lora_A.weight.dtype))))
        return result + (update * self.scaling).to(result.dtype)

    def delta_weight(self) -> Tensor:
        """B A scaling: (out_features, in_features), what merging adds to the weight."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    def merged(self) -> nn.Linear:
        """A plain nn.Linear computing what this layer computes in eval mode."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        weight = self.weight.detach() + self.delta_weight().detach().to(self.weight.dtype)
        linear.weight = nn.Parameter(weight, requires_grad=False)
        if self.bias is not None:
            linear.bias = self.bias
        return linear

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.r}, alpha={self.alpha:g}, use_rslora={self.use_rslora}"


def matches(path: str, target_modules: str | Sequence[str]) -> bool:
    """peft's rule: a string is a regular expression the whole path must match; a list
    names modules by their path or by the last dotted parts of it ("q_proj", "self_attn.q_proj")."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, path) is not None
    return path in target_modules or any(path.endswith(f".{t}") for t in target_modules)


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """path -> LoRALinear, in `named_modules` order."""
    return {path: m for path, m in model.named_modules() if isinstance(m, LoRALinear)}


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def apply_lora(model: nn.Module, target_modules: str | Sequence[str], r: int = 8, alpha: float = 16,
               dropout: float = 0.0, use_rslora: bool = False) -> list[str]:
    """Wrap every nn.Linear of `model` that `target_modules` names (see `matches`) in a
    LoRALinear and freeze every other parameter of `model` (only LoRA weights train, as in
    peft). Returns the wrapped module paths. Raises when nothing matches, or when a match
    is not an nn.Linear (named)."""
    if not isinstance(target_modules, str):
        target_modules = list(target_modules)
    found = [(path, m) for path, m in model.named_modules() if path and matches(path, target_modules)]
    if not found:
        raise ValueError(f"apply_lora: no module of {type(model).__name__} matches target_modules={target_modules!r}")
    for path, m in found:
        if isinstance(m, LoRALinear):
            raise ValueError(f"apply_lora: {path} already has LoRA weights")
        if type(m) is not nn.Linear:
            raise ValueError(f"apply_lora: {path} is a {type(m).__name__}, LoRA here wraps nn.Linear only")
    for p in model.parameters():
        p.requires_grad_(False)
    for path, m in found:
        _replace(model, path, LoRALinear(m, r, alpha, dropout, use_rslora).train(m.training))
    return [path for path, _ in found]


def merge_lora(model: nn.Module) -> list[str]:
    """Fold every LoRA update into its weight (W += B A scaling) and put plain nn.Linear
    layers back (merge-and-export: the model then saves as its base architecture, e.g.
    `CausalLM.save_hf`). Returns the merged paths."""
    layers = lora_layers(model)
    for path, layer in layers.items():
        _replace(model, path, layer.merged())
    return list(layers)


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Only the LoRA weights: {"<path>.lora_A.weight": (r, in), "<path>.lora_B.weight": (out, r)}."""
    state = {}
    for path, layer in lora_layers(model).items():
        state[f"{path}.lora_A.weight"] = layer.lora_A.weight.detach()
        state[f"{path}.lora_B.weight"] = layer.lora_B.weight.detach()
    return state


def rename_path(path: str, prefixes: Mapping[str, str] | None) -> str:
    """Replace the longest matching key of `prefixes` at the start of `path` by its value."""
    if not prefixes:
        return path
    for old in sorted(prefixes, key=len, reverse=True):
        if path.startswith(old):
            return prefixes[old] + path[len(old):]
    return path


def _inverse(prefixes: Mapping[str, str] | None) -> dict[str, str] | None:
    return None if prefixes is None else {new: old for old, new in prefixes.items()}


def _one_setting(layers: Mapping[str, LoRALinear]) -> tuple[int, float, float, bool]:
    settings = {(m.r, m.alpha, getattr(m.lora_dropout, "p", 0.0), m.use_rslora) for m in layers.values()}
    if len(settings) != 1:
        raise ValueError(f"export_peft_adapter: the LoRA layers differ in (r, alpha, dropout, use_rslora): "
                         f"{sorted(settings)}; one adapter directory holds one setting")
    return settings.pop()


def export_peft_adapter(model: nn.Module, directory: str | os.PathLike, prefixes: Mapping[str, str] | None = None,
                        base_model_name_or_path: str | None = None, task_type: str | None = "CAUSAL_LM") -> Path:
    """Write `model`'s LoRA weights as a peft adapter directory, which
    `peft.PeftModel.from_pretrained(peer_model, directory)` loads. `prefixes` maps this
    model's module paths to the peer's (CAUSAL_LM_TO_HF for a CausalLM)."""
    from safetensors.torch import save_file

    layers = lora_layers(model)
    if not layers:
        raise ValueError(f"export_peft_adapter: {type(model).__name__} has no LoRA layers")
    r, alpha, dropout, use_rslora = _one_setting(layers)
    peer_paths = {path: rename_path(path, prefixes) for path in layers}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for path, layer in layers.items():
        for name in ("lora_A", "lora_B"):
            weight = getattr(layer, name).weight.detach().cpu().contiguous()
            tensors[f"{PEFT_PREFIX}{peer_paths[path]}.{name}.weight"] = weight
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA", "task_type": task_type, "base_model_name_or_path": base_model_name_or_path,
        "r": r, "lora_alpha": alpha, "lora_dropout": dropout, "use_rslora": use_rslora,
        # the exact paths: a peer with other modules of the same name gets no surprise adapters
        "target_modules": sorted(peer_paths.values()),
        "bias": "none", "fan_in_fan_out": False, "init_lora_weights": True, "inference_mode": True,
        "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {}, "use_dora": False,
    }
    atomic_write_text(directory / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return directory


# what this LoRALinear does not compute, as peft config values that must hold
_UNSUPPORTED = {"use_dora": False, "fan_in_fan_out": False, "bias": "none", "modules_to_save": None,
                "rank_pattern": {}, "alpha_pattern": {}, "layers_to_transform": None, "target_parameters": None,
                "lora_bias": False, "use_qalora": False}


def load_peft_adapter(model: nn.Module, directory: str | os.PathLike,
                      prefixes: Mapping[str, str] | None = None) -> list[str]:
    """Load a peft LoRA adapter directory into `model`: the modules it names get LoRA layers
    (`apply_lora` with the adapter's r, alpha, dropout, rsLoRA) unless they have them, then
    its weights. `prefixes` maps this model's paths to the peer's (as for export). Returns the
    paths loaded. Settings this LoRA does not compute (DoRA, per-module ranks, ...) are refused."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config_path = directory / CONFIG_NAME
    config = json.loads(config_path.read_text())
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{config_path}: peft_type {config.get('peft_type')!r} is not LORA")
    for key, ok in _UNSUPPORTED.items():
        if config.get(key) not in (None, False, {}, [], "none"):
            raise ValueError(f"{config_path}: {key}={config[key]!r} is not supported (LoRALinear computes {key}={ok!r})")
    weights_path = directory / WEIGHTS_NAME
    if not weights_path.exists():
        raise FileNotFoundError(f"{weights_path}: no adapter weights (only safetensors adapters are read)")
    tensors = load_file(str(weights_path))
    back = _inverse(prefixes)
    found: dict[str, dict[str, Tensor]] = {}
    pattern = re.compile(rf"^{re.escape(PEFT_PREFIX)}(.+)\.(lora_A|lora_B)(?:\.[^.]+)?\.weight$")
    # peft also saves a targeted layer's base weight when it is tied to the embeddings: it must be ours
    base_pattern = re.compile(rf"^{re.escape(PEFT_PREFIX)}(.+)\.base_layer\.(weight|bias)$")
    for key, value in tensors.items():
        match = pattern.match(key)
        base = base_pattern.match(key)
        if base is not None:
            path = rename_path(base.group(1), back)
            try:
                ours = model.get_parameter(f"{path}.{base.group(2)}")
            except AttributeError:
                raise ValueError(f"{weights_path}: {key}: {type(model).__name__} has no {path}.{base.group(2)}") from None
            if not torch.equal(ours.detach().cpu(), value.to(ours.dtype)):
                raise ValueError(f"{weights_path}: {key}: the adapter was saved with other base weights than the model's")
            continue
        if match is None:
            raise ValueError(f"{weights_path}: key {key!r} is not a LoRA A/B weight under {PEFT_PREFIX!r}")
        found.setdefault(rename_path(match.group(1), back), {})[match.group(2)] = value
    modules = dict(model.named_modules())
    missing = [path for path in found if path not in modules]
    if missing:
        raise ValueError(f"{weights_path}: {len(missing)} adapted module(s) are not in {type(model).__name__}, "
                         f"e.g. {missing[0]!r} (check `prefixes`)")
    todo = [path for path in found if not isinstance(modules[path], LoRALinear)]
    if todo:
        apply_lora(model, todo, r=config["r"], alpha=config["lora_alpha"], dropout=config.get("lora_dropout", 0.0),
                   use_rslora=config.get("use_rslora", False))
    with torch.no_grad():
        for path, pair in found.items():
            layer = model.get_submodule(path)
            for name in ("lora_A", "lora_B"):
                target = getattr(layer, name).weight
                if name not in pair or pair[name].shape != target.shape:
                    got = tuple(pair[name].shape) if name in pair else "nothing"
                    raise ValueError(f"{weights_path}: {path}.{name}: expected {tuple(target.shape)}, got {got}")
                target.copy_(pair[name])
    return list(found)
