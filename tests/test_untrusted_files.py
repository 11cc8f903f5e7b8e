"""Every kind of file speechlm reads that could carry code, planted with a payload and read
by the real loader: the load fails with an error that says so, and the payload never runs
(its marker file is never created).

Two kinds of payload:
- a pickle whose `__reduce__` runs `touch MARKER` (`Payload`), in every file read with
  pickle's format or numpy's (checkpoints, ESPnet/HF/Whisper model files, CMVN stats,
  k-means centroids, dumped features, a sentencepiece model): they are read with
  `torch.load(weights_only=True)` / `np.load(allow_pickle=False)`, which refuse it;
- data that names code (`pipe_node`: `speechlm.data.audio.read_audio` of a Kaldi pipe
  `touch MARKER |`), in the configs that loading instantiates with Hydra (a checkpoint's
  model, search and tokenizer configs, an ESPnet config.yaml, a frontend yaml): every
  `_target_` must be a module class or a search class (`speechlm.targets`); yaml files are
  read with `yaml.safe_load`, which refuses Python tags.

`test_payloads_are_live` proves that both payloads do run when loaded unsafely, so the
marker staying absent means something.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hydra.utils
import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from fixtures import make_data_dir, tiny_ctc_checkpoint


class Payload:
    """Unpickling it runs `touch MARKER`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def pipe(marker: Path) -> str:
    return f"touch {shlex.quote(str(marker))} |"


def pipe_node(marker: Path) -> dict:
    """A config node that, instantiated, runs `touch MARKER` (read_audio runs Kaldi pipes)."""
    return {"_target_": "speechlm.data.audio.read_audio", "entry": pipe(marker)}


def python_tag(marker: Path) -> str:
    """A YAML value that `yaml.unsafe_load` turns into a call of `touch MARKER`."""
    return f"!!python/object/apply:os.system [{json.dumps('touch ' + str(marker))}]"


def pickled_array(marker: Path) -> np.ndarray:
    return np.array([Payload(marker)], dtype=object)


class CLIError(Exception):
    """A CLI's non-zero exit, with what it printed on stderr."""


def cli(main: Callable[[list[str]], int], argv: list[str]) -> int:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv)
    if rc != 0:
        raise CLIError(err.getvalue())
    return rc


