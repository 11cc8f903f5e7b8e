"""Activation by ESPnet's config names ("swish", "relu", ...), so ESPnet encoder configs
carry over unchanged. `swish` is x * sigmoid(x), i.e. `nn.SiLU`."""
from __future__ import annotations

from torch import nn


def activation(name: str) -> nn.Module:
    if name == "swish":
        return nn.SiLU()
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    if name == "tanh":
        return nn.Tanh()
    if name == "hardtanh":
        return nn.Hardtanh()
    if name == "selu":
        return nn.SELU()
    if name == "identity":
        return nn.Identity()
    raise ValueError(f"unknown activation '{name}' (swish, relu, gelu, tanh, hardtanh, selu, identity)")
