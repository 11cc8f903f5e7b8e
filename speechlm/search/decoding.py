"""The one decoding path of `speechlm.bin.decode` and `speechlm.bin.transcribe`: pick the
search (the decode config's, or the model's own `default_search`), encode, search.

The decode config's `search` node either names a search (`_target_`, from
`search=NAME` -> conf/search/NAME.yaml) or leaves `_target_` null, and then the model's
`default_search` is used, with, on top, the `search` node of the training config the
checkpoint carries (an experiment's own decoding defaults, e.g. a higher CTC weight for a
briefly trained model) and then the decode node's non-null fields (so `search.beam_size=4`
works for any model whose search has a beam).

The training config's node comes out of the checkpoint, a file: it may only name a search
class (of `speechlm.search` or the model's own package) with plain arguments
(`speechlm.targets.check_search_config`), since instantiating it calls what it names.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import hydra.utils
import torch
from omegaconf import DictConfig, OmegaConf

from speechlm.models.encode import encode_each
from speechlm.targets import check_search_config


def _fields(node: Mapping[str, Any] | DictConfig | None) -> dict[str, Any]:
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    return {k: v for k, v in (node or {}).items() if v is not None}


def search_node(model, chosen: Mapping[str, Any] | DictConfig | None,
                preferred: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Hydra node of the search for `model`: `chosen` if it names one (`_target_`),
    else the model's `default_search`, updated with the experiment's `preferred` node (the
    training config's `search`; it may name another search) and then with `chosen`'s
    non-null fields. Fields the search does not take are refused, and so is a `preferred`
    node naming anything but a search class (`check_search_config`)."""
    preferred = check_search_config(preferred, model, "the checkpoint's search config")
    chosen, preferred = _fields(chosen), _fields(preferred)
    if "_target_" in chosen:
        node = chosen
    else:
        default = model.default_search
        if "_target_" in preferred:
            default = {}
        elif default is None:
            raise ValueError(f"{type(model).__name__} has no search of its own (default_search is None): "
                             "name one with search=NAME (conf/search/)")
        node = {**default, **preferred, **chosen}
    params = inspect.signature(hydra.utils.get_class(node["_target_"])).parameters
    unknown = sorted(set(node) - {"_target_", "tokenizer"} - set(params))
    if unknown:
        raise ValueError(f"{node['_target_']} takes no {', '.join(unknown)} (it takes: {', '.join(params) or 'nothing'})")
    return node


def build_search(model, chosen: Mapping[str, Any] | DictConfig | None, preferred: Mapping[str, Any] | None = None,
                 tokenizer=None):
    """The search object; a search class with a `tokenizer` argument gets the model's
    tokenizer: one that needs the vocabulary's special tokens (e.g. Whisper's) must have it,
    one that may use it (to check that a fused LM's tokenizer is the model's) takes None."""
    node = search_node(model, chosen, preferred)
    param = inspect.signature(hydra.utils.get_class(node["_target_"])).parameters.get("tokenizer")
    if param is not None:
        if tokenizer is None and param.default is inspect.Parameter.empty:
            raise ValueError(f"{node['_target_']} needs the model's tokenizer, and the checkpoint has none")
        return hydra.utils.instantiate(node, tokenizer=tokenizer)
    return hydra.utils.instantiate(node)


@torch.no_grad()
def decode_batch(model, search, batch: dict, encode_one_by_one: bool = True) -> list[list[int]]:
    """Token ids of the best hypothesis of each utterance of a collated batch. With
    `encode_one_by_one` the encoder sees each utterance alone (`encode_each`), so a result
    never depends on the rest of the batch; the search is batched either way."""
    if encode_one_by_one:
        enc = encode_each(model.encode, batch["audio"], batch["audio_lens"])
    else:
        enc = model.encode(batch["audio"], batch["audio_lens"])
    return search(model, enc)
