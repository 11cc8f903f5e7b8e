"""OpenAI Whisper checkpoints and Hugging Face Whisper weights in our MultitaskModel: a random
tiny openai-whisper model saved in its own format gives the same encoder output and decoder
logits here (from the same mel, and end to end from audio); saved back, whisper.load_model
reads it and gives identical logits; a random tiny HF WhisperForConditionalGeneration gives
the same logits; faults are named by key."""
from __future__ import annotations

import logging
from dataclasses import asdict

import numpy as np
import pytest
import torch
import whisper
from transformers import WhisperConfig, WhisperForConditionalGeneration

from interop.whisper_peer import DIMS, openai_checkpoint, random_mel, random_whisper
from speechlm.interop.whisper import (
    load_openai_checkpoint,
    model_from_hf,
    openai_dims_to_config,
    openai_state_dict_to_ours,
    ours_to_openai_state_dict,
    save_openai_checkpoint,
    whisper_tokenizer,
)
from speechlm.models.build import build_model, checkpoint_state_dict
from speechlm.train.pretrained import load_pretrained

V = DIMS.n_vocab


@pytest.fixture(scope="module")
def ref():
    return random_whisper()


@pytest.fixture(scope="module")
def tiny_pt(ref, tmp_path_factory):
    path = tmp_path_factory.mktemp("whisper") / "tiny.pt"
    torch.save(openai_checkpoint(ref), path)
    return path


@pytest.fixture(scope="module")
def loaded(tiny_pt):
    return load_openai_checkpoint(tiny_pt)


def prompt_tokens(tokenizer, length: int = 10) -> torch.Tensor:
    sot = tokenizer.sot_sequence("en", "transcribe")
    text = torch.randint(0, 50000, (2, length - len(sot)), generator=torch.Generator().manual_seed(0))
    return torch.cat([torch.tensor([sot, sot]), text], dim=1)


def our_logits(model, mel: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mel (B, n_mels, 3000) -> (encoder output, decoder logits), bypassing the frontend."""
    b = mel.shape[0]
    with torch.no_grad():
        enc = model.encoder(mel.transpose(1, 2), torch.full((b,), mel.shape[2]))
        logits = model.decoder(enc.output, enc.lengths, ys, torch.full((b,), ys.shape[1]))
    return enc.output, logits


def test_openai_checkpoint_equals_whisper(ref, loaded):
    model, tokenizer, _ = loaded
    mel, ys = random_mel(2, 3000), prompt_tokens(tokenizer)
    with torch.no_grad():
        expected_enc = ref.encoder(mel)
        expected = ref.decoder(ys, expected_enc)
    enc, logits = our_logits(model, mel, ys)
    assert (enc - expected_enc).abs().max() < 1e-4
    assert (logits - expected).abs().max() < 1e-4
    assert not model.training and model.ctc is None


def test_config_frontend_and_tokenizer(loaded):
    model, tokenizer, config = loaded
    assert config["model"]["_target_"] == "speechlm.models.multitask.MultitaskModel"
    assert config["frontend"]["_target_"] == "speechlm.features.whisper_mel.WhisperLogMel"
    assert (config["frontend"]["n_mels"], config["frontend"]["chunk_seconds"]) == (80, 30.0)
    assert config["search"] is None and config["vocab_size"] == V
    assert type(model.frontend).__name__ == "WhisperLogMel" and model.frontend.n_mels == 80
    reference = whisper.tokenizer.get_tokenizer(True, num_languages=99)
    assert tokenizer.vocab_size == V
    assert config["special_ids"]["sot"] == reference.sot and config["special_ids"]["eot"] == reference.eot
    assert tokenizer.sot_sequence("de", "translate") == list(
        whisper.tokenizer.get_tokenizer(True, language="de", task="translate").sot_sequence)


def test_english_only_and_large_v3_vocabularies():
    """n_vocab picks the encoding and the number of languages as Whisper's model does."""
    english = whisper_tokenizer(51864)
    assert english.special_ids["eot"] == whisper.tokenizer.get_tokenizer(False).eot
    assert english.special_ids["sot"] == whisper.tokenizer.get_tokenizer(False).sot
    v3 = whisper.tokenizer.get_tokenizer(True, num_languages=100)
    assert whisper_tokenizer(51866).special_ids["sot"] == v3.sot


def test_end_to_end_from_audio(ref, loaded):
    """Our model's encode (WhisperLogMel frontend, 30-s windows) == whisper's log-mel + encoder."""
    model = loaded[0]
    g = np.random.default_rng(0)
    audio = torch.from_numpy((0.1 * g.standard_normal((2, 16000 * 3))).astype(np.float32))
    lengths = torch.tensor([48000, 30000])
    mel = torch.stack([whisper.log_mel_spectrogram(whisper.pad_or_trim(audio[b, :n]))
                       for b, n in enumerate(lengths.tolist())])
    with torch.no_grad():
        out = model.encode(audio, lengths)
        expected = ref.encoder(mel)
    assert (out.output - expected).abs().max() < 1e-4


def test_load_pretrained_reads_openai_checkpoints(tiny_pt, loaded):
    model, tokenizer, config = load_pretrained(tiny_pt)
    assert config["model"] == loaded[2]["model"] and tokenizer.vocab_size == V
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded[0].state_dict().items()):
        assert torch.equal(a, b), k


