"""Instruction tuning of a text LM (`data.loss_on=assistant`): the loss is on the assistant
turns of chat-formatted lines only (and on every token of plain lines), as TRL's
completion-only collator; checked against a hand-computed NLL."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from speechlm.decoders.causal_lm import CausalLM
from speechlm.tokenizers.chat_template import CHATML_INLINE
from speechlm.tokenizers.hf_train import DEFAULT_SPECIAL_TOKENS, train_hf_tokenizer
from speechlm.train.text_data_module import TextDataset, assistant_mask, assistant_turn_ids, collate_tokens

LINES = ["one two three", "<|im_start|>user one two Which digit comes last?<|im_end|><|im_start|>assistant two<|im_end|>",
         "<|im_start|>user four What is said?<|im_end|><|im_start|>assistant four<|im_end|>"
         "<|im_start|>user five<|im_end|><|im_start|>assistant five five<|im_end|>"]


def test_assistant_mask():
    assert assistant_mask(np.array([1, 7, 8, 3, 4, 9, 2, 7, 8, 5, 9, 6]), [7, 8], 9).tolist() == \
        [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0]
    assert assistant_mask(np.array([4, 5]), [7, 8], 9).all()  # plain text: every token
    assert assistant_mask(np.array([7, 8, 3, 4]), [7, 8], 9).tolist() == [0, 0, 1, 1]  # unterminated turn


def test_loss_on_assistant_turns_only(tmp_path):
    tok = train_hf_tokenizer([line.replace("<|im_start|>", " ").replace("<|im_end|>", " ") for line in LINES] * 5,
                             300, DEFAULT_SPECIAL_TOKENS, CHATML_INLINE)
    opening, end = assistant_turn_ids(tok)
    assert opening[0] == tok.special_ids["start_of_turn"] and tok.decode(opening[1:]).strip() == "assistant"
    (tmp_path / "lines.txt").write_text("".join(line + "\n" for line in LINES))
    data = TextDataset(tmp_path / "lines.txt", tok, "plain", loss_on="assistant")
    batch = collate_tokens([data[i] for i in range(len(data))])
    ids = tok.special_ids
    torch.manual_seed(0)
    lm = CausalLM(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                  special_ids=ids).eval()
    with torch.no_grad():
        loss = lm(batch)["loss"]
        total, count = 0.0, 0
        for row in range(3):
            tokens = batch["tokens"][row, : int(batch["token_lens"][row])].tolist()
            logits = lm.logits(torch.tensor([[ids["sos"]] + tokens]))[0]
            targets = tokens + [ids["eos"]]
            keep = assistant_mask(np.array(tokens), opening, end).tolist() + [True]
            for t, (target, k) in enumerate(zip(targets, keep)):
                if k:
                    total += float(F.cross_entropy(logits[t], torch.tensor(target)))
                    count += 1
        n = {text: len(tok.encode(text)) for text in ("one two three", "two", "four", "five five")}
        # plain line + eos; "two <|im_end|>" + eos; two turns + eos
        assert count == n["one two three"] + 1 + n["two"] + 2 + n["four"] + 1 + n["five five"] + 2
        assert loss == pytest.approx(total / count, abs=1e-5)
        del batch["loss_mask"]
        assert lm(batch)["loss"] != pytest.approx(total / count, abs=1e-3)  # without the mask: every token