def write_ckpt(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def edited_tiny_ckpt(tmp: Path, edit: Callable[[dict], None]) -> Path:
    """A valid tiny speechlm checkpoint with `edit` applied to its `speechlm` block: plain
    data only, so it loads with weights_only; what it names is the payload."""
    path = tiny_ctc_checkpoint(tmp / "tiny.ckpt")
    ckpt = torch.load(path, weights_only=True)
    edit(ckpt["speechlm"])
    return write_ckpt(tmp / "edited.ckpt", ckpt)


TINY_MODEL = {"_target_": "speechlm.models.ctc_attention.CTCAttentionModel", "vocab_size": 5, "ctc_weight": 1.0,
              "encoder": {"_target_": "speechlm.encoders.conformer.ConformerEncoder", "input_size": 8,
                          "output_size": 16, "attention_heads": 2, "linear_units": 16, "num_blocks": 1}}


def espnet_config(**extra) -> dict:
    """A minimal ESPnet ASR config.yaml (Conformer, CTC only, char tokens, default frontend)."""
    return {"encoder": "conformer", "encoder_conf": {"output_size": 16, "attention_heads": 2, "linear_units": 16,
                                                     "num_blocks": 1},
            "frontend": "default", "frontend_conf": {"n_mels": 8, "fs": 16000}, "normalize": None, "decoder": None,
            "token_type": "char", "token_list": ["<blank>", "<unk>", "a", "<sos/eos>"],
            "model_conf": {"ctc_weight": 1.0}, **extra}


def write_yaml(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def decode_cfg(ckpt: Path, data: Path, out: Path):
    return OmegaConf.create({"checkpoint": str(ckpt), "device": "cpu", "data_dir": str(data), "out_dir": str(out),
                             "batch_seconds": 100.0, "search": {"_target_": None}})


@dataclass
class Case:
    """`plant(tmp, marker)` writes the file(s) and returns what `load` takes; `load` calls
    the real loader; it must raise `error` matching `match`."""
    plant: Callable[[Path, Path], object]
    load: Callable[[object], object]
    error: type[BaseException] | tuple[type[BaseException], ...]
    match: str


# --- the loaders --------------------------------------------------------------------------

def _load_pretrained(path):
    from speechlm.train.pretrained import load_pretrained
    return load_pretrained(path)


def _decode(ctx):
    from speechlm.bin.decode import decode_data_dir
    ckpt, tmp = ctx
    return decode_data_dir(decode_cfg(ckpt, make_data_dir(tmp / "d", per_speaker=1), tmp / "decode"))


def _transcribe(ctx):
    from speechlm.bin.transcribe import main
    ckpt, tmp = ctx
    data = make_data_dir(tmp / "d", per_speaker=1)
    wav = (data / "wav.scp").read_text().split()[1]
    return main(["--model", str(ckpt), wav])


def _dump_features(ctx):
    from speechlm.bin.dump_features import main
    ckpt, tmp = ctx
    return main([str(make_data_dir(tmp / "d", per_speaker=1)), str(tmp / "dump"), "--model", str(ckpt),
                 "--layer", "1"])


def _export_whisper(ctx):
    from speechlm.bin.export_whisper import main
    ckpt, tmp = ctx
    return main([str(ckpt), str(tmp / "out.pt")])


def _export_hf(ctx):
    from speechlm.bin.export_hf import main
    ckpt, tmp = ctx
    return cli(main, [str(ckpt), str(tmp / "hf_out")])


def _average(ctx):
    from speechlm.train.average import average_checkpoints
    ckpt, tmp = ctx
    return average_checkpoints([ckpt], tmp / "avg.ckpt")


def _average_exp_dir(exp):
    from speechlm.bin.average_checkpoints import best_checkpoints
    return best_checkpoints(exp, 5)


def _init_from(path):
    from speechlm.models.build import build_model
    return build_model({**TINY_MODEL, "encoder": {**TINY_MODEL["encoder"], "init_from": str(path)}})


def _state_dict(fmt):
    def load(path):
        from speechlm.models.build import checkpoint_state_dict
        return checkpoint_state_dict(path, fmt)
    return load


def _resume(path):
    from speechlm.train.resume import load_checkpoint_file
    return load_checkpoint_file(path)


def _lightning_io(path):
    from speechlm.train.checkpoint_io import AtomicCheckpointIO
    return AtomicCheckpointIO().load_checkpoint(path)


def _cmvn(path):
    from speechlm.features import CMVNStats
    return CMVNStats.load(path)


def _cmvn_init_from(path):
    from speechlm.models.build import build_model
    return build_model({**TINY_MODEL, "normalize": {"_target_": "speechlm.features.GlobalCMVN.empty", "dim": 8,
                                                    "init_from": str(path)}})


def _load_tokenizer(directory):
    from speechlm.tokenizers import load_tokenizer
    return load_tokenizer(directory)


def _tokenizer_from_dict(d):
    from speechlm.tokenizers import tokenizer_from_dict
    return tokenizer_from_dict(d)


def _kmeans(command):
    def load(ctx):
        from speechlm.bin.kmeans import main
        feats, km, out = ctx
        argv = ["learn", str(feats), str(km), "--clusters", "2"] if command == "learn" else \
            ["apply", str(feats), str(km), str(out)]
        return cli(main, argv)
    return load


def _openai(path):
    from speechlm.interop.whisper import load_openai_checkpoint
    return load_openai_checkpoint(path)


def _espnet_encoder(ctx):
    from speechlm.interop.espnet import load_espnet_encoder
    return load_espnet_encoder(*ctx)


def _espnet_asr(ctx):
    from speechlm.interop.espnet_asr import load_espnet_asr
    return load_espnet_asr(*ctx)


def _convert_espnet(ctx):
    from speechlm.bin.convert_espnet import main
    config, pth, tmp = ctx
    return cli(main, ["--config", str(config), "--model", str(pth), "--out", str(tmp / "out.ckpt")])


def _load_hf(directory):
    from speechlm.interop.hf_wav2vec2 import load_hf
    return load_hf(directory)


def _compute_cmvn(ctx):
    from speechlm.bin.compute_cmvn import main
    frontend, tmp = ctx
    return cli(main, [str(make_data_dir(tmp / "d", per_speaker=1)), str(tmp / "cmvn.npz"), "--frontend",
                      str(frontend)])


# --- the plants ---------------------------------------------------------------------------

def bad_ckpt(tmp, marker):
    """A speechlm checkpoint whose `speechlm` block is the payload."""
    return write_ckpt(tmp / "bad.ckpt", {"state_dict": {"w": torch.zeros(1)}, "speechlm": Payload(marker)})


def bad_ckpt_and_tmp(tmp, marker):
    return bad_ckpt(tmp, marker), tmp


def bad_last_ckpt(tmp, marker):
    write_ckpt(tmp / "exp" / "checkpoints" / "last.ckpt", {"state_dict": {}, "speechlm": Payload(marker)})
    return tmp / "exp"


def bad_openai(tmp, marker):
    return write_ckpt(tmp / "tiny.pt", {"dims": Payload(marker), "model_state_dict": {}})


def npz_with_object_array(tmp, marker):
    np.savez(tmp / "cmvn.npz", count=pickled_array(marker), sum=np.zeros(8), sum_square=np.zeros(8))
    return tmp / "cmvn.npz"


def pickle_named_npz(tmp, marker):
    (tmp / "cmvn.npz").write_bytes(pickle.dumps(Payload(marker)))
    return tmp / "cmvn.npz"


def npy_with_object_array(tmp, marker):
    np.save(tmp / "cmvn.npy", pickled_array(marker), allow_pickle=True)
    return tmp / "cmvn.npy"


def tokenizer_yaml_python_tag(tmp, marker):
    d = tmp / "tok"
    d.mkdir()
    (d / "tokenizer.yaml").write_text(f"_target_: {python_tag(marker)}\n")
    (d / "tokens.txt").write_text("<blank>\n<unk>\na\n<sos/eos>\n")
    return d


def tokenizer_yaml_target(tmp, marker):
    d = tmp / "tok"
    d.mkdir()
    (d / "tokenizer.yaml").write_text(yaml.safe_dump(pipe_node(marker)))
    (d / "tokens.txt").write_text("<blank>\n<unk>\na\n<sos/eos>\n")
    return d


def sentencepiece_model_pickle(tmp, marker):
    d = tmp / "tok"
    d.mkdir()
    (d / "tokenizer.yaml").write_text(yaml.safe_dump(
        {"_target_": "speechlm.tokenizers.sentencepiece.SentencePieceTokenizer", "model_type": "bpe"}))
    (d / "bpe.model").write_bytes(pickle.dumps(Payload(marker)))
    (d / "tokens.txt").write_text("<blank>\n<unk>\na\n<sos/eos>\n")
    return d


def features_dir(tmp, feats: np.ndarray, frames: int) -> Path:
    d = tmp / "feats"
    d.mkdir()
    np.save(d / "feats.npy", feats, allow_pickle=True)
    (d / "utt2num_frames").write_text(f"u1 {frames}\n")
    (d / "info.json").write_text(json.dumps({"source": "mfcc", "dims": 2, "frame_rate": 100}))
    return d


def pickled_features(tmp, marker):
    return features_dir(tmp, pickled_array(marker), 1), tmp / "km", tmp / "labels"


def pickled_centroids(tmp, marker):
    feats = features_dir(tmp, np.zeros((4, 2), np.float32), 4)
    km = tmp / "km"
    km.mkdir()
    np.save(km / "centroids.npy", pickled_array(marker), allow_pickle=True)
    (km / "info.json").write_text(json.dumps({"k": 1, "dims": 2, "features": {"source": "mfcc", "dims": 2}}))
    return feats, km, tmp / "labels"


def espnet_bad_pth(tmp, marker):
    config = write_yaml(tmp / "config.yaml", espnet_config())
    return config, write_ckpt(tmp / "valid.acc.ave.pth", {"encoder.x": Payload(marker)})


def espnet_bad_pth_cli(tmp, marker):
    return (*espnet_bad_pth(tmp, marker), tmp)


def espnet_config_python_tag(tmp, marker):
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump(espnet_config()) + f"extra: {python_tag(marker)}\n")
    return config, write_ckpt(tmp / "valid.acc.ave.pth", {})


def espnet_config_target(tmp, marker):
    config = espnet_config()
    config["encoder_conf"]["linear_units"] = pipe_node(marker)
    return write_yaml(tmp / "config.yaml", config), write_ckpt(tmp / "valid.acc.ave.pth", {})


def hf_bad_bin(tmp, marker):
    d = tmp / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "wav2vec2", "architectures": ["Wav2Vec2Model"]}))
    write_ckpt(d / "pytorch_model.bin", {"wav2vec2.masked_spec_embed": Payload(marker)})
    return d


