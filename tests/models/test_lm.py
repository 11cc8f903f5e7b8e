"""Language models (speechlm.models.lm) and their text data (speechlm.train.text_data_module):
the loss is the mean NLL of `w1 .. wn eos` given `sos w1 .. wn`; the incremental protocol
gives the teacher-forced scores; select_state reorders beams; bad text lines are counted,
listed, or stop the run naming file and line."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from speechlm.models.lm import LSTMLM, TransformerLM
from speechlm.tokenizers import WordTokenizer
from speechlm.train.text_data_module import TextDataModule, TextDataset, collate_tokens

V = 11
MODELS = {
    "transformer": lambda: TransformerLM(V, {"sos": 9, "eos": 10}, embed_unit=8, att_unit=16, head=2, unit=24, layer=2),
    "transformer-sinusoidal": lambda: TransformerLM(V, pos_enc="sinusoidal", embed_unit=8, att_unit=16, unit=24, layer=1),
    "lstm": lambda: LSTMLM(V, unit=16, nlayers=2),
    "gru": lambda: LSTMLM(V, unit=16, nlayers=1, rnn_type="gru"),
}


def padded(pad: int = -1):
    lens = torch.tensor([5, 2, 3])
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 9, (3, 5), generator=g)
    return tokens.masked_fill(torch.arange(5) >= lens[:, None], pad), lens


def step_scores(model, rows: list[list[int]]) -> torch.Tensor:
    """log p(row + eos) of each row, summed from `step` (all rows advanced together)."""
    state = model.init_state(len(rows), "cpu")
    prev = torch.full((len(rows),), model.sos)
    total = torch.zeros(len(rows))
    for t in range(max(map(len, rows)) + 1):
        log_probs, state = model.step(prev, state)
        target = torch.tensor([row[t] if t < len(row) else model.eos for row in rows])
        live = torch.tensor([t <= len(row) for row in rows])
        total += torch.where(live, log_probs.gather(1, target[:, None])[:, 0], torch.zeros(()))
        prev = torch.tensor([row[t] if t < len(row) else 0 for row in rows])
    return total


@pytest.mark.parametrize("name", list(MODELS))
def test_loss_is_mean_nll_with_eos_and_steps_match_forward(name):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    tokens, lens = padded()
    out = model({"tokens": tokens, "token_lens": lens})
    # the loss by hand: inputs sos + w, targets w + eos, real positions only
    logits = model.logits(torch.cat([torch.full((3, 1), model.sos), tokens.clamp(min=0)], 1))
    nll, n = 0.0, 0
    for b, length in enumerate(lens.tolist()):
        targets = torch.tensor(tokens[b, :length].tolist() + [model.eos])
        nll = nll + F.cross_entropy(logits[b, : length + 1], targets, reduction="sum")
        n += length + 1
    assert torch.allclose(out["loss"], nll / n, atol=1e-6)
    assert torch.allclose(out["ppl"], (nll / n).exp(), atol=1e-4) and 0 <= out["acc"] <= 1
    # padding's value does not matter
    assert torch.allclose(model({"tokens": padded(pad=3)[0], "token_lens": lens})["loss"], out["loss"])
    rows = [tokens[b, :n].tolist() for b, n in enumerate(lens.tolist())]
    assert torch.allclose(step_scores(model, rows), model.score(tokens, lens), atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_select_state_reorders_beams(name):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    prefixes = torch.tensor([[1, 2], [3, 4], [5, 6]])
    state = model.init_state(3, "cpu")
    for token in torch.cat([torch.full((3, 1), model.sos), prefixes], 1).T:
        _, state = model.step(token, state)
    index = torch.tensor([2, 2, 0])  # beam 1 dropped, beam 2 kept twice
    after, _ = model.step(torch.tensor([7, 8, 7]), model.select_state(state, index))
    fresh = model.init_state(3, "cpu")
    for token in torch.cat([torch.full((3, 1), model.sos), prefixes[index], torch.tensor([[7], [8], [7]])], 1).T:
        expected, fresh = model.step(token, fresh)
    assert torch.allclose(after, expected, atol=1e-5)
    assert not torch.allclose(after[0], after[1])  # the same history, different last tokens


def test_audio_parts_are_refused():
    with pytest.raises(ValueError, match="experiment=lm_transformer"):
        TransformerLM(V, frontend={"n_mels": 80})
    with pytest.raises(ValueError, match="model.specaug"):
        LSTMLM(V, specaug=torch.nn.Identity())


# --- text data -------------------------------------------------------------------------

@pytest.fixture
def tokenizer():
    return WordTokenizer.train(["one two three four five"])


def test_bad_lines_are_counted_listed_or_an_error(tmp_path, tokenizer):
    text = tmp_path / "text"
    text.write_text("u1 one two\nu2\nu3 zebra zebra\n\nu4 three four five\n")
    data = TextDataset(text, tokenizer)
    assert data.ids == ["u1", "u4"] and data.total_lines == 5
    assert [reason for _, reason in data.dropped] == ["no token (empty line)", "only unknown tokens",
                                                      "no token (empty line)"]
    assert [where for where, _ in data.dropped] == [f"{text}:2 u2", f"{text}:3 u3", f"{text}:4"]
    with pytest.raises(ValueError, match=rf"{text}:2: no token"):
        TextDataset(text, tokenizer, bad_lines="error")
    plain = tmp_path / "plain.txt"
    plain.write_text("one two\n\nfive\n")
    data = TextDataset(plain, tokenizer, text_format="plain")
    assert data.ids == [f"{plain}:1", f"{plain}:3"] and len(data.dropped) == 1
    latin1 = tmp_path / "latin1"
    latin1.write_bytes("u1 one\nu2 caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{latin1}:2: not UTF-8"):
        TextDataset(latin1, tokenizer)


def test_batches_bounded_by_tokens_cover_every_line_once(tmp_path, tokenizer):
    tokenizer.save(tmp_path / "tok")
    words = "one two three four five".split()
    lines = [f"u{i:03d} " + " ".join(words[: 1 + i % 5]) for i in range(60)]
    (tmp_path / "text").write_text("\n".join(lines) + "\n\n")
    dm = TextDataModule(tmp_path / "text", tmp_path / "text", tmp_path / "tok", max_tokens=12, num_buckets=3)
    dm.setup()
    seen = []
    for batch in dm.train_dataloader():
        assert batch["tokens"].shape[0] * (int(batch["token_lens"].max()) + 1) <= 12
        assert (batch["tokens"][torch.arange(batch["tokens"].shape[1]) >= batch["token_lens"][:, None]] == -1).all()
        seen += batch["ids"]
    assert sorted(seen) == sorted(line.split()[0] for line in lines)
    assert collate_tokens([{"id": "a", "tokens": torch.tensor([2, 3])}])["token_lens"].tolist() == [2]


def _module(tmp_path, tokenizer, n: int = 50) -> TextDataModule:
    tokenizer.save(tmp_path / "tok")
    words = "one two three four five".split()
    (tmp_path / "text").write_text("".join(f"u{i:03d} " + " ".join(words[: 1 + i % 5]) + "\n" for i in range(n)))
    dm = TextDataModule(tmp_path / "text", tmp_path / "text", tmp_path / "tok", max_tokens=10, num_buckets=2)
    dm.setup()
    return dm


def test_ranks_get_disjoint_equal_shards_and_a_loader_resumes_mid_epoch(tmp_path, tokenizer):
    from types import SimpleNamespace

    dm = _module(tmp_path, tokenizer)
    shards = []
    for rank in (0, 1):  # what a 2-process DDP run's data modules see
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2, is_global_zero=rank == 0)
        shards.append([b["ids"] for b in dm.train_dataloader()])
    assert len(shards[0]) == len(shards[1])
    ids = [i for shard in shards for b in shard for i in b]
    assert sorted(ids) == sorted(dm.train_set.ids)  # each line once, on one rank
    dm.trainer = None
    loader = dm.train_dataloader()
    whole = [b["ids"] for b in loader]
    it = iter(loader)
    next(it), next(it), next(it)
    state = loader.state_dict()  # as a checkpoint written after 3 batches holds it
    resumed = dm.train_dataloader()
    resumed.load_state_dict(state)
    assert [b["ids"] for b in resumed] == whole[3:]
