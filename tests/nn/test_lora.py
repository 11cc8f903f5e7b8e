"""speechlm.nn.lora against peft (the peer) on tiny random transformers LLaMA models: the same
initial weights from the same seed, the same outputs (eval, and train mode with dropout under the
same seed; alpha/r and rsLoRA's alpha/sqrt(r)), the same gradients and weights after optimizer
steps, the same merge as `merge_and_unload`, and adapters that move both ways through peft's
directory format, also between speechlm's CausalLM and transformers' LlamaForCausalLM."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from torch import nn

from interop.hf_llama_peer import VOCAB, random_hf
from speechlm.decoders.causal_lm import CausalLM
from speechlm.nn.lora import (CAUSAL_LM_TO_HF, PEFT_PREFIX, LoRALinear, apply_lora, export_peft_adapter,
                              load_peft_adapter, lora_state_dict, merge_lora)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]
TOL = 1e-5
LM_TOL = 1e-4  # CausalLM vs LlamaForCausalLM (tests/interop/test_hf_llama.py)


def ids(seed=3, shape=(2, 9)):
    return torch.randint(3, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


def pair(r=4, alpha=8.0, dropout=0.0, use_rslora=False, random_b=True, name="llama_dynamic"):
    """(peft model, ours): the same random HF model; peft's LoRA weights copied into ours.
    random_b: B random too (peft's init_lora_weights=False), so the update is not zero."""
    hf = random_hf(name)
    ours = copy.deepcopy(hf)
    torch.manual_seed(0)
    peft_model = get_peft_model(hf, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=TARGETS,
                                               use_rslora=use_rslora, init_lora_weights=not random_b))
    paths = apply_lora(ours, TARGETS, r=r, alpha=alpha, dropout=dropout, use_rslora=use_rslora)
    peft_state = get_peft_model_state_dict(peft_model)
    with torch.no_grad():
        for key, value in lora_state_dict(ours).items():
            value.copy_(peft_state[PEFT_PREFIX + key])
    return peft_model, ours, paths


def test_targets_init_and_frozen_weights_match_peft():
    hf = random_hf("llama_dynamic")
    ours = copy.deepcopy(hf)
    torch.manual_seed(5)
    peft_model = get_peft_model(hf, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    torch.manual_seed(5)
    paths = apply_lora(ours, TARGETS, r=4, alpha=8)
    assert sorted(paths) == sorted(peft_model.targeted_module_names) and len(paths) == 2 * 5
    # the same seed gives the same kaiming-uniform A (peft's init), and B = 0
    peft_state = get_peft_model_state_dict(peft_model)
    for key, value in lora_state_dict(ours).items():
        assert torch.equal(value, peft_state[PEFT_PREFIX + key]), key
        if ".lora_B." in key:
            assert not value.any()
        else:
            assert value.std() > 0
    trainable = {k for k, p in ours.named_parameters() if p.requires_grad}
    assert trainable == {k for k, p in peft_model.named_parameters() if p.requires_grad
                         for k in [k.removeprefix(PEFT_PREFIX).replace(".default", "")]}
    # the base weights keep their state_dict keys (a LoRALinear is an nn.Linear with extra children)
    base_keys = {k for k in ours.state_dict() if ".lora_" not in k}
    assert base_keys == set(random_hf("llama_dynamic").state_dict())
    # a regex matches whole paths, as in peft
    regex = r".*layers\.1\.(self_attn\.q_proj|mlp\.\w+_proj)"
    peft_regex = get_peft_model(random_hf("llama_dynamic"), LoraConfig(r=2, target_modules=regex))
    assert sorted(apply_lora(random_hf("llama_dynamic"), regex, r=2)) == sorted(peft_regex.targeted_module_names)


@pytest.mark.parametrize("use_rslora", [False, True])
def test_outputs_equal_peft_in_eval_and_train_with_dropout(use_rslora):
    peft_model, ours, _ = pair(r=4, alpha=6.0, dropout=0.2, use_rslora=use_rslora)
    x = ids()
    plain = random_hf("llama_dynamic")
    peft_model.eval(), ours.eval()
    with torch.no_grad():
        reference = peft_model(x).logits
        assert (ours(x).logits - reference).abs().max() < TOL
        assert (plain(x).logits - reference).abs().max() > 1e-2  # the LoRA update is not negligible
        peft_model.train(), ours.train()
        torch.manual_seed(11)
        dropped = peft_model(x).logits
        torch.manual_seed(11)  # dropout consumes the generator in the same order: the same masks
        assert (ours(x).logits - dropped).abs().max() < TOL
        assert (dropped - reference).abs().max() > 1e-3  # dropout did act
    scale = 6.0 / (4 ** 0.5 if use_rslora else 4)
    layer = ours.get_submodule("model.layers.0.self_attn.q_proj")
    assert isinstance(layer, LoRALinear) and layer.scaling == pytest.approx(scale)
    assert peft_model.get_submodule(PEFT_PREFIX + "model.layers.0.self_attn.q_proj").scaling["default"] == \
        pytest.approx(scale)


def test_training_steps_equal_peft_and_leave_base_weights_untouched():
    peft_model, ours, _ = pair(dropout=0.1)
    base_before = {k: v.clone() for k, v in ours.state_dict().items() if ".lora_" not in k}
    lora_before = {k: v.clone() for k, v in lora_state_dict(ours).items()}
    optimizers = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
                  for m in (peft_model, ours)]
    peft_model.train(), ours.train()
    for step in range(3):
        x = ids(seed=20 + step)
        losses = []
        for model, optimizer in zip((peft_model, ours), optimizers):
            optimizer.zero_grad()
            torch.manual_seed(step)
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
            losses.append(loss.item())
            optimizer.step()
        assert losses[0] == pytest.approx(losses[1], abs=TOL)
    peft_state = get_peft_model_state_dict(peft_model)
    for key, value in lora_state_dict(ours).items():
        moved = (value - peft_state[PEFT_PREFIX + key]).abs().max()
        assert moved < TOL, key
    for key, value in ours.state_dict().items():
        if ".lora_" not in key:
            assert torch.equal(value, base_before[key]), key
    assert all(not p.requires_grad for k, p in ours.named_parameters() if ".lora_" not in k)
    # the steps did train the adapters (so the parity above is not that of two idle models)
    assert all((value - lora_before[key]).abs().max() > 1e-3 for key, value in lora_state_dict(ours).items())


