"""SpeechLLMSearch (speechlm.search.speech_llm) and InstructionTargets (speechlm.data.instructions):
the prompt is the tokenizer's chat template with the audio placeholder; batched generation over
utterances of different lengths (left-padded spliced prompts) gives each utterance the answer it
gets alone, decoded by hand with full forwards (no KV cache)."""
from __future__ import annotations

import functools

import pytest
import torch

from speechlm.data.collate import collate_audio
from speechlm.data.instructions import InstructionTargets, answer_ids, prompt_ids
from speechlm.decoders.causal_lm import CausalLM
from speechlm.models.adapters import FrameStackMLP
from speechlm.models.speech_llm import SpeechLLM
from speechlm.search.speech_llm import SpeechLLMSearch
from speechlm.tokenizers.chat_template import CHATML_INLINE
from speechlm.tokenizers.hf_train import train_hf_tokenizer
from tests.fixtures import tiny_ctc_checkpoint

SPECIALS = {"unk": "<unk>", "sos": "<s>", "eos": "</s>", "pad": "<pad>", "audio": "<|audio|>",
            "start_of_turn": "<|im_start|>", "end_of_turn": "<|im_end|>"}
LINES = ["one two three What is the sum of the digits? 6", "four five How many digits are spoken? 2",
         "Transcribe the audio. seven eight nine zero", "Which digit comes last? three"] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_hf_tokenizer(LINES, vocab_size=330, special_tokens=SPECIALS, chat_template=CHATML_INLINE)


@pytest.fixture(scope="module")
def model(tokenizer, tmp_path_factory) -> SpeechLLM:
    root = tmp_path_factory.mktemp("speech_llm_search")
    torch.manual_seed(0)
    ids = tokenizer.special_ids
    lm = CausalLM(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                  num_kv_heads=2, bos_id=ids["sos"], eos_id=ids["eos"], pad_id=ids["pad"])
    with torch.no_grad():  # make the stop token likely somewhere, so some answers end early
        lm.lm_head.weight[ids["end_of_turn"]] *= 4
    torch.manual_seed(1)
    return SpeechLLM(encoder_checkpoint=str(tiny_ctc_checkpoint(root / "asr.ckpt")),
                     adapter=functools.partial(FrameStackMLP, stack=2), lm=CausalLM.from_hf(lm.save_hf(root / "lm")),
                     audio_token_id=ids["audio"],
                     lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}).eval()


def audio_batch(seconds=(0.5, 1.1, 0.8, 0.6)):
    g = torch.Generator().manual_seed(3)
    return collate_audio([{"id": f"u{i}", "audio": torch.randn(int(s * 16000), generator=g) * 0.1}
                          for i, s in enumerate(seconds)])


def greedy_by_hand(model: SpeechLLM, prompt: list[int], enc, row: int, stop: set[int], max_new: int) -> list[int]:
    n = int(enc.lengths[row])
    speech, lens = model.speech_embeddings(type(enc)(enc.output[row : row + 1, :n], enc.lengths[row : row + 1], {}))
    k = prompt.index(model.audio_token_id)
    embed = model.lm.embed
    seq = torch.cat([embed(torch.tensor([prompt[:k]]))[0], speech[0, : int(lens[0])],
                     embed(torch.tensor([prompt[k + 1:]]))[0]])
    out = []
    for _ in range(max_new):
        token = int(model.lm.forward_embeds(seq[None])[0][0, -1].argmax())
        if token in stop:
            break
        out.append(token)
        seq = torch.cat([seq, embed(torch.tensor([[token]]))[0]])
    return out


def test_prompt_is_the_chat_template_with_one_audio_token(tokenizer):
    ids = prompt_ids(tokenizer, "How many digits are spoken?")
    assert ids == [tokenizer.special_ids["sos"]] + tokenizer.apply_chat_template(
        [{"role": "user", "content": "<|audio|> How many digits are spoken?"}], add_generation_prompt=True)
    bos_template = train_hf_tokenizer(LINES, vocab_size=330, special_tokens=SPECIALS,
                                      chat_template="{{ bos_token }}" + CHATML_INLINE)
    assert prompt_ids(bos_template, "How many digits are spoken?") == ids  # no second bos
    assert ids.count(tokenizer.special_ids["audio"]) == 1
    assert answer_ids(tokenizer, "two")[-1] == tokenizer.special_ids["end_of_turn"]
    with pytest.raises(ValueError, match="2 audio tokens"):
        prompt_ids(tokenizer, "<|audio|> again?")


def test_batched_generation_equals_each_utterance_alone(model, tokenizer):
    search = SpeechLLMSearch(tokenizer, instruction="How many digits are spoken?", max_new_tokens=6)
    batch = audio_batch()
    with torch.no_grad():
        enc = model.encode(batch["audio"], batch["audio_lens"])
        hyps = search(model, enc)
        prompt = prompt_ids(tokenizer, "How many digits are spoken?")
        expected = [greedy_by_hand(model, prompt, enc, b, set(search.stop_ids), 6) for b in range(4)]
    assert hyps == expected
    assert len({len(h) for h in hyps}) > 1 or any(len(h) < 6 for h in hyps)  # some stop early: eos handling bites


def test_beam_search_batched_equals_alone(model, tokenizer):
    search = SpeechLLMSearch(tokenizer, instruction="Transcribe the audio.", method="beam", beam_size=3,
                             max_new_tokens=5)
    batch = audio_batch()
    with torch.no_grad():
        enc = model.encode(batch["audio"], batch["audio_lens"])
        together = search(model, enc)
        alone = [search(model, type(enc)(enc.output[b : b + 1, : int(enc.lengths[b])], enc.lengths[b : b + 1], {}))[0]
                 for b in range(4)]
    assert together == alone


def test_instruction_targets_draw_tasks_by_weight(tokenizer):
    tasks = {"transcribe": {"table": "text", "instructions": ["Transcribe the audio.", "What is said?"]},
             "qa_count": {"table": "qa_count", "instruction": "How many digits are spoken?", "weight": 3},
             "never": {"table": "qa_last", "instructions": ["Which digit comes last?"], "weight": 0}}
    targets = InstructionTargets(tasks, tokenizer=tokenizer)
    torch.manual_seed(0)
    drawn = []
    for i in range(400):
        item = targets({"id": f"u{i}", "text": "one two", "qa_count": torch.tensor([2]), "qa_last": "two"})
        drawn.append(item["task"])
        answer = "one two" if item["task"] == "transcribe" else "2"
        assert item["answer_ids"].tolist() == answer_ids(tokenizer, answer)
        assert item["prompt_ids"].tolist().count(tokenizer.special_ids["audio"]) == 1
    assert "never" not in drawn and 0.68 < drawn.count("qa_count") / len(drawn) < 0.82
    # an item lacking a table is only asked what it has; one with none of them is named
    assert targets({"id": "x", "text": "one"})["task"] == "transcribe"
    with pytest.raises(ValueError, match="utterance 'y' has none of the task tables"):
        InstructionTargets({"q": {"table": "qa_sum", "instructions": ["Sum?"]}}, tokenizer=tokenizer)({"id": "y"})
    with pytest.raises(ValueError, match="task 'bad': needs `table`"):
        InstructionTargets({"bad": {"instructions": ["x"]}}, tokenizer=tokenizer)
