"""SpeechLLM (speechlm.models.speech_llm): the speech span spliced at the placeholder, the loss
on answer tokens only, padding that changes nothing, frozen parts that stay frozen, and
checkpoints that hold the trained weights only and refuse changed references."""
from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from speechlm.decoders.causal_lm import CausalLM
from speechlm.encoders.base import EncoderOutput
from speechlm.models.adapters import FrameStackMLP
from speechlm.models.speech_llm import IGNORE, SpeechLLM
from tests.fixtures import tiny_ctc_checkpoint

AUDIO = 5  # the placeholder id of these tests' vocabulary


def tiny_lm(seed: int = 0) -> CausalLM:
    torch.manual_seed(seed)
    return CausalLM(vocab_size=40, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                    bos_id=1, eos_id=2, pad_id=0)


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("speech_llm")
    encoder = tiny_ctc_checkpoint(root / "asr.ckpt")
    lm_dir = tiny_lm().save_hf(root / "lm")
    return encoder, lm_dir


def build(parts, lora=True, train_encoder=False, seed=1) -> SpeechLLM:
    encoder, lm_dir = parts
    torch.manual_seed(seed)
    return SpeechLLM(encoder_checkpoint=str(encoder), adapter=functools.partial(FrameStackMLP, stack=2),
                     lm=CausalLM.from_hf(lm_dir), audio_token_id=AUDIO,
                     lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]} if lora else None,
                     train_encoder=train_encoder)


def batch(seconds=(0.6, 1.0, 0.8), seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    audio = [torch.randn(int(s * 16000), generator=g) * 0.1 for s in seconds]
    prompts = [[7, 8, AUDIO, 9], [7, AUDIO, 10, 11, 12], [AUDIO, 13]]
    answers = [[20, 21, 3], [22, 3], [23, 24, 25, 3]]

    def pad(rows, value):
        out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long if value != 0.0 else torch.float)
        for b, r in enumerate(rows):
            out[b, : len(r)] = torch.as_tensor(r)
        return out, torch.tensor([len(r) for r in rows])

    audio_pad, audio_lens = pad([a.tolist() for a in audio], 0.0)
    p, pl = pad(prompts, -1)
    a, al = pad(answers, -1)
    return {"audio": audio_pad, "audio_lens": audio_lens, "prompt_ids": p, "prompt_ids_lens": pl,
            "answer_ids": a, "answer_ids_lens": al}


def slow_loss(model: SpeechLLM, b: dict) -> torch.Tensor:
    """Each row alone, unpadded, spliced by hand: summed answer NLL / answer tokens. (The
    encoder runs on the batch: ESPnet's subsampled padding mask gives a padded row a
    frame or two more than it has alone, which the model must see as it is.)"""
    total, count = 0.0, 0
    batched = model.encode(b["audio"], b["audio_lens"])
    for i in range(len(b["audio_lens"])):
        n = int(batched.lengths[i])
        enc = EncoderOutput(batched.output[i : i + 1, :n], batched.lengths[i : i + 1], {})
        speech, lens = model.speech_embeddings(enc)
        prompt = b["prompt_ids"][i, : int(b["prompt_ids_lens"][i])].tolist()
        answer = b["answer_ids"][i, : int(b["answer_ids_lens"][i])]
        k = prompt.index(AUDIO)
        embeds = torch.cat([model.lm.embed(torch.tensor([prompt[:k]], dtype=torch.long))[0], speech[0, : int(lens[0])],
                            model.lm.embed(torch.tensor([prompt[k + 1:]], dtype=torch.long))[0], model.lm.embed(answer[None])[0]])
        logits, _ = model.lm.forward_embeds(embeds[None])
        start = len(embeds) - len(answer)
        total = total + F.cross_entropy(logits[0, start - 1 : -1].float(), answer, reduction="sum")
        count += len(answer)
    return total / count


def test_loss_is_the_answer_tokens_nll_and_padding_changes_nothing(parts):
    model = build(parts).eval()
    b = batch()
    with torch.no_grad():
        out = model(b)
        expected = slow_loss(model, b)
    assert torch.allclose(out["loss"], expected, atol=1e-5), (out["loss"], expected)
    # a planted fault: the prompt's tokens counted as targets too -> another loss
    with torch.no_grad():
        enc = model.encode(b["audio"], b["audio_lens"])
        speech, lens = model.speech_embeddings(enc)
        embeds, mask, labels = model.splice(b["prompt_ids"], b["prompt_ids_lens"], speech, lens,
                                            b["answer_ids"], b["answer_ids_lens"])
        assert int((labels != IGNORE).sum()) == int(b["answer_ids_lens"].sum())
        assert int(mask.sum()) == int(b["prompt_ids_lens"].sum() - 3 + lens.sum() + b["answer_ids_lens"].sum())


def test_splice_needs_exactly_one_placeholder(parts):
    model = build(parts, lora=False).eval()
    b = batch()
    b["prompt_ids"][0, 0] = AUDIO  # two placeholders in row 0
    with pytest.raises(ValueError, match="row 0: the prompt has 2 audio tokens"):
        model(b)


