"""Speech-LLM (SALMONN, Qwen-Audio, LTU-AS): a speech encoder's output, shortened and
projected by an adapter, is spliced into a decoder-only LM's prompt as embeddings, and the
LM answers the prompt's instruction.

    prompt   <|im_start|>user\\n<|audio|> How many digits?<|im_end|>\\n<|im_start|>assistant\\n
    input    embed(prompt[:k]) + adapter(encoder(audio)) + embed(prompt[k+1:]) + embed(answer)
    loss     next-token cross-entropy on the answer tokens only (answer + end of turn)

The parts:
- `encoder_checkpoint`: any speechlm checkpoint (CTC/attention, transducer, multitask,
  SSL-pretrained) or an OpenAI Whisper `.pt`; its model's own `encode` (frontend,
  normalisation, encoder) makes the speech features. Frozen (and in eval mode) unless
  `train_encoder`, which trains its `encoder` module (the frontend stays frozen).
- `adapter`: a factory (Hydra `_partial_: true`) called with `input_size` (the encoder's
  output size) and `output_size` (the LM's width): `speechlm.models.adapters`.
- `lm`: a `speechlm.decoders.causal_lm.CausalLM`, usually `CausalLM.from_hf(path)` (a
  LLaMA / Qwen2 checkpoint); frozen, with LoRA adapters (`lora`: {r, alpha, dropout,
  target_modules}; `speechlm.nn.lora`) or none (`lora: null`).

Checkpoints hold the trained weights only (adapter, LoRA, and the encoder when trained),
plus the references: the encoder checkpoint's path and the LM's path are in the config, and
the model is rebuilt from them on load. `reference_fingerprint` (saved) is a checksum of the
frozen weights each reference gave at training time; loading refuses a checkpoint whose
references now hold other weights, naming them.

Batch keys (`speechlm.data.instructions`): `audio` (B, T), `audio_lens`, `prompt_ids`
(B, P) with one `audio_token_id` each, `prompt_ids_lens`, `answer_ids` (B, A), `answer_ids_lens`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechlm.encoders.base import EncoderOutput

IGNORE = -100


def _fingerprint(tensors: Sequence[Tensor]) -> Tensor:
    """A float64 checksum of weights: (sum, sum of squares, element count)."""
    total = torch.zeros(3, dtype=torch.float64)
    for t in tensors:
        t = t.detach().to(torch.float64)
        total += torch.stack([t.sum(), (t * t).sum(), torch.tensor(float(t.numel()), dtype=torch.float64)])
    return total


class SpeechLLM(nn.Module):
    """`forward(batch)` -> {loss, acc, ppl}; `encode(audio, lengths)` -> the adapter's
    output; `prompt_embeddings(...)` for generation (`speechlm.search.speech_llm`)."""

    checkpoint_criterion = ("valid/loss", "min")
    default_search = {"_target_": "speechlm.search.speech_llm.SpeechLLMSearch"}

    def __init__(
        self,
        encoder_checkpoint: str,
        adapter: Callable[..., nn.Module],
        lm: nn.Module,
        audio_token_id: int,
        lora: dict[str, Any] | None = None,
        train_encoder: bool = False,
        frontend: Any = None,
        normalize: Any = None,
        specaug: Any = None,
    ):
        super().__init__()
        if frontend is not None or normalize is not None:
            raise ValueError("SpeechLLM takes its frontend and normalisation from encoder_checkpoint: "
                             "set model.frontend and model.normalize to null (experiment=speech_llm does)")
        if specaug is not None:
            raise ValueError("SpeechLLM: model.specaug must be null (the encoder checkpoint's model applies its "
                             "own SpecAugment when train_encoder is set)")
        from speechlm.train.pretrained import load_pretrained, model_sample_rate  # (it imports models.build)

        speech, _, speech_config = load_pretrained(encoder_checkpoint)
        self.encoder_checkpoint = str(encoder_checkpoint)
        self.sample_rate = model_sample_rate(speech, speech_config)  # the audio the encoder takes
        self.speech = speech
        self.lm = lm
        self.train_encoder = bool(train_encoder)
        self.audio_token_id = int(audio_token_id)
        for p in [*self.speech.parameters(), *self.lm.parameters()]:
            p.requires_grad_(False)
        computed = torch.stack([_fingerprint(list(self.speech.state_dict().values())),
                                _fingerprint(list(self.lm.state_dict().values()))])
        self.register_buffer("reference_fingerprint", computed.clone())
        self._computed_fingerprint = computed
        if self.train_encoder:
            for p in self.speech.encoder.parameters():
                p.requires_grad_(True)
        enc_size = self.speech.encoder.output_size()
        lm_size = self.lm.embed(torch.zeros(1, 1, dtype=torch.long)).shape[-1]
        self.adapter = adapter(input_size=enc_size, output_size=lm_size)
        self.lora_paths: list[str] = []
        if lora:
            from speechlm.nn.lora import apply_lora

            self.lora_paths = apply_lora(self.lm, **dict(lora))
        self.register_state_dict_post_hook(SpeechLLM._drop_references)
        self.register_load_state_dict_pre_hook(SpeechLLM._check_references)
        self.register_load_state_dict_post_hook(SpeechLLM._allow_missing_references)

    # -- checkpoints: trained weights only -------------------------------------------------
    def is_reference(self, key: str) -> bool:
        """Whether a state_dict key (relative to this module) comes from a reference, not
        from the checkpoint: frozen LM weights, and the speech model's unless trained."""
        if key.startswith("lm."):
            return not self._trainable(key)
        if key.startswith("speech."):
            return not (self.train_encoder and key.startswith("speech.encoder."))
        return False

    def _trainable(self, key: str) -> bool:
        try:
            return self.get_parameter(key).requires_grad
        except AttributeError:  # a buffer
            return False

    @staticmethod
    def _drop_references(module: SpeechLLM, state_dict: dict, prefix: str, local_metadata: dict) -> None:
        for key in [k for k in state_dict if k.startswith(prefix) and module.is_reference(k[len(prefix):])]:
            del state_dict[key]

    @staticmethod
    def _check_references(module: SpeechLLM, state_dict: dict, prefix: str, *args: Any) -> None:
        """Before loading: remember the prefix (for the post hook), and refuse a checkpoint
        whose references now give other frozen weights than it was trained with."""
        module._load_prefix = prefix
        saved = state_dict.get(prefix + "reference_fingerprint")
        if saved is None:
            return
        now = module._computed_fingerprint
        for row, name in enumerate((f"encoder_checkpoint {module.encoder_checkpoint}", "the LM (model.lm)")):
            if not torch.allclose(saved[row].double().cpu(), now[row], rtol=1e-7, atol=1e-6):
                raise RuntimeError(f"SpeechLLM: {name} now holds other weights than the ones this checkpoint was "
                                   f"trained with (checksum {now[row].tolist()} vs {saved[row].tolist()})")

    @staticmethod
    def _allow_missing_references(module: SpeechLLM, incompatible) -> None:
        prefix = getattr(module, "_load_prefix", "")
        incompatible.missing_keys[:] = [
            k for k in incompatible.missing_keys
            if not (k.startswith(prefix) and module.is_reference(k[len(prefix):]))]

    # -- the model ---------------------------------------------------------------------------
    def train(self, mode: bool = True) -> SpeechLLM:
        super().train(mode)
        if not self.train_encoder:  # a frozen encoder runs as at inference: no dropout, no SpecAugment
            self.speech.eval()
        return self

    def encode(self, audio: Tensor, lengths: Tensor) -> EncoderOutput:
        """audio (B, T), lengths (B,) -> the speech encoder's output (B, T', D_enc)."""
        if self.train_encoder and self.training:
            return self.speech.encode(audio, lengths)
        with torch.no_grad():
            return self.speech.encode(audio, lengths)

    def speech_embeddings(self, enc: EncoderOutput) -> tuple[Tensor, Tensor]:
        """The adapter over the encoder's output: (B, S, D_lm), lengths (B,)."""
        return self.adapter(enc.output, enc.lengths)

    def splice(self, prompt_ids: Tensor, prompt_lens: Tensor, speech: Tensor, speech_lens: Tensor,
               answer_ids: Tensor | None = None, answer_lens: Tensor | None = None,
               left_pad: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Per row: embed(prompt[:k]) + speech[:S_b] + embed(prompt[k+1:]) (+ embed(answer)),
        where prompt[k] is the audio token. Returns (embeds (B, L, D), mask (B, L) bool,
        labels (B, L): the answer ids at the answer positions, IGNORE elsewhere), padded on the
        right (training) or the left (`left_pad`: generation's prefixes)."""
        rows, labels = [], []
        for b in range(prompt_ids.shape[0]):
            prompt = prompt_ids[b, : int(prompt_lens[b])]
            where = (prompt == self.audio_token_id).nonzero().flatten()
            if len(where) != 1:
                raise ValueError(f"row {b}: the prompt has {len(where)} audio tokens (id {self.audio_token_id}); "
                                 "it needs exactly one, where the speech goes")
            k = int(where[0])
            parts = [self.lm.embed(prompt[:k].unsqueeze(0))[0], speech[b, : int(speech_lens[b])],
                     self.lm.embed(prompt[k + 1:].unsqueeze(0))[0]]
            label = [torch.full((k + int(speech_lens[b]) + len(prompt) - k - 1,), IGNORE, dtype=torch.long)]
            if answer_ids is not None:
                answer = answer_ids[b, : int(answer_lens[b])]
                parts.append(self.lm.embed(answer.unsqueeze(0))[0])
                label.append(answer.cpu())
            rows.append(torch.cat(parts))
            labels.append(torch.cat(label))
        length = max(len(r) for r in rows)
        dim = rows[0].shape[-1]
        embeds = rows[0].new_zeros(len(rows), length, dim)
        mask = torch.zeros(len(rows), length, dtype=torch.bool, device=embeds.device)
        label_out = torch.full((len(rows), length), IGNORE, dtype=torch.long)
        for b, (row, label) in enumerate(zip(rows, labels)):
            span = slice(length - len(row), length) if left_pad else slice(0, len(row))
            embeds[b, span] = row
            mask[b, span] = True
            label_out[b, span] = label
        return embeds, mask, label_out.to(embeds.device)

    def forward(self, batch: dict) -> dict[str, Tensor]:
        enc = self.encode(batch["audio"], batch["audio_lens"])
        speech, speech_lens = self.speech_embeddings(enc)
        embeds, mask, labels = self.splice(batch["prompt_ids"], batch["prompt_ids_lens"], speech, speech_lens,
                                           batch["answer_ids"], batch["answer_ids_lens"])
        # position t predicts token t+1: logits only where the next token is an answer token
        targets = labels[:, 1:]
        picked = targets != IGNORE
        answer_logits, _ = self.lm.forward_embeds(embeds, mask, logits_at=F.pad(picked, (0, 1)))
        answer_logits = answer_logits.float()
        loss = F.cross_entropy(answer_logits, targets[picked])
        acc = (answer_logits.argmax(-1) == targets[picked]).float().mean()
        return {"loss": loss, "acc": acc.detach(), "ppl": loss.detach().exp()}

    def trainable_parameters(self) -> tuple[int, int]:
        """(trainable, total) parameter counts."""
        params = list(self.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

