"""OpenAI Whisper checkpoints (`tiny.pt` ... `large-v3.pt`: {"dims", "model_state_dict"}) and
Hugging Face `WhisperForConditionalGeneration` weights <-> `speechlm.models.multitask.MultitaskModel`
with `WhisperEncoder` + `MultitaskDecoder` (the same computation, speechlm's names).

    model, tokenizer, config = load_openai_checkpoint("tiny.pt")   # or load_pretrained("tiny.pt")
    save_openai_checkpoint(model, "finetuned.pt")                  # whisper.load_model reads it
    model.init_from=tiny.pt                                        # training starts from it

Key mapping (OpenAI -> ours; every block N, weight and bias alike):

    encoder.conv1 / conv2                     encoder.embed.conv1 / conv2
    encoder.positional_embedding              encoder.positional_embedding (buffer)
    encoder.blocks.N.attn.query/key/value/out encoder.encoders.N.self_attn.linear_q/k/v/out
    encoder.blocks.N.attn_ln / mlp_ln         encoder.encoders.N.norm1 / norm2
    encoder.blocks.N.mlp.0 / mlp.2            encoder.encoders.N.feed_forward.w_1 / w_2
    encoder.ln_post                           encoder.after_norm
    decoder.token_embedding                   decoder.embed
    decoder.positional_embedding              decoder.positional_embedding
    decoder.blocks.N.attn.* / attn_ln         decoder.decoders.N.self_attn.* / norm1
    decoder.blocks.N.cross_attn.* / _ln       decoder.decoders.N.src_attn.* / norm2
    decoder.blocks.N.mlp.0 / mlp.2 / mlp_ln   decoder.decoders.N.feed_forward.w_1 / w_2 / norm3
    decoder.ln                                decoder.after_norm

Hugging Face names (`model.` prefix, `proj_out` tied to the token embedding): conv1/conv2,
embed_positions, layers.N.{self_attn,encoder_attn}.{q,k,v,out}_proj, self_attn_layer_norm,
encoder_attn_layer_norm, fc1, fc2, final_layer_norm, layer_norm, embed_tokens.

The frontend is `speechlm.features.whisper_mel.WhisperLogMel` (30-s windows, n_mels from the
dims) and the tokenizer `speechlm.tokenizers.whisper.WhisperTokenizer`, multilingual iff
n_vocab >= 51865, with n_vocab - 51765 - multilingual languages (as `Whisper.num_languages`).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from speechlm.atomic import atomic_path
from speechlm.interop.key_templates import rename_keys
from speechlm.models.build import build_model
from speechlm.safe_load import load_weights

log = logging.getLogger(__name__)

DIMS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer",
        "n_vocab", "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer")
MULTILINGUAL_VOCAB = 51865  # the smallest multilingual vocabulary (99 languages)

# (foreign module, ours) inside one block; {p}: weight | bias
_OPENAI_SELF = [("attn.query", "self_attn.linear_q"), ("attn.key", "self_attn.linear_k"),
                ("attn.value", "self_attn.linear_v"), ("attn.out", "self_attn.linear_out"),
                ("attn_ln", "norm1"), ("mlp.0", "feed_forward.w_1"), ("mlp.2", "feed_forward.w_2")]
_OPENAI_CROSS = [("cross_attn.query", "src_attn.linear_q"), ("cross_attn.key", "src_attn.linear_k"),
                 ("cross_attn.value", "src_attn.linear_v"), ("cross_attn.out", "src_attn.linear_out"),
                 ("cross_attn_ln", "norm2")]
OPENAI_KEYS = [
    ("encoder.conv1.{p}", "encoder.embed.conv1.{p}"),
    ("encoder.conv2.{p}", "encoder.embed.conv2.{p}"),
    ("encoder.positional_embedding", "encoder.positional_embedding"),
    *[(f"encoder.blocks.{{i}}.{a}.{{p}}", f"encoder.encoders.{{i}}.{b}.{{p}}")
      for a, b in [*_OPENAI_SELF, ("mlp_ln", "norm2")]],
    ("encoder.ln_post.{p}", "encoder.after_norm.{p}"),
    ("decoder.token_embedding.weight", "decoder.embed.weight"),
    ("decoder.positional_embedding", "decoder.positional_embedding"),
    *[(f"decoder.blocks.{{i}}.{a}.{{p}}", f"decoder.decoders.{{i}}.{b}.{{p}}")
      for a, b in [*_OPENAI_SELF, *_OPENAI_CROSS, ("mlp_ln", "norm3")]],
    ("decoder.ln.{p}", "decoder.after_norm.{p}"),
]

_HF_ATTN = [("q_proj", "linear_q"), ("k_proj", "linear_k"), ("v_proj", "linear_v"), ("out_proj", "linear_out")]
_HF_SELF = [*[(f"self_attn.{a}", f"self_attn.{b}") for a, b in _HF_ATTN], ("self_attn_layer_norm", "norm1"),
            ("fc1", "feed_forward.w_1"), ("fc2", "feed_forward.w_2")]
HF_KEYS = [
    ("encoder.conv1.{p}", "encoder.embed.conv1.{p}"),
    ("encoder.conv2.{p}", "encoder.embed.conv2.{p}"),
    ("encoder.embed_positions.weight", "encoder.positional_embedding"),
    *[(f"encoder.layers.{{i}}.{a}.{{p}}", f"encoder.encoders.{{i}}.{b}.{{p}}")
      for a, b in [*_HF_SELF, ("final_layer_norm", "norm2")]],
    ("encoder.layer_norm.{p}", "encoder.after_norm.{p}"),
    ("decoder.embed_tokens.weight", "decoder.embed.weight"),
    ("decoder.embed_positions.weight", "decoder.positional_embedding"),
    *[(f"decoder.layers.{{i}}.{a}.{{p}}", f"decoder.decoders.{{i}}.{b}.{{p}}")
      for a, b in [*_HF_SELF, *[(f"encoder_attn.{a}", f"src_attn.{b}") for a, b in _HF_ATTN],
                   ("encoder_attn_layer_norm", "norm2"), ("final_layer_norm", "norm3")]],
    ("decoder.layer_norm.{p}", "decoder.after_norm.{p}"),
]


def openai_state_dict_to_ours(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """OpenAI `model_state_dict` -> `MultitaskModel` state_dict (module docstring)."""
    return rename_keys(state_dict, OPENAI_KEYS, False, "OpenAI Whisper state_dict (not a Whisper encoder/decoder tensor)")


def ours_to_openai_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """`MultitaskModel` (WhisperEncoder + MultitaskDecoder) state_dict -> OpenAI's."""
    return rename_keys(state_dict, OPENAI_KEYS, True, "speechlm Whisper state_dict")