def frontend_yaml_target(tmp, marker):
    return write_yaml(tmp / "frontend.yaml", pipe_node(marker)), tmp


def frontend_yaml_python_tag(tmp, marker):
    (tmp / "frontend.yaml").write_text(f"_target_: {python_tag(marker)}\n")
    return tmp / "frontend.yaml", tmp


def ckpt_model_target(tmp, marker):
    return write_ckpt(tmp / "bad.ckpt", {"state_dict": {}, "speechlm": {"config": {"model": pipe_node(marker)}}})


def ckpt_nested_target(tmp, marker):
    model = {**TINY_MODEL, "encoder": {**TINY_MODEL["encoder"], "input_size": pipe_node(marker)}}
    return write_ckpt(tmp / "bad.ckpt", {"state_dict": {}, "speechlm": {"config": {"model": model}}})


def ckpt_interpolated_target(tmp, marker):
    node = "{_target_: speechlm.data.audio.read_audio, entry: " + json.dumps(pipe(marker)) + "}"
    model = {**TINY_MODEL, "encoder": {**TINY_MODEL["encoder"], "input_size": "${oc.decode:'" + node + "'}"}}
    return write_ckpt(tmp / "bad.ckpt", {"state_dict": {}, "speechlm": {"config": {"model": model}}})


