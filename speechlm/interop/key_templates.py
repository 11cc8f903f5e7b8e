"""Renaming a foreign checkpoint's state_dict keys by a table of templates, shared by the
converters in `speechlm.interop`: `{i}` stands for a layer number, `{p}` for weight|bias, e.g.
("encoder.blocks.{i}.attn.query.{p}", "encoder.encoders.{i}.self_attn.q.{p}")."""
from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor


def template_pattern(template: str) -> re.Pattern:
    return re.compile(re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)"))


def rename_keys(state: Mapping[str, Tensor], table: list[tuple[str, str]], reverse: bool,
                what: str) -> dict[str, Tensor]:
    """Every key renamed by the first (theirs, ours) pair whose one side (ours when
    `reverse`) matches it whole; a key no template matches is a ValueError naming it and
    `what` was being converted."""
    pairs = [(template_pattern(b if reverse else a), a if reverse else b) for a, b in table]
    out = {}
    for key, value in state.items():
        for pattern, target in pairs:
            m = pattern.fullmatch(key)
            if m:
                out[target.format(**m.groupdict())] = value
                break
        else:
            raise ValueError(f"{what}: unexpected key '{key}'")
    return out
