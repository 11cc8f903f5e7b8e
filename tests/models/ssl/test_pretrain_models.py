"""The three pretraining objectives on speechlm encoders: each loss falls over a few dozen
steps on generated audio, masks and targets reach the loss where they should, and the
encoder stays a plain speechlm encoder (its weights load into a fine-tuning model)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from speechlm.encoders.conformer import ConformerEncoder
from speechlm.features import Fbank
from speechlm.models.ssl.best_rq import BestRQPretrainModel
from speechlm.models.ssl.hubert import HuBERTPretrainModel, labels_at_frames
from speechlm.models.ssl.wav2vec2 import Wav2Vec2PretrainModel
from speechlm.features.utterance_mvn import UtteranceMVN


def voiced(seconds: float, seed: int, sr: int = 16000) -> np.ndarray:
    """Harmonics of a gliding f0 with a syllable-like envelope: structure to predict."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 100 + 60 * rng.random() + 30 * np.sin(2 * np.pi * (0.5 + rng.random()) * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) * rng.random() / k for k in range(1, 10))
    env = np.abs(np.sin(2 * np.pi * (2 + 2 * rng.random()) * t))
    return (0.2 * env * x + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


def batch_of(n: int = 4, seconds=(1.6, 1.4, 1.2, 1.0)) -> dict:
    waves = [torch.from_numpy(voiced(seconds[i % len(seconds)], seed=i)) for i in range(n)]
    lens = torch.tensor([len(w) for w in waves])
    audio = torch.zeros(n, int(lens.max()))
    for i, w in enumerate(waves):
        audio[i, : len(w)] = w
    return {"audio": audio, "audio_lens": lens, "ids": [f"u{i}" for i in range(n)]}


def conformer(input_layer: str = "conv2d", d: int = 64) -> ConformerEncoder:
    return ConformerEncoder(input_size=40, output_size=d, attention_heads=4, linear_units=128, num_blocks=2,
                            cnn_module_kernel=7, input_layer=input_layer, dropout_rate=0.0,
                            positional_dropout_rate=0.0, attention_dropout_rate=0.0)


def train_steps(model: torch.nn.Module, batch: dict, steps: int = 40, lr: float = 2e-3) -> list[float]:
    torch.manual_seed(0)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    return losses


def falls(losses: list[float], factor: float) -> bool:
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    return last < factor * first


def test_best_rq_loss_falls_and_quantizer_stays_frozen():
    torch.manual_seed(0)
    model = BestRQPretrainModel(conformer(), input_size=40, frontend=Fbank(n_mels=40), normalize=UtteranceMVN(norm_vars=True),
                                stack=4, codebook_size=64, mask_prob=0.5, mask_length=4)
    assert not any("quantizer" in n for n, _ in model.named_parameters())
    before = {k: v.clone() for k, v in model.quantizer.state_dict().items()}
    batch = batch_of()
    losses = train_steps(model, batch)
    assert falls(losses, 0.7), losses
    for k, v in model.quantizer.state_dict().items():
        assert torch.equal(v, before[k])
    out = model(batch)
    assert out["masked_frames"] > 0 and out["codes_used"] > 4


def test_hubert_loss_falls_on_planted_labels():
    """Labels that are a function of the audio (a frame's energy quantised) are learnable:
    masked-prediction accuracy rises well above chance."""
    torch.manual_seed(0)
    batch = batch_of()
    fbank = Fbank(n_mels=40)
    with torch.no_grad():
        feats, flen = fbank(batch["audio"], batch["audio_lens"])
    energy = feats.mean(-1)
    km = torch.bucketize(energy, torch.quantile(energy[energy > -15], torch.tensor([0.25, 0.5, 0.75])))
    batch = {**batch, "km": km, "km_lens": flen}
    model = HuBERTPretrainModel(conformer(), num_classes=4, frontend=fbank, normalize=UtteranceMVN(norm_vars=True),
                                final_dim=32, mask_prob=0.5, mask_length=3)
    losses = train_steps(model, batch, steps=40)
    assert falls(losses, 0.6), losses
    model.train()
    torch.manual_seed(1)
    assert float(model(batch)["acc_masked"]) > 0.5


def test_labels_at_frames_maps_by_time():
    km = torch.arange(10).repeat(2, 1)  # 100 Hz labels 0..9
    out = labels_at_frames(km, torch.tensor([10, 6]), frames=5, frame_lens=torch.tensor([5, 3]))
    assert out[0].tolist() == [1, 3, 5, 7, 9]  # 50 Hz frames take the label at their centre
    assert out[1].tolist() == [1, 3, 5, -1, -1]


def test_hubert_rejects_out_of_range_labels():
    model = HuBERTPretrainModel(conformer(), num_classes=3, frontend=Fbank(n_mels=40), normalize=UtteranceMVN(norm_vars=True))
    batch = batch_of(2)
    batch.update(km=torch.full((2, 200), 5), km_lens=torch.tensor([160, 140]))
    with pytest.raises(ValueError, match="km label 5 >= num_classes 3"):
        model(batch)


def test_wav2vec2_on_fbank_conformer_targets_from_the_stem():
    torch.manual_seed(0)
    model = Wav2Vec2PretrainModel(Fbank(n_mels=40), conformer(), normalize=UtteranceMVN(norm_vars=True), final_dim=32,
                                  num_negatives=10, mask_prob=0.3, mask_length=2, quantizer_vars=16,
                                  quantizer_dim=32)
    assert not model.cnn_targets
    batch = batch_of()
    losses = train_steps(model, batch, steps=60, lr=1e-3)
    assert falls(losses, 0.85), losses
    out = model(batch)
    assert float(out["loss_features"]) == 0.0 and out["masked_frames"] > 0
    # not the degenerate solution (every target the same code, so every negative is the
    # positive and the contrastive loss vanishes): the codebook is still in use, and the
    # positive is found well above chance (1 in 11)
    assert float(out["prob_perplexity"]) > 6 and float(out["loss_contrastive"]) > 0.05
    assert float(out["acc"]) > 0.25


def test_pretraining_models_refuse_specaug():
    from speechlm.features.specaug import SpecAugment

    with pytest.raises(ValueError, match="model.specaug: null"):
        BestRQPretrainModel(conformer(), input_size=40, frontend=Fbank(n_mels=40), specaug=SpecAugment())


def test_hubert_with_the_cnn_frontend_has_a_feature_penalty_and_learns():
    from speechlm.encoders.wav2vec2 import ConvFeatureEncoder, Wav2Vec2Encoder

    torch.manual_seed(0)
    frontend = ConvFeatureEncoder([[32, 10, 5], [32, 3, 2], [32, 3, 2], [32, 2, 2], [32, 2, 2]])
    encoder = Wav2Vec2Encoder(input_size=32, output_size=32, attention_heads=2, linear_units=64, num_blocks=2,
                              conv_pos=16, conv_pos_groups=4, layer_drop_rate=0.0, dropout_rate=0.0,
                              attention_dropout_rate=0.0, input_dropout_rate=0.0)
    batch = batch_of()
    with torch.no_grad():
        feats, flen = Fbank(n_mels=40)(batch["audio"], batch["audio_lens"])
    energy = feats.mean(-1)  # 100 Hz labels; the CNN runs at 200 Hz: labels_at_frames maps them
    km = torch.bucketize(energy, torch.quantile(energy[energy > -15], torch.tensor([0.5])))
    batch = {**batch, "km": km, "km_lens": flen}
    model = HuBERTPretrainModel(encoder, num_classes=2, frontend=frontend, final_dim=16, mask_prob=0.5,
                                mask_length=10)
    out = model(batch)
    assert float(out["loss_features"]) > 0
    losses = train_steps(model, batch, steps=30)
    assert falls(losses, 0.8), losses