def ckpt_search_target(tmp, marker):
    return edited_tiny_ckpt(tmp, lambda meta: meta["config"].update(search=pipe_node(marker))), tmp


def ckpt_search_nested(tmp, marker):
    search = {"_target_": "speechlm.search.ctc_greedy.CTCGreedySearch", "x": pipe_node(marker)}
    return edited_tiny_ckpt(tmp, lambda meta: meta["config"].update(search=search)), tmp


def ckpt_tokenizer_target(tmp, marker):
    return edited_tiny_ckpt(tmp, lambda meta: meta.update(tokenizer=pipe_node(marker)))


WEIGHTS_ONLY = r"(?i)weights.only"
REFUSED = r"refused: not only tensors and plain data"
NOT_A_MODULE = r"is not an nn\.Module class"

CASES = {
    # speechlm checkpoints, pickle payload
    "checkpoint/load_pretrained": Case(bad_ckpt, _load_pretrained, ValueError, REFUSED),
    "checkpoint/decode": Case(bad_ckpt_and_tmp, _decode, ValueError, REFUSED),
    "checkpoint/transcribe": Case(bad_ckpt_and_tmp, _transcribe, ValueError, REFUSED),
    "checkpoint/dump_features--model": Case(bad_ckpt_and_tmp, _dump_features, ValueError, REFUSED),
    "checkpoint/export_whisper": Case(bad_ckpt_and_tmp, _export_whisper, ValueError, REFUSED),
    "checkpoint/export_hf": Case(bad_ckpt_and_tmp, _export_hf, CLIError, REFUSED),
    "checkpoint/average_checkpoints": Case(bad_ckpt_and_tmp, _average, ValueError, REFUSED),
    "checkpoint/average_checkpoints-exp-last.ckpt": Case(bad_last_ckpt, _average_exp_dir, ValueError, REFUSED),
    "checkpoint/init_from": Case(bad_ckpt, _init_from, ValueError, REFUSED),
    "checkpoint/checkpoint_state_dict-speechlm": Case(bad_ckpt, _state_dict("speechlm"), ValueError, REFUSED),
    "checkpoint/checkpoint_state_dict-espnet": Case(bad_ckpt, _state_dict("espnet"), ValueError, REFUSED),
    "checkpoint/checkpoint_state_dict-openai": Case(bad_ckpt, _state_dict("openai"), ValueError, REFUSED),
    "checkpoint/resume": Case(bad_ckpt, _resume, RuntimeError, r"unreadable checkpoint.*" + REFUSED),
    "checkpoint/lightning-checkpoint_io": Case(bad_ckpt, _lightning_io, pickle.UnpicklingError, WEIGHTS_ONLY),
    # speechlm checkpoints, plain data that names code
    "checkpoint-config/model-_target_": Case(ckpt_model_target, _load_pretrained, ValueError, NOT_A_MODULE),
    "checkpoint-config/nested-_target_": Case(ckpt_nested_target, _load_pretrained, ValueError, NOT_A_MODULE),
    "checkpoint-config/interpolated-_target_": Case(ckpt_interpolated_target, _load_pretrained, ValueError,
                                                    NOT_A_MODULE),
    "checkpoint-config/search-_target_": Case(ckpt_search_target, _decode, ValueError, r"not a search class"),
    "checkpoint-config/search-nested-_target_": Case(ckpt_search_nested, _decode, ValueError,
                                                     r"a search takes plain values"),
    "checkpoint-config/tokenizer-_target_": Case(ckpt_tokenizer_target, _load_pretrained, TypeError,
                                                 r"is not a Tokenizer"),
    # CMVN statistics
    "cmvn/npz-object-array": Case(npz_with_object_array, _cmvn, ValueError, r"not CMVN statistics.*allow_pickle"),
    "cmvn/pickle-named-npz": Case(pickle_named_npz, _cmvn, ValueError, r"not CMVN statistics.*pickle"),
    "cmvn/npy-object-array": Case(npy_with_object_array, _cmvn, ValueError, r"not CMVN statistics.*allow_pickle"),
    "cmvn/init_from": Case(npz_with_object_array, _cmvn_init_from, ValueError, r"not CMVN statistics"),
    # tokenizers
    "tokenizer/tokenizer.yaml-python-tag": Case(tokenizer_yaml_python_tag, _load_tokenizer, ValueError,
                                                r"not a tokenizer config.*python/object"),
    "tokenizer/tokenizer.yaml-_target_": Case(tokenizer_yaml_target, _load_tokenizer, TypeError,
                                              r"is not a Tokenizer"),
    "tokenizer/sentencepiece-model-pickle": Case(sentencepiece_model_pickle, _load_tokenizer, ValueError,
                                                 r"bpe\.model: not a sentencepiece model"),
    "tokenizer/checkpoint-dict": Case(lambda tmp, marker: pipe_node(marker), _tokenizer_from_dict, TypeError,
                                      r"is not a Tokenizer"),
    # HuBERT offline targets
    "kmeans/centroids.npy-object-array": Case(pickled_centroids, _kmeans("apply"), CLIError,
                                              r"not a k-means dir.*allow_pickle"),
    "dumped-features/feats.npy-object-array-learn": Case(pickled_features, _kmeans("learn"), CLIError,
                                                         r"not a dump_features dir.*allow_pickle"),
    "dumped-features/feats.npy-object-array-apply": Case(pickled_features, _kmeans("apply"), CLIError,
                                                         r"not a dump_features dir"),
    # interop
    "whisper/load_openai_checkpoint": Case(bad_openai, _openai, ValueError, REFUSED),
    "whisper/load_pretrained-openai-file": Case(bad_openai, _load_pretrained, ValueError, REFUSED),
    "espnet/load_espnet_encoder-pth": Case(espnet_bad_pth, _espnet_encoder, ValueError, REFUSED),
    "espnet/load_espnet_asr-pth": Case(espnet_bad_pth, _espnet_asr, ValueError, REFUSED),
    "espnet/convert_espnet-pth": Case(espnet_bad_pth_cli, _convert_espnet, CLIError, REFUSED),
    "espnet/config.yaml-python-tag": Case(espnet_config_python_tag, _espnet_asr, yaml.YAMLError, r"python/object"),
    "espnet/config.yaml-_target_": Case(espnet_config_target, _espnet_asr, ValueError, NOT_A_MODULE),
    "hf/pytorch_model.bin": Case(hf_bad_bin, _load_hf, ValueError, REFUSED),
    "hf/init_from-format-hf": Case(hf_bad_bin, _state_dict("hf"), ValueError, REFUSED),
    # configs read from a file and instantiated
    "frontend-yaml/compute_cmvn-_target_": Case(frontend_yaml_target, _compute_cmvn, CLIError, NOT_A_MODULE),
    "frontend-yaml/compute_cmvn-python-tag": Case(frontend_yaml_python_tag, _compute_cmvn, CLIError,
                                                  r"python/object"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_planted_payload_is_refused_and_never_runs(name, tmp_path, monkeypatch):
    case = CASES[name]
    marker = tmp_path / "MARKER"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # a relative path in a payload would land here
    ctx = case.plant(work, marker)
    with pytest.raises(case.error, match=case.match):
        case.load(ctx)
    assert not marker.exists(), f"{name}: the payload ran"
    assert not list(work.rglob("MARKER")), f"{name}: the payload ran"


def test_payloads_are_live(tmp_path):
    """Loaded unsafely, each payload does run: the checks above are not vacuous."""
    marker = tmp_path / "MARKER"
    path = bad_ckpt(tmp_path, marker)
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    np.load(npz_with_object_array(tmp_path, marker), allow_pickle=True)["count"]
    assert marker.exists()
    marker.unlink()
    with contextlib.suppress(Exception):  # read_audio runs the pipe, then finds no audio in its output
        hydra.utils.instantiate(pipe_node(marker))
    assert marker.exists()
    marker.unlink()
    yaml.unsafe_load(f"x: {python_tag(marker)}")
    assert marker.exists()


def test_hf_shard_index_cannot_point_outside_the_model_dir(tmp_path):
    from speechlm.interop.hf_wav2vec2 import load_hf

    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    (d / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {"a": "../elsewhere.bin"}}))
    with pytest.raises(ValueError, match="shard names must be file names"):
        load_hf(d)


def test_genuine_files_still_load(tmp_path):
    """The checks refuse payloads, not the files speechlm writes."""
    from speechlm.features import CMVNStats
    from speechlm.train.pretrained import load_pretrained

    model, tokenizer, config = load_pretrained(tiny_ctc_checkpoint(tmp_path / "tiny.ckpt"))
    assert tokenizer is not None and config["search"]["_target_"].endswith("CTCGreedySearch")
    CMVNStats(3, np.ones(2), np.full(2, 2.0)).save(tmp_path / "cmvn.npz")
    stats = CMVNStats.load(tmp_path / "cmvn.npz")
    assert stats.count == 3 and stats.sum.tolist() == [1.0, 1.0] and stats.sum_square.tolist() == [2.0, 2.0]
