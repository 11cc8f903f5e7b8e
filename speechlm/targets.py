"""What a config read from a file may instantiate.

Files load without pickle (`torch.load(weights_only=True)`, `np.load(allow_pickle=False)`,
`yaml.safe_load`, JSON): reading them runs no code. But a speechlm checkpoint carries its
model config, a Hydra `_target_` tree that loading then *instantiates*: every `_target_` is
imported and called with the config's arguments. Unchecked, a checkpoint whose model config
names `speechlm.data.audio.read_audio` with a Kaldi pipe `"cmd |"` as argument would run
`cmd` (Hydra's own blocklist knows `os.system` and `subprocess`, not this project's
functions). So configs that come from files (checkpoints, ESPnet config.yaml, HF
config.json, a frontend yaml) are checked before anything is built:

- `check_module_config`: a model (or a part of one): every `_target_` must be an
  `nn.Module` subclass, from any package (a model family may live outside speechlm), or a
  classmethod of one defined in speechlm (`speechlm.features.GlobalCMVN.empty`). A function
  or any other class is refused, naming the config path.
- `check_search_config`: an experiment's search node out of a checkpoint: its `_target_`
  must be a class of `speechlm.search` or of the model's own package, and its arguments
  plain values (no nested `_target_`).

Interpolations (`${...}`) are resolved before the check (`resolved`), so that one cannot
produce a node the check did not see; the caller instantiates what was checked. Resolving
a `_target_` imports its module, an installed one (nothing from the file itself runs).
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Iterator, Mapping
from typing import Any

import hydra.utils
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

TARGET_KEY = "_target_"
_IMPORT_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+\Z")


class ConfigTargetError(ValueError):
    """A config from a file names something it may not instantiate; the message says where."""


def _has_interpolation(node: Any) -> bool:
    if isinstance(node, str):
        return "${" in node
    if isinstance(node, Mapping):
        return any(_has_interpolation(k) or _has_interpolation(v) for k, v in node.items())
    if isinstance(node, (list, tuple)):
        return any(_has_interpolation(v) for v in node)
    return False


def resolved(cfg: Any) -> Any:
    """`cfg` as plain dicts and lists with its interpolations resolved (unchanged if it has none)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    if _has_interpolation(cfg):
        return OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
    return cfg


def iter_target_nodes(node: Any, path: str = "") -> Iterator[tuple[str, Mapping]]:
    """(config path, node) of every mapping with a `_target_` in `node`, lists included."""
    if isinstance(node, Mapping):
        if TARGET_KEY in node:
            yield path, node
        for key, child in node.items():
            yield from iter_target_nodes(child, f"{path}.{key}" if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, child in enumerate(node):
            yield from iter_target_nodes(child, f"{path}[{i}]")


def locate(target: Any, where: str) -> Any:
    """The object an import path names, or ConfigTargetError."""
    if not isinstance(target, str) or not _IMPORT_PATH.match(target):
        raise ConfigTargetError(f"{where}: _target_ {target!r} is not an import path")
    try:
        return hydra.utils.get_object(target)
    except Exception as e:  # ImportError, AttributeError, Hydra's own refusals
        raise ConfigTargetError(f"{where}: _target_ {target!r} cannot be imported ({type(e).__name__}: {e})") from None


def is_module_factory(obj: Any) -> bool:
    """An `nn.Module` subclass, or a classmethod of one that speechlm defines."""
    if isinstance(obj, type):
        return issubclass(obj, nn.Module)
    owner = getattr(obj, "__self__", None)
    return (inspect.ismethod(obj) and isinstance(owner, type) and issubclass(owner, nn.Module)
            and getattr(obj.__func__, "__module__", "").split(".")[0] == "speechlm")


def check_module_config(cfg: Any, source: str) -> None:
    """Refuse (ConfigTargetError) a config tree with a `_target_` that is not a module
    factory (`is_module_factory`). `cfg` must already be `resolved`; `source` names the
    file or config for the message."""
    for path, node in iter_target_nodes(cfg):
        where = f"{source}: {path or '(root)'}"
        obj = locate(node[TARGET_KEY], where)
        if not is_module_factory(obj):
            raise ConfigTargetError(
                f"{where}: _target_ {node[TARGET_KEY]!r} is not an nn.Module class; a model config may only "
                "build modules (a config from a file could otherwise call any function)")


def _package(module: str) -> str:
    return module.split(".")[0]


def check_search_config(node: Mapping[str, Any] | None, model: Any, source: str) -> dict[str, Any]:
    """The search node `node` (out of a checkpoint) resolved, after checking that its
    `_target_`, if any, is a class of `speechlm.search` or of the package the model's class
    comes from, and that no argument is itself a `_target_` node."""
    node = dict(resolved(node) or {})
    for path, _ in iter_target_nodes(node):
        if path:
            raise ConfigTargetError(f"{source}: {path}: a search takes plain values, not a `_target_` node")
    target = node.get(TARGET_KEY)
    if target is None:
        return node
    cls = locate(target, source)
    allowed = ["speechlm.search"]
    model_package = _package(type(model).__module__)
    if model_package != "speechlm":
        allowed.append(model_package)
    module = getattr(cls, "__module__", "") or ""
    if not (isinstance(cls, type) and any(module == p or module.startswith(p + ".") for p in allowed)):
        raise ConfigTargetError(f"{source}: _target_ {target!r} is not a search class (of {' or '.join(allowed)})")
    return node
