"""The converter's option table (`speechlm.interop.espnet_options`) against ESPnet itself:
every constructor argument of every ESPnet class it converts is decided, with ESPnet's
default read from ESPnet's own signature; every ASRTask argument and component choice is
decided; options at ESPnet's default are accepted, options the code does not implement
are refused at any other value, naming the option and the reason."""
from __future__ import annotations

import importlib
import inspect
import logging

import pytest
import torch

from espnet2.tasks.asr import ASRTask
from espnet2.utils.get_default_kwargs import get_default_kwargs

from speechlm.bin.convert_espnet import main as convert_main
from speechlm.decoders.transformer import TransformerDecoder
from speechlm.interop import espnet_options
from speechlm.interop.espnet import our_encoder_class
from speechlm.interop.espnet_asr import ctc_attention_from_espnet_config, espnet_asr_model_config
from speechlm.interop.espnet_options import (
    CLASSES,
    CHOICES,
    DEFAULT_ONLY,
    ESPNET_CHOICES,
    MAPPED,
    REFUSED,
    REQUIRED,
    TASK_OPTIONS,
    check_options,
    same,
)

TOKENS = ["<blank>", "<unk>", "a", "b", "c", "<sos/eos>"]


def espnet_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("key", list(CLASSES), ids=lambda k: f"{k[0]}-{k[1]}")
def test_every_espnet_argument_is_decided_with_espnets_default(key):
    path, table = CLASSES[key]
    params = inspect.signature(espnet_class(path)).parameters
    constructed_by_espnet = {"input_size", "vocab_size", "encoder_output_size", "odim", "token_list", "frontend",
                             "specaug", "normalize", "preencoder", "encoder", "postencoder", "decoder", "ctc",
                             "joint_network"}
    expected = {n for n, p in params.items() if n not in constructed_by_espnet}
    assert set(table) == expected, f"undecided: {sorted(expected - set(table))}, not ESPnet's: {sorted(set(table) - expected)}"
    defaults = get_default_kwargs(espnet_class(path))  # what espnet2 writes into a config
    for name, option in table.items():
        if name in defaults and defaults[name] is not inspect.Parameter.empty:
            assert same(defaults[name], option.default) and same(option.default, defaults[name]), name
        else:  # no default, or one that is not YAML (a class): never in a config
            assert option.default is REQUIRED, name


@pytest.mark.parametrize("key", [k for k in CLASSES if k[0] in ("encoder", "decoder")], ids=lambda k: k[1])
def test_mapped_options_are_our_constructors_arguments(key):
    ours = TransformerDecoder if key[0] == "decoder" else our_encoder_class(key[1])
    params = inspect.signature(ours).parameters
    mapped = {name for name, option in CLASSES[key][1].items() if option.kind == MAPPED}
    mapped -= {"interctc_use_conditioning", "interctc_layer_idx"}  # the model's, here
    assert mapped <= set(params), sorted(mapped - set(params))


def test_every_task_argument_and_choice_is_decided():
    full = ASRTask.get_parser()
    bare = type("Bare", (ASRTask,), {"class_choices_list": [], "add_task_arguments": classmethod(lambda c, p: None)})
    task_args = {a.dest for a in full._actions} - {a.dest for a in bare.get_parser()._actions}
    choices = {c.name: c for c in ASRTask.class_choices_list}
    assert task_args - {f"{n}_conf" for n in choices} - set(choices) == set(TASK_OPTIONS)
    for name, option in TASK_OPTIONS.items():
        assert same(full.get_default(name), option.default) or name == "ctc_conf", name
    assert set(ESPNET_CHOICES) == set(choices) == set(CHOICES)
    for name, c in choices.items():
        assert set(ESPNET_CHOICES[name]) == set(c.choices()), name
        assert set(CHOICES[name]) <= set(c.choices()), name


