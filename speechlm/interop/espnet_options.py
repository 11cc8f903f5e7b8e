"""Every option of an ESPnet ASR experiment's config.yaml (espnet2's `ASRTask`, ESPnet
202511), and what the converter does with it. espnet2 writes a config.yaml with every
task-level argument and, for `ctc_conf`, every CTC argument at its default, so a config
lists many options its author never set: each is decided here, explicitly.

    mapped         carried into our module, with the same meaning
    no effect      changes how ESPnet computes (kernels, memory), never what
    training only  acts only in ESPnet's training (augmentation, loss variants, init); the
                   converted model decodes identically, and training it further here uses
                   speechlm's own recipe for these
    default only   implemented only at ESPnet's default value; any other value is refused,
                   with the reason
    refused        not implemented (a whole component: `frontend: s3prl`, ...)

An option missing from these tables (a newer ESPnet's) is accepted when its value equals
ESPnet's default for that class, read from the installed ESPnet's signature; without ESPnet
installed, or at another value, it is refused. `python -m speechlm.bin.convert_espnet
--list-options` prints the tables.
"""
from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

ESPNET_VERSION = "202511"
MAPPED, NO_EFFECT, TRAINING_ONLY, DEFAULT_ONLY, REFUSED = (
    "mapped", "no effect", "training only", "default only", "refused")
REQUIRED = object()  # an ESPnet parameter without a default (never in a *_conf)
AT_DEFAULT = "at ESPnet's default"  # how left-out options that change nothing are marked


@dataclass(frozen=True)
class Option:
    kind: str
    default: Any = REQUIRED  # ESPnet's default
    note: str = ""
    values: tuple | None = None  # for `mapped`: the values implemented here, when not all are


def same(value: Any, default: Any) -> bool:
    """ESPnet's default, as YAML gives it back: lists for tuples; a dict default (a nested
    conf) is matched by the keys the config sets."""
    if isinstance(default, dict) and isinstance(value, dict):
        return all(k in default and same(v, default[k]) for k, v in value.items())
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return len(value) == len(default) and all(same(a, b) for a, b in zip(value, default))
    return type(value) is type(default) and value == default or (
        isinstance(value, (int, float)) and isinstance(default, (int, float))
        and not isinstance(value, bool) and not isinstance(default, bool) and value == default)


def m(default=REQUIRED, note="", values=None):
    return Option(MAPPED, default, note, values)


def no_effect(default, note):
    return Option(NO_EFFECT, default, note)


def training(default, note):
    return Option(TRAINING_ONLY, default, note)


def only(default, note):
    return Option(DEFAULT_ONLY, default, note)


_INPUT_LAYERS = ("conv2d", "conv2d2", "conv2d6", "conv2d8", "linear")
_ACTIVATIONS = ("swish", "relu", "gelu", "tanh", "hardtanh", "selu", "identity")
_FLASH = no_effect(True, "an attention kernel (flash_attn, CUDA only); same math")
_CKPT_LAYERS = no_effect([], "activation checkpointing in training; same outputs")
_PADDING_IDX = no_effect(-1, "used only by input_layer: embed (token inputs)")
_QK_NORM = only(False, "qk_norm: true (normalised queries and keys) is not implemented")
_CONCAT_AFTER = only(False, "concat_after: true (concatenation instead of residual addition) is not implemented")
_FFN_TYPE = only("linear", "conv1d position-wise layers are not implemented")
_INTER_LAYERS = m([], "the model's interctc_layer_idx (layers whose outputs it reads)")
_INTER_COND = m(False, "self-conditioned CTC: the model's conditioning_layer (a whole model is needed)")
_DROPOUTS = {name: m(rate) for name, rate in (("dropout_rate", 0.1), ("positional_dropout_rate", 0.1),
                                              ("attention_dropout_rate", 0.0))}

