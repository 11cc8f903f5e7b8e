"""What the masked-prediction objectives share: run any speechlm encoder with some of its
frames replaced between its stem and its blocks (`Encoder.stem` / `Encoder.blocks`).

wav2vec 2.0 and HuBERT replace the masked frames of the stem's output (the projected CNN
features, or a Conformer's subsampled frames) by one learned vector, `mask_emb`, before the
context network sees them; the loss is then taken at those frames. For an encoder whose
stem adds absolute positions (abs_pos), the masked frames lose their position too, unlike
fairseq, which adds its convolutional positions after masking; relative-position encoders
(rel_pos, Wav2Vec2Encoder's positional convolution in `blocks`) are unaffected.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from speechlm.encoders.base import EncoderOutput, StemOutput
from speechlm.models.encode import encode_speech
from speechlm.models.ssl.masking import span_mask


def frontend_features(audio: Tensor, lengths: Tensor, frontend: nn.Module | None,
                      normalize: nn.Module | None) -> tuple[Tensor, Tensor]:
    """audio (B, T) -> features (B, T', F), lengths (B,): the frontend and normalisation
    (as `encode_speech`, without SpecAugment)."""
    audio = audio[:, : int(lengths.max())]
    feats, lengths = (audio, lengths) if frontend is None else frontend(audio, lengths)
    if normalize is not None:
        feats, lengths = normalize(feats, lengths)
    return feats, lengths


def mask_stem(stem: StemOutput, mask_emb: Tensor, mask_prob: float, mask_length: int, min_masks: int = 2,
              same_count: bool = False) -> tuple[StemOutput, Tensor]:
    """An encoder stem's output with spans (fairseq's `compute_mask_indices`: `span_mask`)
    replaced by `mask_emb` -> (masked StemOutput, mask (B, T') True where replaced)."""
    mask = span_mask(stem.lengths, stem.x.shape[1], mask_prob, mask_length, min_masks=min_masks,
                     same_count=same_count)
    x = torch.where(mask.unsqueeze(-1), mask_emb.to(stem.x.dtype), stem.x)
    return StemOutput(x, stem.lengths, stem.pos_emb), mask


def encode_masked(encoder: nn.Module, feats: Tensor, lengths: Tensor, mask_emb: Tensor, mask_prob: float,
                  mask_length: int, min_masks: int = 2, same_count: bool = False,
                  layers: tuple[int, ...] = ()) -> tuple[EncoderOutput, Tensor]:
    """feats (B, T, F) -> (EncoderOutput, mask (B, T') True at the frames the context
    network saw as `mask_emb`)."""
    stem, mask = mask_stem(encoder.stem(feats, lengths), mask_emb, mask_prob, mask_length, min_masks, same_count)
    return encoder.blocks(stem, return_layers=layers), mask


def encode_unmasked(model: nn.Module, audio: Tensor, lengths: Tensor, layers: tuple[int, ...] = ()) -> EncoderOutput:
    """A pretraining model's plain encoding (no mask): what fine-tuning and feature dumping
    see. `model` has `encoder`, `frontend` and `normalize`."""
    return encode_speech(model.encoder, audio, lengths, model.frontend, model.normalize, None, False, layers)


def reject_specaug(specaug: nn.Module | None, name: str) -> None:
    if specaug is not None:
        raise ValueError(f"{name}: masking is the pretraining objective; SpecAugment is not applied "
                         "(set model.specaug: null)")