def config(**changes) -> dict:
    """A config.yaml as espnet2 writes it for a small Conformer, changes applied."""
    base = dict(
        token_list=TOKENS, token_type="char", input_size=None, frontend="default", frontend_conf={"fs": "16k"},
        normalize="utterance_mvn", normalize_conf={}, specaug=None, specaug_conf={}, model="espnet",
        model_conf=dict(ctc_weight=0.3), preencoder=None, preencoder_conf={}, encoder="conformer",
        encoder_conf=dict(output_size=32, attention_heads=2, linear_units=32, num_blocks=1),
        postencoder=None, postencoder_conf={}, decoder="transformer",
        decoder_conf=dict(attention_heads=2, linear_units=32, num_blocks=1), preprocessor="default",
        preprocessor_conf={}, ctc_conf=get_default_kwargs(espnet_class(CLASSES[("ctc", "ctc")][0])),
        **{k: o.default for k, o in TASK_OPTIONS.items() if k not in ("token_list", "token_type", "input_size",
                                                                       "ctc_conf")})
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def test_every_option_at_espnets_default_converts():
    """Each section filled with every argument at ESPnet's default, as a config written with
    `--print_config` has them: accepted, and the model builds."""
    sections = {}
    for (section, choice), (path, _) in CLASSES.items():
        sections.setdefault(section, {})[choice] = get_default_kwargs(espnet_class(path))
    for encoder in ("conformer", "e_branchformer", "transformer"):
        conf = dict(sections["encoder"][encoder], output_size=32, attention_heads=2, linear_units=32, num_blocks=1)
        left_out = {}
        model = ctc_attention_from_espnet_config(config(
            encoder=encoder, encoder_conf=conf, frontend_conf=sections["frontend"]["default"],
            decoder_conf=dict(sections["decoder"]["transformer"], attention_heads=2, linear_units=32, num_blocks=1),
            model_conf=dict(sections["model"]["espnet"], ctc_weight=0.3),
            specaug="specaug", specaug_conf=sections["specaug"]["specaug"]), left_out=left_out)
        assert model.encoder.output_size() == 32
        assert "encoder_conf.use_flash_attn" in left_out and "ctc_conf.brctc_risk_factor" in left_out


def non_default(option) -> object:
    d = option.default
    if isinstance(d, bool):
        return not d
    if isinstance(d, (int, float)):
        return d + 1
    if isinstance(d, str):
        return d + "_other"
    if isinstance(d, dict):
        key = "use_wpe" if "use_wpe" in d else next(iter(d))
        return {key: not d[key] if isinstance(d[key], bool) else 1}
    if isinstance(d, list):
        return ["x"]
    return "something"


@pytest.mark.parametrize("key", list(CLASSES), ids=lambda k: f"{k[0]}-{k[1]}")
def test_default_only_options_are_refused_at_other_values(key):
    _, table = CLASSES[key]
    for name, option in table.items():
        if option.kind == DEFAULT_ONLY:
            if option.default is not REQUIRED:
                check_options(key[0], key[1], {name: option.default})  # accepted
            with pytest.raises(ValueError, match=f"{name}: .* is not supported"):
                check_options(key[0], key[1], {name: non_default(option)})
        elif option.kind == MAPPED and option.values is not None:
            with pytest.raises(ValueError, match=f"{name}: 'not_a_value' is not supported"):
                check_options(key[0], key[1], {name: "not_a_value"})