def hf_state_dict_to_ours(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Hugging Face `WhisperForConditionalGeneration` (or `WhisperModel`) state_dict -> ours.
    `proj_out.weight` must be the token embedding (tied), as in every released Whisper."""
    sd = {k.removeprefix("model."): v for k, v in state_dict.items()}
    proj = sd.pop("proj_out.weight", None)
    embed = sd.get("decoder.embed_tokens.weight")
    if proj is not None and embed is not None and not torch.equal(proj, embed):
        raise ValueError("proj_out.weight differs from model.decoder.embed_tokens.weight: an untied output "
                         "layer has no place in MultitaskDecoder (its logits use the token embedding)")
    return rename_keys(sd, HF_KEYS, False, "Hugging Face Whisper state_dict")


def _source_name(key: str, table: list[tuple[str, str]]) -> str:
    """Our key -> its name in the source the table maps from (the key itself if none)."""
    try:
        return next(iter(rename_keys({key: None}, table, True, "")))
    except ValueError:
        return key


def load_checked(model: nn.Module, state: Mapping[str, Tensor], table: list[tuple[str, str]] | None = None,
                 source: str = "checkpoint") -> None:
    """`model.load_state_dict(state)` strictly, with every missing or misshaped tensor named
    in one ValueError, under its name in the source (`table`: source -> our names)."""
    def name(k: str) -> str:
        return f"'{k}'" if table is None else f"'{_source_name(k, table)}' (ours: '{k}')"

    expected = model.state_dict()
    faults = [f"missing {name(k)}" for k in expected if k not in state]
    faults += [f"{name(k)} has shape {tuple(v.shape)}, the model needs {tuple(expected[k].shape)}"
               for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    faults += [f"unexpected {name(k)}" for k in state if k not in expected]
    if faults:
        raise ValueError(f"{source} does not fit the model: " + "; ".join(faults[:8])
                         + (f"; ... ({len(faults)} in all)" if len(faults) > 8 else ""))
    model.load_state_dict(state)


def is_openai_checkpoint(ckpt: Any) -> bool:
    return isinstance(ckpt, Mapping) and "dims" in ckpt and "model_state_dict" in ckpt


def whisper_frontend_config(n_mels: int) -> dict[str, Any]:
    return {"_target_": "speechlm.features.whisper_mel.WhisperLogMel", "n_mels": int(n_mels), "sample_rate": 16000,
            "n_fft": 400, "hop_length": 160, "chunk_seconds": 30.0}


def openai_dims_to_config(dims: Mapping[str, int]) -> dict[str, Any]:
    """OpenAI `ModelDimensions` (as a dict) -> a resolved speechlm training-style config:
    {model: MultitaskModel node, frontend, vocab_size, search: null, whisper_dims}."""
    missing = [k for k in DIMS if k not in dims]
    if missing:
        raise ValueError(f"Whisper dims lack {missing}")
    d = {k: int(dims[k]) for k in DIMS}
    if d["n_audio_state"] != d["n_text_state"]:
        raise ValueError(f"n_audio_state {d['n_audio_state']} != n_text_state {d['n_text_state']}: "
                         "MultitaskDecoder attends to the encoder output at its own width")
    frontend = whisper_frontend_config(d["n_mels"])
    model = {
        "_target_": "speechlm.models.multitask.MultitaskModel",
        "vocab_size": d["n_vocab"],
        "frontend": frontend,
        "normalize": None,
        "specaug": None,
        "encoder": {"_target_": "speechlm.encoders.whisper.WhisperEncoder", "input_size": d["n_mels"],
                    "d_model": d["n_audio_state"], "attention_heads": d["n_audio_head"],
                    "num_blocks": d["n_audio_layer"], "max_positions": d["n_audio_ctx"], "dropout_rate": 0.0},
        "decoder": {"_target_": "speechlm.decoders.multitask.MultitaskDecoder", "vocab_size": d["n_vocab"],
                    "d_model": d["n_text_state"], "attention_heads": d["n_text_head"],
                    "num_blocks": d["n_text_layer"], "max_positions": d["n_text_ctx"], "dropout_rate": 0.0},
        "ctc_weight": 0.0,
        "lsm_weight": 0.0,
        "ignore_id": -1,
    }
    return {"frontend": dict(frontend), "model": model, "vocab_size": d["n_vocab"], "search": None,
            "whisper_dims": d}


def ours_to_openai_dims(model: nn.Module) -> dict[str, int]:
    """The `dims` of a MultitaskModel with a WhisperEncoder and a MultitaskDecoder."""
    from speechlm.decoders.multitask import MultitaskDecoder
    from speechlm.encoders.whisper import WhisperEncoder

    enc, dec = getattr(model, "encoder", None), getattr(model, "decoder", None)
    if not isinstance(enc, WhisperEncoder) or not isinstance(dec, MultitaskDecoder):
        raise TypeError(f"the OpenAI format holds a WhisperEncoder + MultitaskDecoder, not "
                         f"{type(enc).__name__} + {type(dec).__name__}")
    return {"n_mels": enc.input_size, "n_audio_ctx": enc.max_positions, "n_audio_state": enc.d_model,
            "n_audio_head": enc.attention_heads, "n_audio_layer": len(enc.encoders),
            "n_vocab": dec.vocab_size, "n_text_ctx": dec.max_positions, "n_text_state": dec.d_model,
            "n_text_head": dec.attention_heads, "n_text_layer": len(dec.decoders)}


def whisper_tokenizer(n_vocab: int):
    """The tokenizer of a Whisper vocabulary size (as `Whisper.is_multilingual` /
    `num_languages`)."""
    from speechlm.tokenizers.whisper import WhisperTokenizer

    multilingual = n_vocab >= MULTILINGUAL_VOCAB
    tokenizer = WhisperTokenizer(encoding="multilingual" if multilingual else "gpt2",
                                 num_languages=n_vocab - 51765 - int(multilingual))
    if tokenizer.vocab_size != n_vocab:
        raise ValueError(f"n_vocab {n_vocab}: the Whisper tokenizer for it has {tokenizer.vocab_size} tokens")
    return tokenizer


def model_from_openai_checkpoint(ckpt: Mapping[str, Any], source: str = "OpenAI checkpoint",
                                 device: str | torch.device = "cpu"):
    """An already loaded {"dims", "model_state_dict"} -> (model in eval mode, tokenizer, config)."""
    if not is_openai_checkpoint(ckpt):
        raise ValueError(f"{source}: not an OpenAI Whisper checkpoint (no 'dims' + 'model_state_dict')")
    config = openai_dims_to_config(ckpt["dims"])
    config["converted_from"] = {"openai_checkpoint": source}
    model = build_model(config["model"], initialize=False)
    load_checked(model, openai_state_dict_to_ours(ckpt["model_state_dict"]), OPENAI_KEYS, source)
    tokenizer = whisper_tokenizer(config["vocab_size"])
    config["special_ids"] = dict(tokenizer.special_ids)
    return model.eval().to(device), tokenizer, config


def load_openai_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """An OpenAI Whisper checkpoint file -> (model in eval mode, tokenizer, resolved config)."""
    ckpt = load_weights(path)
    return model_from_openai_checkpoint(ckpt, str(path), device)


def save_openai_checkpoint(model: nn.Module, path: str | os.PathLike, drop_ctc: bool = False) -> None:
    """Write {"dims", "model_state_dict"} (float32) atomically: `whisper.load_model(path)`
    gives the same logits. A CTC head has no place there: refused unless `drop_ctc`."""
    if getattr(model, "normalize", None) is not None:
        raise ValueError("the model normalises its features (normalize); the OpenAI format cannot hold that")
    if getattr(model, "ctc", None) is not None and not drop_ctc:
        raise ValueError("the model has a CTC head, which the OpenAI format cannot hold (drop_ctc=True leaves it out)")
    dims = ours_to_openai_dims(model)
    state = {k: v for k, v in model.state_dict().items() if k.startswith(("encoder.", "decoder."))}
    state = {k: v.detach().to("cpu", torch.float32).contiguous().clone()
             for k, v in ours_to_openai_state_dict(state).items()}
    with atomic_path(path) as tmp:
        torch.save({"dims": dims, "model_state_dict": state}, tmp)


def hf_config_to_dims(config: Any) -> dict[str, int]:
    """A Hugging Face `WhisperConfig` (or its dict) -> OpenAI dims; refuses what
    MultitaskModel does not compute (another activation, scaled embeddings, FFN != 4 d)."""
    get = config.get if isinstance(config, Mapping) else lambda k, default=None: getattr(config, k, default)
    d = int(get("d_model"))
    checks = {"activation_function": ("gelu", get("activation_function", "gelu")),
              "scale_embedding": (False, bool(get("scale_embedding", False))),
              "encoder_ffn_dim": (4 * d, int(get("encoder_ffn_dim"))),
              "decoder_ffn_dim": (4 * d, int(get("decoder_ffn_dim")))}
    for key, (want, got) in checks.items():
        if want != got:
            raise ValueError(f"Hugging Face Whisper config {key}={got!r}: MultitaskModel computes {key}={want!r}")
    return {"n_mels": int(get("num_mel_bins")), "n_audio_ctx": int(get("max_source_positions")), "n_audio_state": d,
            "n_audio_head": int(get("encoder_attention_heads")), "n_audio_layer": int(get("encoder_layers")),
            "n_vocab": int(get("vocab_size")), "n_text_ctx": int(get("max_target_positions")), "n_text_state": d,
            "n_text_head": int(get("decoder_attention_heads")), "n_text_layer": int(get("decoder_layers"))}


def model_from_hf(state_dict: Mapping[str, Tensor], config: Any) -> nn.Module:
    """Hugging Face `WhisperForConditionalGeneration` weights + its config -> our model (eval)."""
    model = build_model(openai_dims_to_config(hf_config_to_dims(config))["model"], initialize=False)
    load_checked(model, hf_state_dict_to_ours(state_dict), HF_KEYS, "Hugging Face Whisper state_dict")
    return model.eval()