# ESPnet class (module path) and its options, per (section, choice).
CLASSES: dict[tuple[str, str], tuple[str, dict[str, Option]]] = {
    ("frontend", "default"): ("espnet2.asr.frontend.default.DefaultFrontend", {
        "fs": m(16000, "sample_rate; a number or a size string such as 16k"),
        "n_fft": m(512), "win_length": m(None), "hop_length": m(128), "window": m("hann"),
        "center": m(True), "normalized": m(False), "n_mels": m(80), "fmin": m(None), "fmax": m(None),
        "htk": m(False),
        "onesided": only(True, "onesided: false gives n_fft bins, which ESPnet's own LogMel cannot take"),
        "frontend_conf": only(
            {"use_wpe": False, "wtype": "blstmp", "wlayers": 3, "wunits": 300, "wprojs": 320,
             "wdropout_rate": 0.0, "taps": 5, "delay": 3, "use_dnn_mask_for_wpe": True, "use_beamformer": False,
             "btype": "blstmp", "blayers": 3, "bunits": 300, "bprojs": 320, "bnmask": 2, "badim": 320,
             "ref_channel": -1, "bdropout_rate": 0.0},
            "multi-channel WPE dereverberation / neural beamforming is not implemented"),
        "apply_stft": only(True, "apply_stft: false reads precomputed STFTs, not audio"),
    }),
    ("specaug", "specaug"): ("espnet2.asr.specaug.specaug.SpecAug", {
        key: training(default, "SpecAugment acts only in training; give speechlm's specaug= to fine-tune")
        for key, default in (("apply_time_warp", True), ("time_warp_window", 5), ("time_warp_mode", "bicubic"),
                             ("apply_freq_mask", True), ("freq_mask_width_range", [0, 20]), ("num_freq_mask", 2),
                             ("apply_time_mask", True), ("time_mask_width_range", None),
                             ("time_mask_width_ratio_range", None), ("num_time_mask", 2),
                             ("replace_with_zero", True))
    }),
    ("normalize", "global_mvn"): ("espnet2.layers.global_mvn.GlobalMVN", {
        "stats_file": no_effect(REQUIRED, "the statistics are buffers in the model file; the stats file is not read"),
        "norm_means": m(True), "norm_vars": m(True),
        "eps": no_effect(1e-20, "variance floor applied when the stats file was read; the model file holds the result"),
    }),
    ("normalize", "utterance_mvn"): ("espnet2.layers.utterance_mvn.UtteranceMVN", {
        "norm_means": m(True), "norm_vars": m(False), "eps": m(1e-20),
    }),
    ("encoder", "conformer"): ("espnet2.asr.encoder.conformer_encoder.ConformerEncoder", {
        "output_size": m(256), "attention_heads": m(4), "linear_units": m(2048), "num_blocks": m(6), **_DROPOUTS,
        "input_layer": m("conv2d", values=_INPUT_LAYERS), "normalize_before": m(True),
        "concat_after": _CONCAT_AFTER, "positionwise_layer_type": _FFN_TYPE,
        "positionwise_conv_kernel_size": no_effect(3, "used only by conv1d position-wise layers"),
        "macaron_style": m(False),
        "rel_pos_type": m("legacy", values=("legacy", "latest")),
        "pos_enc_layer_type": m("rel_pos", values=("abs_pos", "rel_pos", "legacy_rel_pos")),
        "selfattention_layer_type": m("rel_selfattn", values=("selfattn", "rel_selfattn", "legacy_rel_selfattn")),
        "activation_type": m("swish", values=_ACTIVATIONS), "use_cnn_module": m(True), "zero_triu": m(False),
        "cnn_module_kernel": m(31), "padding_idx": _PADDING_IDX, "interctc_layer_idx": _INTER_LAYERS,
        "interctc_use_conditioning": _INTER_COND,
        "ctc_trim": only(False, "ctc_trim (CTC-based frame trimming) is not implemented"),
        "stochastic_depth_rate": m(0.0), "layer_drop_rate": m(0.0), "max_pos_emb_len": m(5000),
        "qk_norm": _QK_NORM, "use_flash_attn": _FLASH,
    }),
    ("encoder", "e_branchformer"): ("espnet2.asr.encoder.e_branchformer_encoder.EBranchformerEncoder", {
        "output_size": m(256), "attention_heads": m(4),
        "attention_layer_type": m("rel_selfattn", values=("selfattn", "rel_selfattn", "legacy_rel_selfattn")),
        "pos_enc_layer_type": m("rel_pos", values=("abs_pos", "rel_pos", "legacy_rel_pos")),
        "rel_pos_type": m("latest", values=("legacy", "latest")),
        "cgmlp_linear_units": m(2048), "cgmlp_conv_kernel": m(31), "use_linear_after_conv": m(False),
        "gate_activation": m("identity", values=_ACTIVATIONS), "num_blocks": m(12), **_DROPOUTS,
        "input_layer": m("conv2d", values=_INPUT_LAYERS), "zero_triu": m(False), "padding_idx": _PADDING_IDX,
        "layer_drop_rate": m(0.0), "max_pos_emb_len": m(5000), "use_ffn": m(False), "macaron_ffn": m(False),
        "ffn_activation_type": m("swish", values=_ACTIVATIONS), "linear_units": m(2048),
        "positionwise_layer_type": _FFN_TYPE, "merge_conv_kernel": m(3), "interctc_layer_idx": Option(MAPPED, None, _INTER_LAYERS.note),
        "interctc_use_conditioning": _INTER_COND, "qk_norm": _QK_NORM, "use_flash_attn": _FLASH,
        "gradient_checkpoint_layers": _CKPT_LAYERS,
    }),
    ("encoder", "transformer"): ("espnet2.asr.encoder.transformer_encoder.TransformerEncoder", {
        "output_size": m(256), "attention_heads": m(4), "linear_units": m(2048), "num_blocks": m(6), **_DROPOUTS,
        "input_layer": m("conv2d", values=_INPUT_LAYERS),
        "pos_enc_class": only(REQUIRED, "a Python class, never written in a config"),
        "pos_enc_layer_type": m("abs_pos", values=("abs_pos",)),
        "normalize_before": m(True), "concat_after": _CONCAT_AFTER, "positionwise_layer_type": _FFN_TYPE,
        "positionwise_conv_kernel_size": no_effect(1, "used only by conv1d position-wise layers"),
        "padding_idx": _PADDING_IDX, "interctc_layer_idx": _INTER_LAYERS, "interctc_use_conditioning": _INTER_COND,
        "layer_drop_rate": m(0.0), "qk_norm": _QK_NORM, "use_flash_attn": _FLASH,
    }),
    ("decoder", "transformer"): ("espnet2.asr.decoder.transformer_decoder.TransformerDecoder", {
        "attention_heads": m(4), "linear_units": m(2048), "num_blocks": m(6), "dropout_rate": m(0.1),
        "positional_dropout_rate": m(0.1), "self_attention_dropout_rate": m(0.0),
        "src_attention_dropout_rate": m(0.0),
        "input_layer": only("embed", "only token-embedding decoder inputs are implemented"),
        "use_output_layer": m(True),
        "pos_enc_class": only(REQUIRED, "a Python class, never written in a config"),
        "normalize_before": m(True), "concat_after": _CONCAT_AFTER, "layer_drop_rate": m(0.0),
        "qk_norm": _QK_NORM, "use_flash_attn": _FLASH, "gradient_checkpoint_layers": _CKPT_LAYERS,
    }),
    ("ctc", "ctc"): ("espnet2.asr.ctc.CTC", {
        "dropout_rate": m(0.0, "ctc_dropout_rate"),
        "ctc_type": training("builtin", "the CTC loss implementation (builtin, builtin2, gtnctc, brctc); the "
                                        "output layer and its posteriors are the same; speechlm trains with torch's CTC"),
        "reduce": training(True, "how the CTC loss is summed"),
        "ignore_nan_grad": training(None, "how the CTC loss treats impossible alignments"),
        "zero_infinity": training(True, "how the CTC loss treats impossible alignments"),
        "brctc_risk_strategy": training("exp", "Bayes-risk CTC loss (ctc_type: brctc) only"),
        "brctc_group_strategy": training("end", "Bayes-risk CTC loss (ctc_type: brctc) only"),
        "brctc_risk_factor": training(0.0, "Bayes-risk CTC loss (ctc_type: brctc) only"),
    }),
    ("model", "espnet"): ("espnet2.asr.espnet_model.ESPnetASRModel", {
        "aux_ctc": only(None, "auxiliary CTC tasks are not implemented"),
        "ctc_weight": m(0.5), "interctc_weight": m(0.0), "ignore_id": m(-1), "lsm_weight": m(0.0),
        "length_normalized_loss": m(False),
        "report_cer": no_effect(True, "what ESPnet reports in validation"),
        "report_wer": no_effect(True, "what ESPnet reports in validation"),
        "sym_space": no_effect("<space>", "used only to report CER/WER"),
        "sym_blank": m("<blank>", "the CTC blank's id in token_list"),
        "transducer_multi_blank_durations": only([], "multi-blank transducers are not implemented"),
        "transducer_multi_blank_sigma": training(0.05, "a multi-blank transducer loss setting"),
        "sym_sos": m("<sos/eos>", "the start token's id in token_list"),
        "sym_eos": m("<sos/eos>", "the end token's id in token_list"),
        "autocast_frontend": no_effect(False, "mixed precision in the frontend; speechlm's frontend runs in float32"),
        "extract_feats_in_collect_stats": no_effect(True, "used by ESPnet's collect_stats stage"),
        "lang_token_id": only(-1, "a language token prepended to the decoder's input is not implemented"),
    }),
}