def test_only_adapter_and_lora_train(parts):
    model = build(parts).train()
    frozen = {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()}
    reference = {k: v.detach().clone() for k, v in model.speech.state_dict().items()}
    lm_base = {k: v.detach().clone() for k, v in model.lm.state_dict().items() if "lora" not in k}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("adapter.") or "lora" in n for n in trainable), trainable
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    b = batch()
    losses = []
    for _ in range(15):
        loss = model(b)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.1, losses  # (the frozen random LM bounds how far it can fall)
    for k, v in model.speech.state_dict().items():
        assert torch.equal(v, reference[k]), k
    for k, v in model.lm.state_dict().items():
        if "lora" not in k:
            assert torch.equal(v, lm_base[k]), k
    assert any(not torch.equal(v, frozen[k]) for k, v in model.state_dict().items() if k.startswith("adapter."))


def test_checkpoint_holds_trained_weights_only_and_reloads(parts, tmp_path):
    model = build(parts).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    b = batch()
    for _ in range(3):
        loss = model(b)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    state = model.state_dict()
    assert all(k.startswith("adapter.") or "lora" in k or k == "reference_fingerprint" for k in state), \
        sorted(k for k in state if not (k.startswith("adapter.") or "lora" in k))
    n_lm = sum(p.numel() for p in model.lm.parameters())
    assert sum(v.numel() for v in state.values()) < n_lm  # not a copy of the LM
    torch.save(state, tmp_path / "w.pt")
    again = build(parts, seed=9)  # other random adapter / LoRA weights until loaded
    again.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))  # strict: references are not missing
    model.eval(), again.eval()
    with torch.no_grad():
        assert torch.equal(model(b)["loss"], again(b)["loss"])
    # nested in a parent (as Task holds it, keys under `model.`): the same
    parent = torch.nn.Module()
    parent.model = build(parts, seed=9)
    parent.load_state_dict({f"model.{k}": v for k, v in state.items()})


def test_changed_reference_is_refused(parts, tmp_path):
    model = build(parts)
    state = model.state_dict()
    other = tiny_lm(seed=5).save_hf(tmp_path / "other_lm")
    changed = SpeechLLM(encoder_checkpoint=str(parts[0]), adapter=functools.partial(FrameStackMLP, stack=2),
                        lm=CausalLM.from_hf(other), audio_token_id=AUDIO)
    with pytest.raises(RuntimeError, match="the LM .* other weights"):
        changed.load_state_dict(state, strict=False)


def test_trained_encoder_is_saved(parts):
    model = build(parts, train_encoder=True).train()
    state = model.state_dict()
    assert any(k.startswith("speech.encoder.") for k in state)
    assert not any(k.startswith("speech.frontend.") or k.startswith("lm.embed") for k in state)
    assert model.speech.encoder.training  # dropout / SpecAugment act when the encoder trains
    assert model.sample_rate == 16000  # the encoder checkpoint's frontend's (decode and train read it)
    frozen = build(parts).train()
    assert not frozen.speech.training


def test_relative_references_resolve_from_the_recipe_directory(tmp_path, monkeypatch):
    """A checkpoint trained in a recipe directory names its references relative to it
    (exp/asr/model.avg.ckpt, exp/lm/hf): loaded from elsewhere, they resolve against the
    checkpoint's nearest ancestor holding them; from the recipe directory they stay as saved."""
    from speechlm.train.pretrained import resolve_references

    recipe = tmp_path / "recipe"
    (recipe / "exp/asr").mkdir(parents=True)
    (recipe / "exp/asr/model.avg.ckpt").write_bytes(b"")
    (recipe / "exp/lm/hf").mkdir(parents=True)
    (recipe / "exp/sllm/checkpoints").mkdir(parents=True)
    config = {"_target_": "speechlm.models.speech_llm.SpeechLLM", "encoder_checkpoint": "exp/asr/model.avg.ckpt",
              "lm": {"_target_": "x", "path": "exp/lm/hf"}}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for ckpt in (recipe / "exp/sllm/model.avg.ckpt", recipe / "exp/sllm/checkpoints/epoch003.ckpt"):
        resolved = resolve_references(config, ckpt)
        assert resolved["encoder_checkpoint"] == str(recipe / "exp/asr/model.avg.ckpt")
        assert resolved["lm"]["path"] == str(recipe / "exp/lm/hf")
    assert config["lm"]["path"] == "exp/lm/hf"  # the saved config is left as it was
    monkeypatch.chdir(recipe)
    assert resolve_references(config, recipe / "exp/sllm/model.avg.ckpt") == config
    monkeypatch.chdir(elsewhere)
    (recipe / "exp/lm/hf").rmdir()
    with pytest.raises(FileNotFoundError, match=r"lm\.path 'exp/lm/hf' is not found"):
        resolve_references(config, recipe / "exp/sllm/model.avg.ckpt")
    assert resolve_references({"encoder": {"output_size": 4}}, recipe / "x.ckpt") == {"encoder": {"output_size": 4}}