def test_saved_back_loads_in_whisper_with_identical_logits(ref, loaded, tmp_path):
    path = tmp_path / "out" / "back.pt"
    save_openai_checkpoint(loaded[0], path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["back.pt"]  # no temporary left
    back = whisper.load_model(str(path), device="cpu")
    assert back.dims == ref.dims
    mel, ys = random_mel(1, 3000, seed=1), prompt_tokens(loaded[1])[:1]
    with torch.no_grad():
        assert torch.equal(back(mel, ys), ref(mel, ys))


def test_state_dict_round_trip(ref):
    sd = ref.state_dict()
    back = ours_to_openai_state_dict(openai_state_dict_to_ours(sd))
    assert list(back) == list(sd) and all(back[k] is sd[k] for k in sd)


def test_init_from_an_openai_checkpoint(tiny_pt, loaded, caplog):
    with caplog.at_level(logging.INFO, logger="speechlm.models.build"):
        auto = checkpoint_state_dict(tiny_pt)
    assert "OpenAI Whisper checkpoint" in caplog.text
    explicit = checkpoint_state_dict(tiny_pt, "openai")
    assert auto.keys() == explicit.keys() == loaded[0].state_dict().keys()
    node = {**openai_dims_to_config(asdict(DIMS))["model"], "init_from": str(tiny_pt)}
    model = build_model(node)
    for k, v in loaded[0].state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    node = {**openai_dims_to_config(asdict(DIMS))["model"]}
    node["encoder"] = {**node["encoder"], "init_from": {"checkpoint": str(tiny_pt), "format": "openai"}}
    model = build_model(node)
    assert torch.equal(model.encoder.embed.conv1.weight, loaded[0].encoder.embed.conv1.weight)


def test_hugging_face_whisper_equals_ours():
    config = WhisperConfig(vocab_size=V, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=256,
                           decoder_ffn_dim=256, max_source_positions=1500, max_target_positions=448)
    torch.manual_seed(0)
    hf = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # norms and biases away from their initial values
        g = torch.Generator().manual_seed(1)
        for name, p in hf.named_parameters():
            if "layer_norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    ours = model_from_hf(hf.state_dict(), hf.config)
    mel = random_mel(2, 3000, seed=2)
    ys = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = hf(input_features=mel, decoder_input_ids=ys).logits
    _, logits = our_logits(ours, mel, ys)
    assert (logits - expected).abs().max() < 1e-4


def test_planted_faults_are_named(ref, tmp_path):
    sd = dict(ref.state_dict())
    del sd["decoder.blocks.1.cross_attn.query.weight"]
    torch.save({"dims": asdict(DIMS), "model_state_dict": sd}, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"missing 'decoder\.blocks\.1\.cross_attn\.query\.weight'"):
        load_openai_checkpoint(tmp_path / "missing.pt")

    sd = dict(ref.state_dict())
    sd["encoder.blocks.0.mlp.0.weight"] = torch.zeros(255, 64)
    torch.save({"dims": asdict(DIMS), "model_state_dict": sd}, tmp_path / "shape.pt")
    with pytest.raises(ValueError, match=r"'encoder\.blocks\.0\.mlp\.0\.weight' .*has shape \(255, 64\)"):
        load_pretrained(tmp_path / "shape.pt")

    sd = {**ref.state_dict(), "decoder.blocks.0.attn.key.bias": torch.zeros(64)}  # Whisper's key has none
    torch.save({"dims": asdict(DIMS), "model_state_dict": sd}, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match=r"unexpected 'decoder\.blocks\.0\.attn\.key\.bias'"):
        load_openai_checkpoint(tmp_path / "extra.pt")
    with pytest.raises(ValueError, match=r"unexpected key 'decoder\.lm_head\.weight'"):
        openai_state_dict_to_ours({**ref.state_dict(), "decoder.lm_head.weight": torch.zeros(1)})

    with pytest.raises(ValueError, match="n_audio_state 64 != n_text_state 32"):
        openai_dims_to_config({**asdict(DIMS), "n_text_state": 32})


def test_export_whisper_cli_writes_what_it_read(tiny_pt, tmp_path, capsys):
    from speechlm.bin.export_whisper import main

    out = tmp_path / "exported.pt"
    assert main([str(tiny_pt), str(out)]) == 0
    before = torch.load(tiny_pt, weights_only=True)
    after = torch.load(out, weights_only=True)
    assert after["dims"] == before["dims"]
    assert after["model_state_dict"].keys() == before["model_state_dict"].keys()
    for key, value in before["model_state_dict"].items():
        assert torch.equal(after["model_state_dict"][key], value.float()), key