# ESPnet's component choices (`--frontend`, `--encoder`, ...): what each is here. None = the
# component is absent. Choices not listed are refused with the supported ones named.
CHOICES: dict[str, dict[Any, str]] = {
    "frontend": {"default": MAPPED},
    "specaug": {"specaug": TRAINING_ONLY, None: MAPPED},
    "normalize": {"global_mvn": MAPPED, "utterance_mvn": MAPPED, None: MAPPED},
    "model": {"espnet": MAPPED},
    "preencoder": {None: MAPPED},
    "encoder": {"conformer": MAPPED, "e_branchformer": MAPPED, "transformer": MAPPED},
    "postencoder": {None: MAPPED},
    "decoder": {"transformer": MAPPED, None: MAPPED},
    "preprocessor": {"default": TRAINING_ONLY, "multi": TRAINING_ONLY},
}
# Every choice ESPnet 202511's ASRTask offers, for the option listing and its test.
ESPNET_CHOICES = {
    "frontend": ("default", "sliding_window", "s3prl", "espnet_ssl", "fused", "whisper", "huggingface", "wav2vec_cnn"),
    "specaug": ("specaug", None),
    "normalize": ("global_mvn", "utterance_mvn", None),
    "model": ("espnet", "maskctc", "pit_espnet"),
    "preencoder": ("sinc", "linear", None),
    "encoder": ("conformer", "transformer", "transformer_multispkr", "contextual_block_transformer",
                "contextual_block_conformer", "vgg_rnn", "rnn", "wav2vec2", "hubert", "hubert_pretrain",
                "torchaudiohubert", "longformer", "branchformer", "whisper", "e_branchformer", "avhubert",
                "multiconv_conformer", "beats"),
    "postencoder": ("hugging_face_transformers", "length_adaptor", None),
    "decoder": ("transformer", "lightweight_conv", "lightweight_conv2d", "dynamic_conv", "dynamic_conv2d", "rnn",
                "transducer", "mlm", "whisper", "hugging_face_transformers", "s4", "linear_decoder", None),
    "preprocessor": ("default", "multi"),
}

