"""BEST-RQ pretraining (Chiu et al. 2022, Google USM): masked prediction of labels from a
frozen random-projection quantizer.

    audio -> fbank -> normalisation (CMVN) -> x (B, T, F)
      x stacked by `stack` frames (the encoder's subsampling) -> frozen random projection
        -> nearest of `codebook_size` random unit vectors (per codebook) -> labels (B, T/stack)
      x with masked spans replaced by N(0, noise_std^2) noise -> encoder (any speechlm
        encoder, e.g. a Conformer with conv2d subsampling) -> one Linear per codebook
        -> CE against the labels at the masked frames (mean over codebooks)

Masks are drawn on the encoder's frame grid and cover all `stack` input frames of a masked
frame. `mask_prob` follows fairseq's convention (the expected share of frames that span
starts cover before overlaps): the paper's "probability 0.01 per 10-ms frame, spans of
400 ms" is mask_prob 0.4 with mask_length 400 ms / (10 ms x stack) frames.

The quantizer is a buffer, saved with the model and drawn from a fixed seed; nothing in it
trains. Encoder frame i is matched with stacked frame i (conv2d subsampling leaves a frame
or so fewer; the extra labels are dropped).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from speechlm.encoders.base import EncoderOutput
from speechlm.models.ssl.masked_encoding import encode_unmasked, frontend_features, reject_specaug
from speechlm.models.ssl.masking import noise_mask_features, span_mask
from speechlm.models.ssl.quantizer import RandomProjectionQuantizer, stack_frames


class BestRQPretrainModel(nn.Module):
    """`forward(batch)` with `audio` (B, T), `audio_lens` (B,) -> {loss, acc (masked frames,
    all codebooks), masked_frames, codes_used (distinct labels in the batch, first codebook)}."""

    checkpoint_criterion = ("valid/loss", "min")
    default_search = None

    def __init__(
        self,
        encoder: nn.Module,
        input_size: int,
        frontend: nn.Module | None = None,
        normalize: nn.Module | None = None,
        specaug: nn.Module | None = None,
        stack: int = 4,
        code_dim: int = 16,
        codebook_size: int = 8192,
        num_codebooks: int = 1,
        mask_prob: float = 0.4,
        mask_length: int = 10,
        min_masks: int = 1,
        noise_std: float = 0.1,
        seed: int = 0,
    ):
        super().__init__()
        reject_specaug(specaug, "BEST-RQ pretraining")
        self.frontend, self.normalize, self.specaug = frontend, normalize, None
        self.encoder = encoder
        self.stack = stack
        self.quantizer = RandomProjectionQuantizer(input_size * stack, code_dim, codebook_size, num_codebooks, seed)
        self.heads = nn.Linear(encoder.output_size(), num_codebooks * codebook_size)
        self.num_codebooks, self.codebook_size = num_codebooks, codebook_size
        self.mask_prob, self.mask_length, self.min_masks, self.noise_std = mask_prob, mask_length, min_masks, noise_std

    def encode(self, audio: Tensor, lengths: Tensor, layers: tuple[int, ...] = ()) -> EncoderOutput:
        return encode_unmasked(self, audio, lengths, layers)

    def forward(self, batch: dict) -> dict[str, Tensor]:
        feats, lengths = frontend_features(batch["audio"], batch["audio_lens"], self.frontend, self.normalize)
        with torch.no_grad():
            stacked, stacked_lens = stack_frames(feats, lengths, self.stack)
            labels = self.quantizer(stacked)  # (B, T/stack, num_codebooks)
        mask = span_mask(stacked_lens, stacked.shape[1], self.mask_prob, self.mask_length, min_masks=self.min_masks)
        frame_mask = mask.repeat_interleave(self.stack, dim=1)
        frame_mask = nn.functional.pad(frame_mask, (0, feats.shape[1] - frame_mask.shape[1]))
        enc = self.encoder(noise_mask_features(feats, frame_mask, self.noise_std), lengths)
        t = min(enc.output.shape[1], labels.shape[1])
        used = mask[:, :t] & (torch.arange(t, device=mask.device) < torch.minimum(enc.lengths, stacked_lens).unsqueeze(1))
        logits = self.heads(enc.output[:, :t][used]).view(-1, self.num_codebooks, self.codebook_size)
        target = labels[:, :t][used]  # (N, num_codebooks)
        loss = nn.functional.cross_entropy(logits.float().transpose(1, 2), target)
        acc = (logits.detach().argmax(-1) == target).float().mean()
        return {"loss": loss, "acc": acc, "masked_frames": used.sum().float(),
                "codes_used": torch.tensor(float(target[:, 0].unique().numel()))}
