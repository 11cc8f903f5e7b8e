"""wav2vec 2.0 pretraining (Baevski et al. 2020): contrastive prediction of quantized latent
speech at masked frames.

    audio -> frontend (CNN feature encoder, `ConvFeatureEncoder`) -> z (B, T, C)
      z --(masked frames, no mask)--> GumbelVectorQuantizer -> project_q -> targets q
      z -> encoder stem (feature projection) -> spans masked (mask_emb) -> encoder blocks
        -> final_proj -> context c
    loss = contrastive CE(c_t vs q_t and K negatives from the utterance's other masked
           frames) + diversity_weight * codebook diversity + feature_pen_weight * mean(z_raw^2)

per masked frame (fairseq sums each term over the masked frames and divides the gradient by
their number: the same).

Two places the targets can come from:
- a CNN frontend (anything with `extract`, i.e. `ConvFeatureEncoder`): its layer-normed
  features, as wav2vec 2.0 (the context network's stem must keep their frame rate:
  `Wav2Vec2Encoder`, or a Conformer / E-Branchformer with input_layer linear);
- any other frontend (fbank + CMVN): the encoder stem's unmasked output (after a
  Conformer's conv2d subsampling), as w2v-Conformer (Zhang et al. 2020) takes its targets
  from the subsampled features; no feature penalty then. Those are layer-normalised (no
  learned scale) and detached before the quantizer: left to shape its own targets, the stem
  grew its output (std ~300 after 3 epochs on egs/fsdd/ssl), saturating the Gumbel softmax,
  and the codebook collapsed to ~5 of 128 codes (all targets alike: every negative is the
  positive, and the contrastive loss vanishes); normalised but not detached, it still
  collapsed on a small batch (2 of 32 codes in 60 steps). Detached, only the quantizer
  learns from the targets, under the diversity loss (13-16 of 32 codes in that test). Parameter names are fairseq's / HF's where they have one (`mask_emb`
= HF masked_spec_embed, `quantizer`, `project_q`, `final_proj` = HF project_hid), so
`speechlm.interop.hf_wav2vec2` exports a pretrained model to `Wav2Vec2ForPreTraining`.

Quantized targets are computed only at masked frames (as fairseq; HF quantizes every frame
and uses the masked ones): the same loss for less work. Every utterance of a batch gets
the same number of masked frames (fairseq's require_same_masks), so the masked frames
gather into dense (B, M, D) tensors.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from speechlm.encoders.base import EncoderOutput
from speechlm.models.ssl.contrastive import contrastive_accuracy, contrastive_logits, contrastive_loss, sample_negatives
from speechlm.models.ssl.masked_encoding import encode_unmasked, frontend_features, mask_stem, reject_specaug
from speechlm.models.ssl.quantizer import GumbelVectorQuantizer, diversity_loss
from speechlm.nn.dropout import Dropout


class Wav2Vec2PretrainModel(nn.Module):
    """`forward(batch)` with `audio` (B, T), `audio_lens` (B,) -> {loss, loss_contrastive,
    loss_diversity, loss_features, acc (the positive ranked first), code_perplexity,
    prob_perplexity, temperature, masked_frames}."""

    checkpoint_criterion = ("valid/loss", "min")
    default_search = None  # pretraining: nothing to decode

    def __init__(
        self,
        frontend: nn.Module,
        encoder: nn.Module,
        normalize: nn.Module | None = None,
        specaug: nn.Module | None = None,
        final_dim: int = 256,
        num_negatives: int = 100,
        logit_temp: float = 0.1,
        mask_prob: float = 0.65,
        mask_length: int = 10,
        min_masks: int = 2,
        quantizer_groups: int = 2,
        quantizer_vars: int = 320,
        quantizer_dim: int | None = None,
        quantizer_temperature: tuple[float, float, float] = (2.0, 0.5, 0.999995),
        diversity_weight: float = 0.1,
        feature_pen_weight: float = 10.0,
        dropout_features: float = 0.1,
    ):
        super().__init__()
        reject_specaug(specaug, "wav2vec 2.0 pretraining")
        self.frontend, self.normalize, self.specaug = frontend, normalize, None
        self.encoder = encoder
        d_model = encoder.output_size()
        self.cnn_targets = hasattr(frontend, "extract")
        feat_dim = frontend.output_size() if self.cnn_targets else d_model
        self.target_norm = None if self.cnn_targets else nn.LayerNorm(d_model, elementwise_affine=False)
        quantizer_dim = quantizer_dim or final_dim
        self.mask_emb = nn.Parameter(torch.empty(d_model).uniform_())
        self.quantizer = GumbelVectorQuantizer(feat_dim, quantizer_groups, quantizer_vars, quantizer_dim,
                                               tuple(quantizer_temperature))
        self.project_q = nn.Linear(quantizer_dim, final_dim)
        self.final_proj = nn.Linear(d_model, final_dim)
        self.dropout_features = Dropout(dropout_features)
        self.num_negatives, self.logit_temp = num_negatives, logit_temp
        self.mask_prob, self.mask_length, self.min_masks = mask_prob, mask_length, min_masks
        self.diversity_weight, self.feature_pen_weight = diversity_weight, feature_pen_weight

    def encode(self, audio: Tensor, lengths: Tensor, layers: tuple[int, ...] = ()) -> EncoderOutput:
        """The context network over unmasked input (fine-tuning, probing, feature dumps)."""
        return encode_unmasked(self, audio, lengths, layers)

    def forward(self, batch: dict) -> dict[str, Tensor]:
        audio, lengths = batch["audio"], batch["audio_lens"]
        if self.cnn_targets:
            audio = audio[:, : int(lengths.max())]
            raw, lengths = self.frontend.extract(audio, lengths)
            feature_pen = raw.float().pow(2).mean()
            feats = raw if self.frontend.layer_norm is None else self.frontend.layer_norm(raw)
            if self.normalize is not None:
                feats, lengths = self.normalize(feats, lengths)
        else:
            feats, lengths = frontend_features(audio, lengths, self.frontend, self.normalize)
            feature_pen = feats.new_zeros((), dtype=torch.float32)
        stem = self.encoder.stem(feats, lengths)
        z = feats if self.cnn_targets else self.target_norm(stem.x.detach())
        if z.shape[1] != stem.x.shape[1]:
            raise ValueError(f"the encoder's stem changes the frame rate ({z.shape[1]} -> {stem.x.shape[1]} "
                             "frames): with a CNN frontend the targets are its frames; use input_layer linear")
        masked, mask = mask_stem(stem, self.mask_emb, self.mask_prob, self.mask_length, self.min_masks,
                                 same_count=True)
        enc = self.encoder.blocks(masked)
        b = z.shape[0]
        m = int(mask[0].sum())  # the same in every row (same_count)
        targets = self.dropout_features(z[mask])  # (B*M, C), row-major: utterance by utterance
        q = self.quantizer(targets)
        y = self.project_q(q.quantized).view(b, m, -1)
        c = self.final_proj(enc.output[mask]).view(b, m, -1)
        negatives = sample_negatives(torch.ones(b, m, dtype=torch.bool, device=z.device), self.num_negatives)
        logits = contrastive_logits(c, y, negatives, self.logit_temp)
        frames = b * m
        loss_contrastive = contrastive_loss(logits) / frames
        loss_diversity = diversity_loss(q)
        loss = (loss_contrastive + self.diversity_weight * loss_diversity
                + self.feature_pen_weight * feature_pen)
        acc = contrastive_accuracy(logits.detach())
        return {"loss": loss, "loss_contrastive": loss_contrastive.detach(), "loss_diversity": loss_diversity.detach(),
                "loss_features": feature_pen.detach(), "acc": acc,
                "code_perplexity": torch.as_tensor(q.code_perplexity).detach().float(),
                "prob_perplexity": torch.as_tensor(q.prob_perplexity).detach().float(),
                "temperature": torch.tensor(float(q.temperature)), "masked_frames": torch.tensor(float(frames))}
