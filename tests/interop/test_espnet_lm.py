"""ESPnet language models load here with identical scores.

Each ESPnet LM is built the way ESPnet builds one (`LMTask.build_model` from the config
namespace its `lm_train.py` parses), with random weights, and saved as its experiment dir
holds it (config.yaml + valid.loss.ave.pth). `load_language_model` loads that pair, and on
the same token sequences:
- whole-sequence log-likelihood (eos included) == -ESPnetLanguageModel.nll summed;
- step-by-step next-token log-probabilities over the whole vocabulary == ESPnet's
  `batch_score` (what its beam search calls), and `score` (one hypothesis) for the RNN LMs,
including after beams are reordered (`select_state` vs ESPnet given the reordered prefixes).
And files that would run code are refused (pickle payload in the .pth, Python tag in or
a `_target_` node in config.yaml)."""
from __future__ import annotations

import argparse

import pytest
import torch
import yaml

from speechlm.models.lm import LSTMLM, TransformerLM, load_language_model

TOKENS = ["<blank>", "<unk>", *"abcdefghijklm", "<sos/eos>"]
V = len(TOKENS)
TOL = 1e-5

LMS = {
    "transformer": ("transformer", dict(embed_unit=24, att_unit=32, head=4, unit=48, layer=2), TransformerLM),
    "transformer-sinusoidal": ("transformer", dict(pos_enc="sinusoidal", embed_unit=24, att_unit=32, head=2,
                                                   unit=48, layer=2, dropout_rate=0.2), TransformerLM),
    "lstm": ("seq_rnn", dict(unit=32, nlayers=2, dropout_rate=0.2), LSTMLM),
    "gru": ("seq_rnn", dict(unit=24, nhid=32, nlayers=1, rnn_type="gru"), LSTMLM),
    "lstm-tied": ("seq_rnn", dict(unit=32, nlayers=1, tie_weights=True), LSTMLM),
}


def espnet_lm_dir(tmp_path, lm: str, lm_conf: dict, seed: int = 0):
    """(ESPnet's model in eval mode, path of the .pth) of an ESPnet LM experiment dir."""
    from espnet2.tasks.lm import LMTask

    config = dict(token_list=list(TOKENS), token_type="char", lm=lm, lm_conf=dict(lm_conf), model="lm",
                  model_conf=dict(ignore_id=0), init=None, bpemodel=None, non_linguistic_symbols=None,
                  optim="adam", optim_conf=dict(lr=1e-3), batch_type="folded", max_epoch=25)
    torch.manual_seed(seed)
    ref = LMTask.build_model(argparse.Namespace(**config)).eval()
    with torch.no_grad():  # random weights, but far from uniform outputs
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save(ref.state_dict(), tmp_path / "valid.loss.ave.pth")
    return ref, tmp_path / "valid.loss.ave.pth"


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([7, 4, 1, 5])
    tokens = torch.randint(2, V - 1, (len(lens), int(lens.max())), generator=g)
    return tokens.masked_fill(torch.arange(tokens.shape[1]) >= lens[:, None], 0), lens  # ESPnet pads with 0


