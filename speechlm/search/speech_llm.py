"""Decoding a speech-LLM (`speechlm.models.speech_llm`): every utterance gets the same
instruction, put into the LM's chat template with the audio placeholder where the speech
goes; the LM's answer is generated from the spliced prompt (batched over utterances) by
`speechlm.search.causal_lm_generate`.

    python -m speechlm.bin.decode checkpoint=exp/speech_llm/model.avg.ckpt data_dir=data/test \
        search.instruction="How many digits?" ref_table=qa_count out_dir=...

The answer's text is the hypothesis (decode writes it as any other); `ref_table` names the
data dir's table to score it against.
"""
from __future__ import annotations

import torch

from speechlm.data.instructions import prompt_ids
from speechlm.encoders.base import EncoderOutput
from speechlm.search.causal_lm_generate import CausalLMGenerate


class SpeechLLMSearch:
    """`search(model, enc)` -> each utterance's answer token ids (end of turn left out)."""

    def __init__(self, tokenizer, instruction: str = "Transcribe the audio.", method: str = "greedy",
                 beam_size: int = 1, max_new_tokens: int = 64, length_penalty: float = 1.0,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                 system: str | None = None):
        self.prompt = prompt_ids(tokenizer, instruction, system=system)
        self.stop_ids = stop_ids(tokenizer)
        self.generate = CausalLMGenerate(method=method, beam_size=beam_size, max_new_tokens=max_new_tokens,
                                         length_penalty=length_penalty, temperature=temperature, top_k=top_k,
                                         top_p=top_p, eos_ids=self.stop_ids, seed=seed)

    @torch.no_grad()
    def __call__(self, model, enc: EncoderOutput) -> list[list[int]]:
        speech, speech_lens = model.speech_embeddings(enc)
        b = speech.shape[0]
        prompt = torch.tensor(self.prompt, dtype=torch.long, device=speech.device).expand(b, -1)
        prompt_lens = torch.full((b,), len(self.prompt), dtype=torch.long, device=speech.device)
        embeds, mask, _ = model.splice(prompt, prompt_lens, speech, speech_lens, left_pad=True)
        return [[t for t in row if t not in self.stop_ids] for row in self.generate(model.lm, embeds, mask)]


def stop_ids(tokenizer) -> list[int]:
    """Ids that end an answer: the end-of-turn token of a chat template, and eos."""
    ids = tokenizer.special_ids
    return sorted({ids[role] for role in ("end_of_turn", "eos") if role in ids})