# ASRTask's own arguments besides the choices and their *_conf. All other top-level keys of
# config.yaml are ESPnet's training loop (optimiser, batching, epochs, ...), ignored here.
TASK_OPTIONS: dict[str, Option] = {
    "token_list": m(None, "the vocabulary (a list, or a file one token per line)"),
    "init": training(None, "ESPnet's parameter initialisation"),
    "input_size": m(None, "null: the model reads audio (its frontend); a number: precomputed features"),
    "ctc_conf": m({}, "see ctc"),
    "joint_net_conf": no_effect(None, "used only with decoder: transducer"),
    "use_preprocessor": training(True, "ESPnet's data-loader preprocessing (tokenisation, augmentation)"),
    "use_lang_prompt": only(False, "language-id prompts for the decoder are not implemented"),
    "use_nlp_prompt": only(False, "natural-language prompts for the decoder are not implemented"),
    "token_type": m("bpe", values=("bpe", "char", "word")),
    "bpemodel": m(None, "the sentencepiece model (token_type: bpe)"),
    "non_linguistic_symbols": m(None, "symbols kept whole by the char tokenizer"),
    "cleaner": training(None, "text normalisation of training transcripts"),
    "g2p": no_effect(None, "used only with token_type: phn"),
    "speech_volume_normalize": only(None, "peak normalisation of input audio (ESPnet applies it in decoding "
                                          "too) is not implemented"),
    "rir_scp": training(None, "reverberation augmentation"),
    "rir_apply_prob": training(1.0, "reverberation augmentation"),
    "noise_scp": training(None, "noise augmentation"),
    "noise_apply_prob": training(1.0, "noise augmentation"),
    "noise_db_range": training("13_15", "noise augmentation"),
    "short_noise_thres": training(0.5, "noise augmentation"),
    "aux_ctc_tasks": only([], "auxiliary CTC tasks are not implemented"),
}


def espnet_default(class_path: str, key: str) -> Any:
    """ESPnet's default for a constructor argument, from the installed ESPnet; REQUIRED if
    ESPnet, the class or a default is missing."""
    module, _, name = class_path.rpartition(".")
    try:
        param = inspect.signature(getattr(importlib.import_module(module), name)).parameters.get(key)
    except Exception:  # noqa: BLE001 - ESPnet absent or broken: no default known
        return REQUIRED
    if param is None or param.default is inspect.Parameter.empty:
        return REQUIRED
    return param.default


