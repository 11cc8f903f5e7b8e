"""A toy model family that lives only in the test folder: a CTC-only model (fbank ->
2-layer GRU -> CTC) and its own greedy search. It follows `speechlm.models.protocol`, so
speechlm's train/decode/transcribe run it from a conf node with no edit to speechlm/bin/."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from speechlm.encoders.base import EncoderOutput
from speechlm.models.encode import encode_speech


class ToyEncoder(nn.Module):
    """Frames stacked by 2, a GRU."""

    def __init__(self, input_size: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(2 * input_size, hidden)
        self.rnn = nn.GRU(hidden, hidden, num_layers=2, batch_first=True)

    def forward(self, xs: Tensor, lengths: Tensor) -> EncoderOutput:
        t = xs.shape[1] // 2
        x = xs[:, : 2 * t].reshape(xs.shape[0], t, -1)
        h, _ = self.rnn(torch.relu(self.proj(x)))
        return EncoderOutput(h, lengths // 2, {})


class ToyCTCModel(nn.Module):
    checkpoint_criterion = ("valid/loss", "min")
    default_search = {"_target_": "family.toy_ctc.ToyGreedySearch"}

    def __init__(self, vocab_size: int, blank_id: int, input_size: int = 80, hidden: int = 48,
                 frontend: nn.Module | None = None, normalize: nn.Module | None = None,
                 specaug: nn.Module | None = None):
        super().__init__()
        self.blank_id = blank_id
        self.frontend, self.normalize, self.specaug = frontend, normalize, specaug
        self.encoder = ToyEncoder(input_size, hidden)
        self.head = nn.Linear(hidden, vocab_size)

    def encode(self, audio: Tensor, lengths: Tensor) -> EncoderOutput:
        return encode_speech(self.encoder, audio, lengths, self.frontend, self.normalize, self.specaug, self.training)

    def forward(self, batch: dict) -> dict[str, Tensor]:
        enc = self.encode(batch["audio"], batch["audio_lens"])
        logp = self.head(enc.output).log_softmax(-1).transpose(0, 1)
        loss = nn.functional.ctc_loss(logp, batch["tokens"].clamp_min(0), enc.lengths, batch["token_lens"],
                                      blank=self.blank_id, zero_infinity=True)
        return {"loss": loss, "frames": enc.lengths.sum().float()}


class ToyGreedySearch:
    """Best path: argmax per frame, repeats merged, blanks dropped."""

    def __call__(self, model: ToyCTCModel, enc: EncoderOutput) -> list[list[int]]:
        best = model.head(enc.output).argmax(-1)
        out = []
        for row, n in zip(best.tolist(), enc.lengths.tolist()):
            tokens, prev = [], None
            for t in row[:n]:
                if t != prev and t != model.blank_id:
                    tokens.append(t)
                prev = t
            out.append(tokens)
        return out