def test_merge_equals_peft_merge_and_unload():
    peft_model, ours, paths = pair(use_rslora=True)
    x = ids()
    with torch.no_grad():
        before = ours(x).logits
        merged_peft = peft_model.merge_and_unload()
        assert merge_lora(ours) == paths
        after = ours(x).logits
        assert (after - merged_peft(x).logits).abs().max() < TOL
        assert (after - before).abs().max() < TOL
    assert not any(isinstance(m, LoRALinear) for m in ours.modules())
    assert all(type(ours.get_submodule(p)) is nn.Linear for p in paths)
    assert set(ours.state_dict()) == set(random_hf("llama_dynamic").state_dict())  # saves as a plain LLaMA


def test_our_adapter_loads_in_peft(tmp_path):
    _, ours, _ = pair(use_rslora=True)
    directory = export_peft_adapter(ours, tmp_path / "adapter")
    loaded = PeftModel.from_pretrained(random_hf("llama_dynamic"), directory).eval()
    x = ids()
    with torch.no_grad():
        assert (loaded(x).logits - ours(x).logits).abs().max() < TOL
    config = json.loads((directory / "adapter_config.json").read_text())
    assert config["use_rslora"] and config["r"] == 4


def test_peft_adapter_loads_in_ours(tmp_path):
    peft_model, _, _ = pair(alpha=16.0)
    peft_model.save_pretrained(tmp_path / "adapter")
    ours = random_hf("llama_dynamic")
    paths = load_peft_adapter(ours, tmp_path / "adapter")
    assert sorted(paths) == sorted(peft_model.targeted_module_names)
    x = ids()
    with torch.no_grad():
        assert (ours(x).logits - peft_model(x).logits).abs().max() < TOL


def causal_lm(tmp_path, name="llama3_tied"):
    hf = random_hf(name)
    hf.save_pretrained(tmp_path / name)
    return hf, CausalLM.from_hf(tmp_path / name)


def test_causal_lm_adapter_moves_both_ways_with_peft(tmp_path):
    """CausalLM's paths lack LlamaForCausalLM's `model.`: CAUSAL_LM_TO_HF maps them."""
    hf, lm = causal_lm(tmp_path)
    torch.manual_seed(1)
    apply_lora(lm, TARGETS + ["lm_head"], r=4, alpha=8)
    with torch.no_grad():
        for layer in lm.modules():
            if isinstance(layer, LoRALinear):
                layer.lora_B.weight.normal_(0, 0.1)
    export_peft_adapter(lm, tmp_path / "ours", prefixes=CAUSAL_LM_TO_HF)
    peer = PeftModel.from_pretrained(copy.deepcopy(hf), tmp_path / "ours").eval()
    x = ids()
    with torch.no_grad():
        reference = peer(x).logits
        assert (lm.logits(x) - reference).abs().max() < LM_TOL
        assert (hf(x).logits - reference).abs().max() > 1e-2
    # and back: peft's saved adapter into a fresh CausalLM
    peer.save_pretrained(tmp_path / "peft")
    _, fresh = causal_lm(tmp_path)
    load_peft_adapter(fresh, tmp_path / "peft", prefixes=CAUSAL_LM_TO_HF)
    with torch.no_grad():
        assert (fresh.logits(x) - reference).abs().max() < LM_TOL


def test_refusals(tmp_path):
    model = random_hf("llama_dynamic")
    with pytest.raises(ValueError, match="no module .* matches"):
        apply_lora(model, ["qproj"])
    with pytest.raises(ValueError, match="embed_tokens is a Embedding"):
        apply_lora(model, ["embed_tokens"])
    apply_lora(model, ["q_proj"])
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model, ["q_proj"])
    dora = get_peft_model(random_hf("llama_dynamic"), LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    dora.save_pretrained(tmp_path / "dora")
    with pytest.raises(ValueError, match="use_dora=True is not supported"):
        load_peft_adapter(random_hf("llama_dynamic"), tmp_path / "dora")
    _, lm = causal_lm(tmp_path)
    export_peft_adapter(model, tmp_path / "hf_paths")
    with pytest.raises(ValueError, match="not in CausalLM.*prefixes"):
        load_peft_adapter(lm, tmp_path / "hf_paths")
