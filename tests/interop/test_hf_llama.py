"""speechlm.interop.hf_llama against transformers: tiny random LlamaForCausalLM /
Qwen2ForCausalLM saved by `save_pretrained` give the same logits here (padded rows, real
positions compared; within 1e-4), what we save loads in `AutoModelForCausalLM` with the same
logits, a wrong rope theta is caught, and what CausalLM cannot compute is refused."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from interop.hf_llama_peer import MODELS, TRANSFORMERS_MAJOR, hf_positions, padded_batch, random_hf
from speechlm.decoders.causal_lm import CausalLM
from speechlm.interop.hf_llama import hf_config_to_kwargs

TOL = 1e-4


def hf_logits(hf, ids, mask):
    with torch.no_grad():
        return hf(input_ids=ids, attention_mask=mask.long(), position_ids=hf_positions(mask)).logits


def our_logits(lm, ids, mask):
    with torch.no_grad():
        return lm.forward_embeds(lm.embed(ids), mask)[0]


@pytest.mark.parametrize("name", list(MODELS))
def test_hf_checkpoint_gives_hf_logits_on_padded_rows(name, tmp_path):
    hf = random_hf(name)
    # the qwen2 model in shards (model.safetensors.index.json), the others in one file
    hf.save_pretrained(tmp_path, **({"max_shard_size": "40KB"} if name == "qwen2_linear" else {}))
    if name == "qwen2_linear":
        assert (tmp_path / "model.safetensors.index.json").exists()
    lm = CausalLM.from_hf(tmp_path)
    assert lm.config.tie_word_embeddings == hf.config.tie_word_embeddings
    assert (lm.lm_head.weight is lm.embed_tokens.weight) == hf.config.tie_word_embeddings
    # 24 positions: beyond the dynamic model's 16, so its NTK rescaling is exercised
    ids, mask = padded_batch(length=24)
    ref, ours = hf_logits(hf, ids, mask), our_logits(lm, ids, mask)
    assert (ours - ref)[mask].abs().max() < TOL
    # a left-padded row gives its unpadded logits (positions count real tokens only); not
    # under dynamic scaling, whose theta follows the batch's longest row (as in transformers)
    if name != "llama_dynamic":
        alone = our_logits(lm, ids[:1, 4:], mask[:1, 4:])
        assert (alone[0] - ours[0, 4:]).abs().max() < TOL


@pytest.mark.parametrize("name", list(MODELS))
def test_saved_directory_loads_in_transformers(name, tmp_path):
    hf = random_hf(name)
    hf.save_pretrained(tmp_path / "hf")
    lm = CausalLM.from_hf(tmp_path / "hf")
    lm.save_hf(tmp_path / "ours")
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors"]
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
    assert type(back) is type(hf)
    rope = "rope_parameters" if TRANSFORMERS_MAJOR >= 5 else "rope_scaling"
    assert getattr(back.config, rope) == getattr(hf.config, rope)
    assert back.config.tie_word_embeddings == hf.config.tie_word_embeddings
    for key, value in hf.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    ids, mask = padded_batch(length=20)
    assert (hf_logits(back, ids, mask) - our_logits(lm, ids, mask))[mask].abs().max() < TOL


def test_wrong_rope_theta_is_caught(tmp_path):
    """Planted fault: the same weights under another theta give clearly other logits."""
    hf = random_hf("llama3_tied")
    hf.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    if "rope_parameters" in config:  # transformers 5; 4 writes rope_theta at the top
        config["rope_parameters"]["rope_theta"] = 10000.0
    config["rope_theta"] = 10000.0
    (tmp_path / "config.json").write_text(json.dumps(config))
    ids, mask = padded_batch()
    wrong = our_logits(CausalLM.from_hf(tmp_path), ids, mask)
    assert (wrong - hf_logits(hf, ids, mask))[mask].abs().max() > 100 * TOL


def test_transformers4_config_spelling_reads_the_same():
    """transformers 4 wrote rope_theta and rope_scaling ({"type": ...}) at the top level."""
    new = {"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
           "num_hidden_layers": 1, "num_attention_heads": 2,
           "rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1000.0}}
    old = {**new, "rope_theta": 1000.0, "rope_scaling": {"type": "linear", "factor": 4.0}}
    del old["rope_parameters"]
    assert hf_config_to_kwargs(new) == hf_config_to_kwargs(old)
    assert hf_config_to_kwargs(new)["rope_scaling"] == {"rope_type": "linear", "factor": 4.0}


@pytest.mark.parametrize("change, message", [
    ({"rope_parameters": {"rope_type": "longrope", "rope_theta": 1.0}}, "'longrope' is not supported"),
    ({"mlp_bias": True}, "mlp_bias=True is not supported"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"model_type": "gpt2"}, "model_type 'gpt2'"),
])
def test_unsupported_configs_are_refused_by_name(change, message):
    config = {"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
              "num_hidden_layers": 1, "num_attention_heads": 2, **change}
    with pytest.raises(ValueError, match=message):
        hf_config_to_kwargs(config, "x/config.json")


def test_weights_that_do_not_fit_the_config_are_named(tmp_path):
    random_hf("qwen2_linear").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "intermediate_size": 100}))
    with pytest.raises(ValueError, match=r"layers.0.mlp.\w+_proj.weight has shape .*112.*the config gives .*100"):
        CausalLM.from_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(ValueError, match=r"missing \['layers.2"):
        CausalLM.from_hf(tmp_path)