def check_choice(section: str, choice: Any) -> str:
    """How `section: choice` (e.g. `encoder: conformer`) is treated; raises ValueError for a
    refused one."""
    kinds = CHOICES[section]
    if choice not in kinds:
        supported = ", ".join("null" if c is None else str(c) for c in kinds)
        raise ValueError(f"ESPnet {section}: {choice} is not supported (supported: {supported})")
    return kinds[choice]


def check_options(section: str, choice: str, conf: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Check the `<section>_conf` of `section: choice` against its table.

    Returns (mapped, left_out): the options to carry into our module, and every other key
    with why it could be left out. Raises ValueError naming the option and the reason for
    anything that would change the network and is not implemented."""
    class_path, table = CLASSES[(section, choice)]
    where = f"ESPnet {section}_conf" if section != "ctc" else "ESPnet ctc_conf"
    mapped, left_out = {}, {}
    for key, value in conf.items():
        option = table.get(key)
        if option is None:
            default = espnet_default(class_path, key)
            if default is not REQUIRED and same(value, default):
                left_out[key] = f"not an option of ESPnet {ESPNET_VERSION}, at the installed ESPnet's default"
                log.warning("%s %s: %r is unknown to this converter (ESPnet %s) but is the installed "
                            "ESPnet's default for %s, so it is accepted", where, key, value, ESPNET_VERSION, class_path)
                continue
            known = "" if default is REQUIRED else f" (the installed ESPnet's default is {default!r})"
            raise ValueError(f"{where} {key}: {value!r} is not supported: not an option of {class_path} in "
                             f"ESPnet {ESPNET_VERSION}{known}")
        if option.kind == MAPPED:
            if option.values is not None and value not in option.values:
                raise ValueError(f"{where} {key}: {value!r} is not supported (supported: "
                                 f"{', '.join(map(str, option.values))})")
            mapped[key] = value
        elif option.kind == DEFAULT_ONLY:
            if not same(value, option.default):
                raise ValueError(f"{where} {key}: {value!r} is not supported: {option.note} "
                                 f"(only ESPnet's default {option.default!r})")
            left_out[key] = f"{AT_DEFAULT} (the only value implemented here)"
        else:  # no effect, training only
            at = f"{AT_DEFAULT}; " if same(value, option.default) else ""
            left_out[key] = f"{at}{option.kind}: {option.note}"
    return mapped, left_out


def check_task_options(config: Mapping[str, Any]) -> dict[str, str]:
    """Check config.yaml's ASRTask-level options (TASK_OPTIONS); returns the left-out ones
    with why. The component choices and their *_conf are checked where they are built."""
    left_out = {}
    for key, option in TASK_OPTIONS.items():
        if key not in config or option.kind == MAPPED:
            continue
        value = config[key]
        if option.kind == DEFAULT_ONLY and not same(value, option.default):
            raise ValueError(f"ESPnet {key}: {value!r} is not supported: {option.note} "
                             f"(only ESPnet's default {option.default!r})")
        if not same(value, option.default):
            left_out[key] = f"{option.kind}: {option.note}"
    return left_out


def options_markdown() -> str:
    """The tables as Markdown: component choices, task options, each class's options."""
    def fmt(value: Any) -> str:
        return "(required)" if value is REQUIRED else "null" if value is None else repr(value)

    lines = [f"# ESPnet {ESPNET_VERSION} ASR config options in speechlm's converter", "",
             "## Components", "", "| option | choice | here |", "|---|---|---|"]
    for section, choices in ESPNET_CHOICES.items():
        for choice in choices:
            kind = CHOICES[section].get(choice, REFUSED)
            lines.append(f"| {section} | {'null' if choice is None else choice} | {kind} |")
    sections = [("task", "ASRTask", TASK_OPTIONS)] + [
        (f"{section}_conf", f"{section}: {choice} ({path.rsplit('.', 1)[-1]})", table)
        for (section, choice), (path, table) in CLASSES.items()]
    for name, title, table in sections:
        lines += ["", f"## {name}: {title}", "", "| option | ESPnet default | here | note |", "|---|---|---|---|"]
        for key, option in table.items():
            note = option.note
            if option.values is not None:
                note = (note + "; " if note else "") + "values: " + ", ".join(map(str, option.values))
            lines.append(f"| {key} | {fmt(option.default) if not isinstance(option.default, dict) else '{...}'} "
                         f"| {option.kind} | {note} |")
    return "\n".join(lines) + "\n"
