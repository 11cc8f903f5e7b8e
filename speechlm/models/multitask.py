"""Whisper-style multitask encoder-decoder (Radford et al. 2022; OWSM, Peng et al. 2023):
one decoder reads a task prompt and writes the answer,

    [<|startofprev|> previous text ...] <|startoftranscript|> <|lang|> <|transcribe|>|<|translate|>
        <|notimestamps|> | <|0.00|> text <|1.20|> ...  <|endoftext|>

trained teacher-forced with cross-entropy on every position except the previous-text prompt
(the targets there are `ignore_id`; `speechlm.data.transforms.MultitaskTargets` builds them).
The language token is a target, so the model learns language identification; the task token
and the timestamp tokens are targets too, as in Whisper.

Any speechlm encoder pairs with the decoder: `WhisperEncoder` (OpenAI's architecture, what
`speechlm.interop.whisper` loads checkpoints into) or a Conformer / E-Branchformer (OWSM),
optionally with an auxiliary CTC head over the transcript's text tokens (OWSM's loss:
ctc_weight x CTC + (1 - ctc_weight) x decoder CE).

Batch keys: `audio` (B, T), `audio_lens` (B,), `dec_in` (B, L) decoder input ids, `dec_target`
(B, L) next-token targets (`ignore_id` where no loss), and with a CTC head `ctc_tokens`
(B, L') / `ctc_tokens_lens` (B,) (the text tokens only, no specials).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from speechlm.encoders.base import EncoderOutput
from speechlm.models.ctc import CTC
from speechlm.models.ctc_attention import accuracy
from speechlm.models.encode import encode_speech
from speechlm.models.label_smoothing import LabelSmoothingLoss


class MultitaskModel(nn.Module):
    """`forward(batch)` -> {loss, loss_att, acc, (loss_ctc)}; `encode(audio, lengths)`."""

    # The decoder's next-token accuracy on held-out data, as for the CTC/attention model.
    checkpoint_criterion = ("valid/acc", "max")
    # Whisper's decoding (language detection, task, timestamps, beam search) unless the
    # decode config names another: conf/search/whisper.yaml.
    default_search = {"_target_": "speechlm.search.whisper.WhisperSearch"}

    def __init__(
        self,
        vocab_size: int,
        encoder: nn.Module,
        decoder: nn.Module,
        frontend: nn.Module | None = None,
        normalize: nn.Module | None = None,
        specaug: nn.Module | None = None,
        ctc_weight: float = 0.0,
        lsm_weight: float = 0.0,
        length_normalized_loss: bool = True,
        blank_id: int | None = None,
        ignore_id: int = -1,
    ):
        super().__init__()
        if not 0.0 <= ctc_weight < 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1) (the decoder is the model), got {ctc_weight}")
        if ctc_weight > 0 and blank_id is None:
            raise ValueError("a CTC head (ctc_weight > 0) needs blank_id: a vocabulary with a <blank> token")
        self.vocab_size = vocab_size
        self.frontend = frontend
        self.normalize = normalize
        self.specaug = specaug
        self.encoder = encoder
        self.decoder = decoder
        self.ctc_weight = ctc_weight
        self.ignore_id = ignore_id
        self.ctc = CTC(vocab_size, encoder.output_size(), blank_id=blank_id) if ctc_weight > 0 else None
        self.criterion = LabelSmoothingLoss(vocab_size, ignore_id, lsm_weight, length_normalized_loss)

    def encode(self, audio: Tensor, lengths: Tensor) -> EncoderOutput:
        """audio (B, T) waveforms (or (B, T, F) features without a frontend), lengths (B,)
        -> EncoderOutput(output (B, T', D), lengths (B,), {})."""
        return encode_speech(self.encoder, audio, lengths, self.frontend, self.normalize, self.specaug, self.training)

    def forward(self, batch: dict) -> dict[str, Tensor]:
        enc, enc_lens, _ = self.encode(batch["audio"], batch["audio_lens"])
        lens = batch["dec_in_lens"]
        length = int(lens.max())
        dec_in = batch["dec_in"][:, :length]
        target = batch["dec_target"][:, :length]
        # collate pads with ignore_id; any real id will do as input past a row's end
        logits = self.decoder(enc, enc_lens, dec_in.masked_fill(dec_in < 0, 0), lens)
        loss_att = self.criterion(logits, target)
        stats = {"loss_att": loss_att.detach(), "acc": accuracy(logits.detach(), target, self.ignore_id)}
        loss = loss_att
        if self.ctc is not None:
            ctc_lens = batch["ctc_tokens_lens"]
            loss_ctc = self.ctc(enc, enc_lens, batch["ctc_tokens"][:, : max(int(ctc_lens.max()), 1)], ctc_lens)
            stats["loss_ctc"] = loss_ctc.detach()
            loss = self.ctc_weight * loss_ctc + (1 - self.ctc_weight) * loss_att
        return {"loss": loss, **stats}
