"""Transducer ASR (RNN-T, Graves 2012), as the Conformer paper's Conformer-Transducer: any
encoder, a prediction network and a joiner from `speechlm.decoders.transducer`, the RNN-T
loss of `torchaudio.functional.rnnt_loss`, and an optional auxiliary CTC head:

    loss = RNN-T + ctc_weight * CTC          (ESPnet's transducer convention)

Both losses are summed over utterances and divided by the batch size, as `CTC` does.

Memory: the joiner's logits are (B, T, U+1, V) floats, which for long utterances and big
vocabularies outgrows everything else. When a batch's lattice would exceed
`max_joint_elements`, the joiner and the loss run on groups of utterances, each trimmed to
its own longest T and U and wrapped in activation checkpointing, so at most one group's
logits exist at a time, forward and backward; the result is the same loss and gradients.

Token conventions are ESPnet's: blank 0, targets padded with -1 (ignore_id).
"""
from __future__ import annotations

import torch
import torchaudio
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from speechlm.encoders.base import EncoderOutput
from speechlm.models.ctc import CTC
from speechlm.models.encode import encode_speech


def lattice_groups(enc_lens: list[int], token_lens: list[int], vocab_size: int, max_elements: int) -> list[list[int]]:
    """Utterance indices in groups whose padded logits (n, max T, max U+1, V) stay within
    `max_elements` (a single utterance always forms a group). Utterances are taken longest
    first, so each group's padding is small."""
    order = sorted(range(len(enc_lens)), key=lambda i: (enc_lens[i], token_lens[i]), reverse=True)
    groups: list[list[int]] = []
    t_max = u_max = 0
    for i in order:
        t, u = max(t_max, enc_lens[i]), max(u_max, token_lens[i] + 1)
        if groups and (len(groups[-1]) + 1) * t * u * vocab_size <= max_elements:
            groups[-1].append(i)
            t_max, u_max = t, u
        else:
            groups.append([i])
            t_max, u_max = enc_lens[i], token_lens[i] + 1
    return groups


class TransducerModel(nn.Module):
    """`forward(batch)` with batch keys `audio` (B, T) waveforms, or (B, T, F) features
    without a frontend, `audio_lens` (B,), `tokens` (B, U) padded with ignore_id and
    `token_lens` (B,) -> dict: `loss` (with grad) and detached `loss_transducer`, and
    `loss_ctc` when ctc_weight > 0."""

    # What training keeps the best checkpoints by, unless the config says otherwise (ESPnet's
    # transducer recipes: valid loss).
    checkpoint_criterion = ("valid/loss", "min")
    # Modified beam search (conf/search/modified_beam.yaml); beam 10 as the digits results.
    default_search = {"_target_": "speechlm.search.transducer_beam.TransducerBeamSearch", "beam_size": 10,
                      "method": "modified"}

    def __init__(
        self,
        vocab_size: int,
        encoder: nn.Module,
        predictor: nn.Module,
        joiner: nn.Module,
        frontend: nn.Module | None = None,
        normalize: nn.Module | None = None,
        specaug: nn.Module | None = None,
        ctc_weight: float = 0.0,
        ctc_dropout_rate: float = 0.0,
        blank_id: int = 0,
        ignore_id: int = -1,
        max_joint_elements: int = 1 << 27,
    ):
        super().__init__()
        if ctc_weight < 0:
            raise ValueError(f"ctc_weight must be >= 0, got {ctc_weight}")
        self.vocab_size = vocab_size
        self.blank_id = blank_id
        self.ignore_id = ignore_id
        self.ctc_weight = ctc_weight
        self.max_joint_elements = max_joint_elements
        self.frontend = frontend
        self.normalize = normalize
        self.specaug = specaug
        self.encoder = encoder
        self.predictor = predictor
        self.joiner = joiner
        self.ctc = CTC(vocab_size, encoder.output_size(), ctc_dropout_rate, blank_id=blank_id) if ctc_weight > 0 else None

    def encode(self, audio: Tensor, lengths: Tensor) -> EncoderOutput:
        """audio (B, T) waveforms, or (B, T, F) features without a frontend; lengths (B,)
        -> EncoderOutput(output (B, T', D), lengths (B,), {})."""
        return encode_speech(self.encoder, audio, lengths, self.frontend, self.normalize, self.specaug, self.training)

    def _group_loss(self, enc_proj: Tensor, pred_proj: Tensor, targets: Tensor, enc_lens: Tensor,
                    token_lens: Tensor) -> Tensor:
        """Summed RNN-T loss of one group: enc_proj (n, T, J), pred_proj (n, U+1, J) trimmed
        to the group's longest, targets (n, U)."""
        logits = self.joiner.joint(enc_proj.unsqueeze(2), pred_proj.unsqueeze(1))
        return torchaudio.functional.rnnt_loss(
            logits.float(), targets.int(), enc_lens.int(), token_lens.int(), blank=self.blank_id, reduction="sum",
        )

    def transducer_loss(self, enc: Tensor, enc_lens: Tensor, tokens: Tensor, token_lens: Tensor) -> Tensor:
        """Summed over the batch: enc (B, T, D), tokens (B, U) padded with anything."""
        enc_proj = self.joiner.project_encoder(enc)
        pred_proj = self.joiner.project_predictor(self.predictor(tokens, token_lens))
        targets = tokens.masked_fill(tokens == self.ignore_id, self.blank_id)
        groups = lattice_groups(enc_lens.tolist(), token_lens.tolist(), self.vocab_size, self.max_joint_elements)
        if len(groups) == 1:
            return self._group_loss(enc_proj, pred_proj, targets, enc_lens, token_lens)
        total = enc.new_zeros(())
        for group in groups:
            idx = torch.tensor(group, device=enc.device)
            t, u = int(enc_lens[idx].max()), int(token_lens[idx].max())
            total = total + checkpoint(self._group_loss, enc_proj[idx, :t], pred_proj[idx, : u + 1], targets[idx, :u],
                                       enc_lens[idx], token_lens[idx], use_reentrant=False)
        return total

    def forward(self, batch: dict) -> dict[str, Tensor]:
        token_lens = batch["token_lens"]
        tokens = batch["tokens"][:, : int(token_lens.max())]
        enc, enc_lens, _ = self.encode(batch["audio"], batch["audio_lens"])
        loss_transducer = self.transducer_loss(enc, enc_lens, tokens, token_lens) / enc.shape[0]
        loss = loss_transducer
        stats = {"loss_transducer": loss_transducer.detach()}
        if self.ctc is not None:
            loss_ctc = self.ctc(enc, enc_lens, tokens, token_lens)
            stats["loss_ctc"] = loss_ctc.detach()
            loss = loss + self.ctc_weight * loss_ctc
        return {"loss": loss.to(enc.dtype), **stats}
