"""Hybrid CTC/attention ASR (Watanabe et al. 2017), the loss of ESPnet's `ESPnetASRModel`:

    loss = ctc_weight * CTC + (1 - ctc_weight) * label-smoothed CE of the attention decoder

with optional intermediate CTC (Lee & Watanabe 2021) on chosen encoder layers, which
replaces CTC by (1 - interctc_weight) * CTC + interctc_weight * mean(intermediate CTCs),
optionally self-conditioned (Nozaki & Komatsu 2021: `interctc_use_conditioning`).

Features: frontend (waveform -> features) -> normalize (e.g. GlobalCMVN) -> specaug
(training only) -> encoder, as `speechlm.models.encode.encode_speech`.

Token conventions are ESPnet's: blank 0, <sos/eos> the last id, targets padded with -1.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from speechlm.encoders.base import EncoderOutput
from speechlm.models.ctc import CTC
from speechlm.models.encode import encode_speech
from speechlm.models.label_smoothing import LabelSmoothingLoss
from speechlm.nn.masks import valid_mask

log = logging.getLogger(__name__)


def add_sos_eos(ys: Tensor, ys_lens: Tensor, sos: int, eos: int, ignore_id: int = -1) -> tuple[Tensor, Tensor]:
    """ESPnet's `add_sos_eos`, without a Python loop. ys (B, L) padded past ys_lens ->
    ys_in (B, L+1) = <sos> y, padded with <eos>; ys_out (B, L+1) = y <eos>, padded with
    ignore_id. The decoder's input lengths are ys_lens + 1."""
    b, length = ys.shape
    real = valid_mask(ys_lens, length)
    ys_in = ys.new_full((b, length + 1), eos)
    ys_in[:, 0] = sos
    ys_in[:, 1:] = ys.masked_fill(~real, eos)
    ys_out = ys.new_full((b, length + 1), ignore_id)
    ys_out[:, :length] = ys.masked_fill(~real, ignore_id)
    ys_out[torch.arange(b, device=ys.device), ys_lens] = eos
    return ys_in, ys_out


def accuracy(logits: Tensor, targets: Tensor, ignore_id: int = -1) -> Tensor:
    """Fraction of real positions whose argmax is the target: logits (B, L, V), targets (B, L)."""
    real = targets != ignore_id
    return (logits.argmax(-1) == targets)[real].float().mean()


