"""CausalLM's incremental protocol and loss against transformers: step-by-step decoding with
the KV cache (after a padded prompt, and after `select_state` reorders rows) equals one full
forward; the training loss equals LlamaForCausalLM's own loss on the same targets; greedy
decoding of 50 tokens by a plain loop over `step` equals `model.generate(do_sample=False)`;
`python -m speechlm.bin.train experiment=causal_lm` trains one and it saves in HF format."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from interop.hf_llama_peer import MODELS, VOCAB, padded_batch, random_hf
from speechlm.decoders.causal_lm import CausalLM

TOL = 1e-4


def load(name, tmp_path):
    hf = random_hf(name)
    hf.save_pretrained(tmp_path / name)
    return hf, CausalLM.from_hf(tmp_path / name)


@pytest.mark.parametrize("name", ["llama3_tied", "qwen2_linear"])
def test_steps_with_the_kv_cache_equal_one_full_forward(name, tmp_path):
    """(Dynamic NTK is left out: its theta follows the longest position of each call, so a
    cache's keys were rotated under other thetas than one full forward uses: as in transformers.)"""
    _, lm = load(name, tmp_path)
    prompt, prompt_mask = padded_batch(length=8)  # left-padded, right-padded (padding mid-sequence later), full
    generator = torch.Generator().manual_seed(2)
    more = torch.randint(3, VOCAB, (3, 5), generator=generator)
    ids = torch.cat([prompt, more], dim=1)
    mask = torch.cat([prompt_mask, torch.ones_like(more, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        full = lm.forward_embeds(lm.embed(ids), mask)[0].log_softmax(-1)
        logits, state = lm.forward_embeds(lm.embed(prompt), prompt_mask)
        assert (logits.log_softmax(-1) - full[:, :8])[prompt_mask].abs().max() < TOL
        assert state.positions.tolist() == prompt_mask.sum(1).tolist()
        for t in range(more.shape[1]):
            log_probs, state = lm.step(more[:, t], state)
            assert log_probs.dtype == torch.float32
            assert (log_probs - full[:, 8 + t]).abs().max() < TOL, t
        # beams: rows reordered and duplicated, then decoding goes on
        index = torch.tensor([2, 0, 0, 1])
        state = CausalLM.select_state(state, index)
        last = torch.randint(3, VOCAB, (4, 3), generator=generator)
        for t in range(last.shape[1]):
            log_probs, state = lm.step(last[:, t], state)
        ids2 = torch.cat([ids[index], last], dim=1)
        mask2 = torch.cat([mask[index], torch.ones_like(last, dtype=torch.bool)], dim=1)
        full2 = lm.forward_embeds(lm.embed(ids2), mask2)[0].log_softmax(-1)
    assert (log_probs - full2[:, -1]).abs().max() < TOL
    assert state.keys[0].shape == (4, lm.config.num_kv_heads, ids2.shape[1], lm.config.head_dim)


def test_loss_equals_transformers_loss_on_the_same_targets(tmp_path):
    """forward(batch): bos + tokens -> tokens + eos, mean NLL over real targets; transformers'
    loss with labels = the same sequence (padding -100) averages the same terms."""
    hf, lm = load("qwen2_linear", tmp_path)
    generator = torch.Generator().manual_seed(3)
    lens = torch.tensor([6, 3, 9])
    tokens = torch.randint(3, VOCAB, (3, 9), generator=generator)
    tokens[torch.arange(9) >= lens[:, None]] = -1  # collate's padding
    out = lm({"tokens": tokens, "token_lens": lens})
    seq = torch.zeros(3, 11, dtype=torch.long)
    labels = torch.full((3, 11), -100)
    for i, n in enumerate(lens.tolist()):
        row = torch.tensor([lm.sos, *tokens[i, :n].tolist(), lm.eos])
        seq[i, : n + 2] = row
        labels[i, : n + 2] = row
    with torch.no_grad():
        ref = hf(input_ids=seq, attention_mask=(labels != -100).long(), labels=labels).loss
    assert (lm.sos, lm.eos) == (1, 2)
    assert abs(out["loss"].item() - ref.item()) < 1e-5
    assert torch.isclose(out["ppl"], ref.exp())


def greedy(lm, ids, mask, new_tokens, banned):
    """The simplest loop over the protocol: prefill the padded prompt, then argmax and step,
    `banned` (eos) never chosen: what generate's min_new_tokens = max_new_tokens does."""
    logits, state = lm.forward_embeds(lm.embed(ids), mask)
    scores = logits[:, -1].float().log_softmax(-1)
    out = []
    for _ in range(new_tokens):
        token = scores.index_fill(1, torch.tensor([banned]), float("-inf")).argmax(-1)
        out.append(token)
        scores, state = lm.step(token, state)
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("name", list(MODELS))
def test_greedy_50_tokens_equal_transformers_generate(name, tmp_path):
    hf, lm = load(name, tmp_path)
    ids, mask = padded_batch(length=8, seed=4)
    ids, mask = torch.cat([ids[:1], ids[2:]]), torch.cat([mask[:1], mask[2:]])  # left-padded and full rows
    with torch.no_grad():
        # 50 tokens in every row: eos is suppressed (min_new_tokens) rather than ending rows early
        ref = hf.generate(input_ids=ids, attention_mask=mask.long(), do_sample=False, max_new_tokens=50,
                          min_new_tokens=50)[:, ids.shape[1]:]
        ours = greedy(lm, ids, mask, 50, banned=lm.eos)
    assert ref.shape == (2, 50)
    assert torch.equal(ours, ref)
    assert len(set(ref[0].tolist())) > 3  # a real sequence, not one repeated token


TINY = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=2", "model.num_heads=4",
        "model.num_kv_heads=2", "data.max_tokens=300", "optim.optimizer.lr=3e-3", "optim.scheduler.warmup_steps=10",
        "trainer.enable_progress_bar=false"]


def test_train_causal_lm_experiment_learns_and_saves_for_transformers(tmp_path):
    from speechlm.tokenizers import WordTokenizer
    from speechlm.train.pretrained import load_pretrained

    digits = "zero one two three four five six seven eight nine".split()
    for name, n in (("train", 300), ("valid", 40)):
        rng = torch.Generator().manual_seed(len(name))
        lines = []
        for i in range(n):
            start = int(torch.randint(10, (1,), generator=rng))
            length = int(torch.randint(2, 7, (1,), generator=rng))
            lines.append(f"{name}{i:04d} " + " ".join(digits[(start + k) % 10] for k in range(length)))
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    WordTokenizer.train([" ".join(digits)]).save(tmp_path / "tok")
    cmd = [sys.executable, "-m", "speechlm.bin.train", "experiment=causal_lm", f"data.train_text={tmp_path / 'train'}",
           f"data.valid_text={tmp_path / 'valid'}", f"tokenizer_dir={tmp_path / 'tok'}", f"exp_dir={tmp_path / 'exp'}",
           "trainer.max_epochs=3", *TINY]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    model, tokenizer, _ = load_pretrained(tmp_path / "exp" / "checkpoints" / "last.ckpt")
    assert isinstance(model, CausalLM)
    model.eval()
    grammatical = torch.tensor([tokenizer.encode("three four five six")])
    reversed_ = torch.tensor([tokenizer.encode("six five four three")])
    # it learnt "each word is followed by the next digit"
    assert model.score(grammatical, torch.tensor([4])) > model.score(reversed_, torch.tensor([4])) + 2.0
    ids = torch.cat([torch.tensor([[model.sos]]), grammatical], dim=1)
    model.save_hf(tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        assert (hf(input_ids=ids).logits - model.logits(ids)).abs().max() < TOL


def test_audio_parts_are_refused():
    """conf/train.yaml composes frontend/specaug/normalize into every model node; a text LM
    given one says which experiment nulls them."""
    with pytest.raises(ValueError, match="reads text only.*causal_lm"):
        CausalLM(10, frontend={"n_mels": 80})