@pytest.mark.parametrize("name", list(LMS))
def test_espnet_lm_scores_match(tmp_path, name):
    lm, conf, cls = LMS[name]
    ref, pth = espnet_lm_dir(tmp_path, lm, conf)
    ours, tokenizer = load_language_model(pth)
    assert type(ours) is cls and not ours.training
    assert ours.sos == ours.eos == V - 1 and ours.vocab_size == V
    assert tokenizer["tokens"] == TOKENS  # the char tokenizer of config.yaml's token_list
    tokens, lens = batch()
    with torch.no_grad():
        nll, _ = ref.nll(tokens, lens)
        ours_total = ours.score(tokens, lens)
    err = (ours_total + nll.sum(1)).abs().max().item()
    assert err < TOL, f"whole-sequence log-likelihood differs by {err:.2e}"

    # step by step over all rows at once; the prefixes are ESPnet's `ys` (sos first)
    ys = torch.full((len(lens), 1), V - 1)
    ref_states = [None] * len(lens)
    state = ours.init_state(len(lens), "cpu")
    worst = 0.0
    with torch.no_grad():
        for t in range(tokens.shape[1] + 1):
            ref_logp, ref_states = ref.lm.batch_score(ys, ref_states, None)
            logp, state = ours.step(ys[:, -1], state)
            worst = max(worst, (logp - ref_logp).abs().max().item())
            if t == 2:  # beams reordered (one dropped, one duplicated), as a beam search does
                index = torch.tensor([2, 0, 0, 3])
                state = ours.select_state(state, index)
                ys, tokens = ys[index], tokens[index]
                ref_states = [ref_states[i] for i in index.tolist()]
            if t < tokens.shape[1]:
                ys = torch.cat([ys, tokens[:, t : t + 1].clamp(min=2)], dim=1)
    assert worst < TOL, f"step scores differ from ESPnet's batch_score by {worst:.2e}"

    if lm == "seq_rnn":  # ESPnet's one-hypothesis `score`, the non-batched beam search's
        ref_state, state = None, ours.init_state(1, "cpu")
        prefix = torch.tensor([V - 1])
        with torch.no_grad():
            for token in [5, 3, 9, 2]:
                ref_logp, ref_state = ref.lm.score(prefix, ref_state, None)
                logp, state = ours.step(prefix[-1:], state)
                assert (logp[0] - ref_logp).abs().max().item() < TOL
                prefix = torch.cat([prefix, torch.tensor([token])])


def test_espnet_lm_options_refused_by_name(tmp_path):
    from speechlm.interop.espnet_lm import espnet_lm_model_config

    base = dict(token_list=TOKENS, lm="transformer", lm_conf={})
    with pytest.raises(ValueError, match="lm: 'transformer_opt' is not supported"):
        espnet_lm_model_config({**base, "lm": "transformer_opt"})
    with pytest.raises(ValueError, match="lm_conf qk_norm: not an option"):
        espnet_lm_model_config({**base, "lm_conf": {"qk_norm": True}})
    with pytest.raises(ValueError, match="model: 'lm_multitask'"):
        espnet_lm_model_config({**base, "model": "lm_multitask"})
    assert espnet_lm_model_config({**base, "lm": "seq_rnn", "lm_conf": {"rnn_type": "gru"}})["rnn_type"] == "gru"


# --- files that would run code -------------------------------------------------------

def _lm_config(**lm_conf) -> dict:
    return dict(token_list=TOKENS, token_type="char", lm="seq_rnn", lm_conf=dict(unit=8, nlayers=1, **lm_conf))


def test_pickle_payload_in_espnet_lm_pth_is_refused(tmp_path):
    from test_untrusted_files import Payload

    marker = tmp_path / "ran"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(_lm_config()))
    torch.save({"lm.encoder.weight": Payload(marker)}, tmp_path / "valid.loss.ave.pth")
    with pytest.raises(ValueError, match="refused"):
        load_language_model(tmp_path / "valid.loss.ave.pth")
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["python-tag", "target-node"])
def test_espnet_lm_config_naming_code_is_refused(tmp_path, kind):
    from test_untrusted_files import pipe_node, python_tag

    marker = tmp_path / "ran"
    if kind == "python-tag":
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(_lm_config()) + f"extra: {python_tag(marker)}\n")
    else:
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(_lm_config(nhid=pipe_node(marker))))
    torch.save({}, tmp_path / "valid.loss.ave.pth")
    with pytest.raises(ValueError, match="config.yaml"):
        load_language_model(tmp_path / "valid.loss.ave.pth")
    assert not marker.exists()


def test_pickle_payload_in_speechlm_lm_checkpoint_is_refused(tmp_path):
    from test_untrusted_files import Payload

    marker = tmp_path / "ran"
    torch.save({"state_dict": {"model.decoder.weight": Payload(marker)}, "speechlm": {}}, tmp_path / "lm.ckpt")
    with pytest.raises(ValueError, match="refused"):
        load_language_model(tmp_path / "lm.ckpt")
    assert not marker.exists()