class CTCAttentionModel(nn.Module):
    """`forward(batch)` with batch keys `audio` (B, T) waveforms, or (B, T, F) features
    when there is no frontend, `audio_lens` (B,), `tokens` (B, L) padded with ignore_id,
    `token_lens` (B,) -> dict: `loss` (with grad) and detached stats `loss_ctc`
    (last layer), `loss_att`, `acc`, and with intermediate CTC `loss_interctc` (their mean)
    and `loss_interctc_layer{N}`. Stats of a branch that is off (ctc_weight 0 or 1) are
    absent. With ctc_weight 1.0 the decoder is dropped, as ESPnet does."""

    # What training keeps the best checkpoints by, unless the config says otherwise: the
    # attention decoder's validation accuracy, as ESPnet's `best_model_criterion`.
    checkpoint_criterion = ("valid/acc", "max")
    # How it is decoded unless the decode config names another search (conf/search/joint.yaml).
    default_search = {"_target_": "speechlm.search.joint_beam.JointCTCAttentionSearch", "beam_size": 10,
                      "ctc_weight": 0.3}

    def __init__(
        self,
        vocab_size: int,
        encoder: nn.Module,
        decoder: nn.Module | None = None,
        frontend: nn.Module | None = None,
        normalize: nn.Module | None = None,
        specaug: nn.Module | None = None,
        ctc_weight: float = 0.3,
        lsm_weight: float = 0.1,
        length_normalized_loss: bool = False,
        interctc_weight: float = 0.0,
        interctc_layer_idx: Sequence[int] = (),
        ignore_id: int = -1,
        sos_eos_id: int | None = None,
        blank_id: int = 0,
        ctc_dropout_rate: float = 0.0,
        interctc_use_conditioning: bool = False,
    ):
        super().__init__()
        if not 0.0 <= ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
        if not 0.0 <= interctc_weight < 1.0:
            raise ValueError(f"interctc_weight must be in [0, 1), got {interctc_weight}")
        if ctc_weight < 1.0 and decoder is None:
            raise ValueError("a decoder is needed when ctc_weight < 1")
        if ctc_weight == 1.0 and decoder is not None:
            log.info("ctc_weight is 1.0: the decoder is not used and is dropped")
            decoder = None
        self.interctc_layer_idx = [int(i) for i in interctc_layer_idx]
        if interctc_weight > 0 and not self.interctc_layer_idx:
            raise ValueError("interctc_weight > 0 needs interctc_layer_idx (1-based encoder layers)")
        if interctc_weight > 0 and ctc_weight == 0:
            raise ValueError("intermediate CTC needs the CTC head: ctc_weight > 0")
        self.vocab_size = vocab_size
        self.sos = self.eos = vocab_size - 1 if sos_eos_id is None else sos_eos_id
        self.ignore_id = ignore_id
        self.blank_id = blank_id
        self.ctc_weight = ctc_weight
        self.interctc_weight = interctc_weight
        self.frontend = frontend
        self.normalize = normalize
        self.specaug = specaug
        self.encoder = encoder
        self.decoder = decoder
        d = encoder.output_size()
        self.ctc = CTC(vocab_size, d, ctc_dropout_rate, blank_id=blank_id) if ctc_weight > 0 else None
        self.criterion_att = LabelSmoothingLoss(vocab_size, ignore_id, lsm_weight, length_normalized_loss)
        # Self-conditioned CTC: each intermediate layer's CTC posteriors, projected back to
        # the model dimension, are added to the encoder's stream (ESPnet's encoder option
        # `interctc_use_conditioning`; its Linear is ESPnet's `encoder.conditioning_layer`).
        self.conditioning_layer = None
        if interctc_use_conditioning:
            if self.ctc is None or not self.interctc_layer_idx:
                raise ValueError("interctc_use_conditioning needs the CTC head and interctc_layer_idx")
            self.conditioning_layer = nn.Linear(vocab_size, d)

    def encode(self, audio: Tensor, lengths: Tensor) -> EncoderOutput:
        """audio (B, T) waveforms, or (B, T, F) features without a frontend; lengths (B,)
        -> EncoderOutput(output (B, T', D), lengths (B,), intermediate {layer: (B, T', D)})."""
        conditioned = self.conditioning_layer is not None
        layers = self.interctc_layer_idx if self.interctc_weight > 0 or conditioned else ()
        condition = (lambda h: self.conditioning_layer(self.ctc.softmax(h))) if conditioned else None
        return encode_speech(self.encoder, audio, lengths, self.frontend, self.normalize, self.specaug,
                             self.training, layers, condition)

    def forward(self, batch: dict) -> dict[str, Tensor]:
        token_lens = batch["token_lens"]
        tokens = batch["tokens"][:, : int(token_lens.max())]
        enc, enc_lens, intermediate = self.encode(batch["audio"], batch["audio_lens"])
        stats: dict[str, Tensor] = {}

        loss_ctc = None
        if self.ctc is not None:
            loss_ctc = self.ctc(enc, enc_lens, tokens, token_lens)
            stats["loss_ctc"] = loss_ctc.detach()
            if self.interctc_weight > 0:
                inter = []
                for layer in self.interctc_layer_idx:
                    inter.append(self.ctc(intermediate[layer], enc_lens, tokens, token_lens))
                    stats[f"loss_interctc_layer{layer}"] = inter[-1].detach()
                loss_inter = torch.stack(inter).mean()
                stats["loss_interctc"] = loss_inter.detach()
                loss_ctc = (1 - self.interctc_weight) * loss_ctc + self.interctc_weight * loss_inter

        loss_att = None
        if self.decoder is not None:
            ys_in, ys_out = add_sos_eos(tokens, token_lens, self.sos, self.eos, self.ignore_id)
            logits = self.decoder(enc, enc_lens, ys_in, token_lens + 1)
            loss_att = self.criterion_att(logits, ys_out)
            stats["loss_att"] = loss_att.detach()
            stats["acc"] = accuracy(logits.detach(), ys_out, self.ignore_id)

        if loss_att is None:
            loss = loss_ctc
        elif loss_ctc is None:
            loss = loss_att
        else:
            loss = self.ctc_weight * loss_ctc + (1 - self.ctc_weight) * loss_att
        return {"loss": loss, **stats}