def test_task_options_and_choices_are_refused_with_reasons():
    for change, message in [
        (dict(use_lang_prompt=True), "use_lang_prompt: True is not supported: language-id prompts"),
        (dict(speech_volume_normalize=1.0), "speech_volume_normalize: 1.0 is not supported"),
        (dict(aux_ctc_tasks=["lid"]), "aux_ctc_tasks"),
        (dict(frontend="s3prl"), "frontend: s3prl is not supported"),
        (dict(preencoder="linear"), "preencoder: linear is not supported"),
        (dict(postencoder="length_adaptor"), "postencoder: length_adaptor is not supported"),
        (dict(encoder="branchformer"), "encoder: branchformer is not supported"),
        (dict(decoder="rnn"), "decoder: rnn is not supported"),
        (dict(model="maskctc"), "model: maskctc is not supported"),
        (dict(model_conf={"lang_token_id": 5}), "lang_token_id: 5 is not supported"),
        (dict(model_conf={"sym_sos": "a"}), r"<sos> \(id 2\) and <eos> \(id 5\) differ"),
        (dict(decoder=None), "needs a decoder, and decoder is null"),
    ]:
        with pytest.raises(ValueError, match=message):
            espnet_asr_model_config(config(**change))
    # training-only and no-effect options at any value are accepted, and reported
    left_out = {}
    espnet_asr_model_config(config(noise_scp="data/noise.scp", cleaner="tacotron", init="xavier_uniform",
                                   ctc_conf={"ctc_type": "brctc", "brctc_risk_factor": 0.2}), left_out)
    for key in ("config.noise_scp", "config.cleaner", "config.init", "ctc_conf.ctc_type", "ctc_conf.brctc_risk_factor"):
        assert not left_out[key].startswith(espnet_options.AT_DEFAULT), key


def test_an_option_unknown_here_is_judged_by_the_installed_espnets_default(monkeypatch, caplog):
    """A newer ESPnet's option: accepted at the installed ESPnet's default (with a warning),
    refused at another value; refused when no ESPnet tells its default."""
    path, table = CLASSES[("encoder", "conformer")]
    monkeypatch.setitem(CLASSES, ("encoder", "conformer"), (path, {k: v for k, v in table.items() if k != "qk_norm"}))
    with caplog.at_level(logging.WARNING):
        _, left_out = check_options("encoder", "conformer", {"qk_norm": False})
    assert "qk_norm" in left_out and "unknown to this converter" in caplog.text
    with pytest.raises(ValueError, match="qk_norm: True is not supported: not an option .* default is False"):
        check_options("encoder", "conformer", {"qk_norm": True})
    with pytest.raises(ValueError, match="brand_new_option"):
        check_options("encoder", "conformer", {"brand_new_option": 1})
    monkeypatch.setattr(espnet_options, "espnet_default", lambda path, key: REQUIRED)  # no ESPnet installed
    with pytest.raises(ValueError, match="qk_norm: False is not supported"):
        check_options("encoder", "conformer", {"qk_norm": False})


def test_list_options_prints_every_option(capsys):
    assert convert_main(["--list-options"]) == 0
    out = capsys.readouterr().out
    for (section, choice), (_, table) in CLASSES.items():
        assert f"## {section}_conf: {section}: {choice}" in out
        for name, option in table.items():
            assert f"| {name} |" in out and option.kind in out
    for section, choices in ESPNET_CHOICES.items():
        for choice in choices:
            kind = CHOICES[section].get(choice, REFUSED)
            assert f"| {section} | {'null' if choice is None else choice} | {kind} |" in out


def test_special_symbols_follow_espnets_rule():
    """sym_blank / sym_sos / sym_eos: their id in token_list, or (absent there) ESPnet's
    fallback: blank 0, <sos/eos> the last id."""
    tree = espnet_asr_model_config(config(token_list=["<b>", "<unk>", "a", "<s/e>"],
                                          model_conf={"sym_blank": "<b>", "sym_sos": "<x>", "sym_eos": "<x>"}))
    assert (tree["blank_id"], tree["sos_eos_id"]) == (0, 3)
    tree = espnet_asr_model_config(config(token_list=["<unk>", "<blank>", "<sos/eos>", "a"]))
    assert (tree["blank_id"], tree["sos_eos_id"]) == (1, 2)


def test_utterance_mvn_config_builds_utterance_mvn():
    model = ctc_attention_from_espnet_config(config(normalize_conf={"norm_vars": True}))
    assert type(model.normalize).__name__ == "UtteranceMVN" and model.normalize.norm_vars
    assert ctc_attention_from_espnet_config(config(normalize=None)).normalize is None
    tree = espnet_asr_model_config({k: v for k, v in config().items() if k != "normalize"})
    assert tree["normalize"]["_target_"] == "speechlm.features.UtteranceMVN"  # ASRTask's default
    assert torch.is_tensor(next(model.parameters()))
