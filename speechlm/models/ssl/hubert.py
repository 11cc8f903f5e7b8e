"""HuBERT pretraining (Hsu et al. 2021): masked prediction of offline cluster labels.

    audio -> frontend (CNN feature encoder, or fbank + CMVN) -> encoder stem -> spans
      masked (mask_emb) -> encoder blocks -> final_proj -> cosine similarity with one
      embedding per cluster / logit_temp -> CE against the frame's cluster (`km`)

over the masked frames (pred_masked_weight; fairseq's HuBERT BASE also leaves the unmasked
frames out: pred_nomask_weight 0), plus feature_pen_weight * mean(raw CNN features^2) when the
frontend is the CNN. Iteration 1 clusters MFCC features, iteration 2 a layer of the
iteration-1 model (`speechlm.bin.dump_features` + `speechlm.bin.kmeans` write the `km`
table; `data.tables: {km: km}` brings it to the batch as `km` / `km_lens`).

Labels and encoder frames may have different rates (MFCC labels at 100 Hz, CNN frames at
50 Hz, a Conformer's at 25 Hz): encoder frame i of an utterance with n frames and L labels
takes label floor((i + 0.5) * L / n), the label nearest its centre when both cover the
utterance.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from speechlm.encoders.base import EncoderOutput
from speechlm.models.ssl.masked_encoding import encode_masked, encode_unmasked, reject_specaug


def labels_at_frames(km: Tensor, km_lens: Tensor, frames: int, frame_lens: Tensor) -> Tensor:
    """km (B, L) cluster labels, km_lens (B,) -> (B, frames) the label of each encoder frame
    (-1 past frame_lens)."""
    i = torch.arange(frames, device=km.device).unsqueeze(0)  # (1, T)
    n = frame_lens.clamp_min(1).unsqueeze(1).to(torch.float64)
    idx = ((i + 0.5) * km_lens.unsqueeze(1).to(torch.float64) / n).floor().long()
    idx = idx.clamp(max=(km_lens - 1).clamp_min(0).unsqueeze(1))
    labels = km.gather(1, idx.clamp(max=km.shape[1] - 1))
    return labels.masked_fill(i >= frame_lens.unsqueeze(1), -1)


class HuBERTPretrainModel(nn.Module):
    """`forward(batch)` with `audio`, `audio_lens`, `km` (B, L), `km_lens` (B,) -> {loss,
    loss_masked, (loss_unmasked), loss_features, acc_masked, acc_unmasked, masked_frames}."""

    checkpoint_criterion = ("valid/loss", "min")
    default_search = None

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        frontend: nn.Module | None = None,
        normalize: nn.Module | None = None,
        specaug: nn.Module | None = None,
        final_dim: int = 256,
        logit_temp: float = 0.1,
        mask_prob: float = 0.8,
        mask_length: int = 10,
        min_masks: int = 2,
        pred_masked_weight: float = 1.0,
        pred_nomask_weight: float = 0.0,
        feature_pen_weight: float = 10.0,
    ):
        super().__init__()
        reject_specaug(specaug, "HuBERT pretraining")
        self.frontend, self.normalize, self.specaug = frontend, normalize, None
        self.encoder = encoder
        d_model = encoder.output_size()
        self.mask_emb = nn.Parameter(torch.empty(d_model).uniform_())
        self.final_proj = nn.Linear(d_model, final_dim)
        self.label_embs = nn.Parameter(torch.empty(num_classes, final_dim).uniform_())
        self.num_classes, self.logit_temp = num_classes, logit_temp
        self.mask_prob, self.mask_length, self.min_masks = mask_prob, mask_length, min_masks
        self.pred_masked_weight, self.pred_nomask_weight = pred_masked_weight, pred_nomask_weight
        self.feature_pen_weight = feature_pen_weight

    def encode(self, audio: Tensor, lengths: Tensor, layers: tuple[int, ...] = ()) -> EncoderOutput:
        return encode_unmasked(self, audio, lengths, layers)

    def features(self, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(features (B, T, F), lengths, feature penalty): the CNN's raw output feeds the
        penalty when the frontend is wav2vec 2.0's; other frontends have none."""
        audio = audio[:, : int(lengths.max())]
        if self.frontend is not None and hasattr(self.frontend, "extract"):
            raw, lengths = self.frontend.extract(audio, lengths)
            feats = raw if self.frontend.layer_norm is None else self.frontend.layer_norm(raw)
            penalty = raw.float().pow(2).mean()
        else:
            feats, lengths = (audio, lengths) if self.frontend is None else self.frontend(audio, lengths)
            penalty = feats.new_zeros(())
        if self.normalize is not None:
            feats, lengths = self.normalize(feats, lengths)
        return feats, lengths, penalty

    def logits(self, x: Tensor) -> Tensor:
        """(N, D) encoder frames -> (N, num_classes): cosine similarity / logit_temp."""
        proj = nn.functional.normalize(self.final_proj(x).float(), dim=-1)
        return proj @ nn.functional.normalize(self.label_embs.float(), dim=-1).T / self.logit_temp

    def forward(self, batch: dict) -> dict[str, Tensor]:
        feats, lengths, penalty = self.features(batch["audio"], batch["audio_lens"])
        enc, mask = encode_masked(self.encoder, feats, lengths, self.mask_emb, self.mask_prob,
                                  self.mask_length, self.min_masks)
        labels = labels_at_frames(batch["km"], batch["km_lens"], enc.output.shape[1], enc.lengths)
        if int(labels.max()) >= self.num_classes:
            raise ValueError(f"a km label {int(labels.max())} >= num_classes {self.num_classes} "
                             f"(utterances {', '.join(batch.get('ids', [])[:3])})")
        real = labels >= 0
        stats: dict[str, Tensor] = {}
        loss = self.feature_pen_weight * penalty
        for name, where, weight in (("masked", mask & real, self.pred_masked_weight),
                                    ("unmasked", ~mask & real, self.pred_nomask_weight)):
            if not where.any():
                continue
            logits = self.logits(enc.output[where]) if weight > 0 else self.logits(enc.output[where].detach())
            target = labels[where]
            ce = nn.functional.cross_entropy(logits, target)
            if weight > 0:
                loss = loss + weight * ce
                stats[f"loss_{name}"] = ce.detach()
            stats[f"acc_{name}"] = (logits.detach().argmax(-1) == target).float().mean()
        return {"loss": loss, **stats, "loss_features": penalty.detach(),
                "masked_frames": (mask & real).sum().float()}
