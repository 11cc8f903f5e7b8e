"""encode_each: a batch's encoder outputs equal its utterances' encoded one at a time, which
a padded batch does not (the STFT, the depthwise convolutions and ESPnet's subsampling
lengths see the padding)."""
from __future__ import annotations

import torch

from speechlm.encoders.conformer import ConformerEncoder
from speechlm.features import LogMelFbank, UtteranceMVN
from speechlm.models.encode import encode_each, encode_speech


def test_batch_equals_one_at_a_time_and_padding_would_not():
    torch.manual_seed(0)
    encoder = ConformerEncoder(40, output_size=32, attention_heads=2, linear_units=64, num_blocks=2).eval()
    frontend, normalize = LogMelFbank(n_mels=40, hop_length=160, win_length=400), UtteranceMVN()

    def encode(audio, lengths):
        return encode_speech(encoder, audio, lengths, frontend, normalize)

    lengths = torch.tensor([16000, 9000, 4410])
    audio = 0.1 * torch.randn(3, 16000)
    audio[torch.arange(16000)[None, :] >= lengths[:, None]] = 0.0
    with torch.no_grad():
        each, batched = encode_each(encode, audio, lengths), encode(audio, lengths)
        for b, n in enumerate(lengths.tolist()):
            alone = encode(audio[b : b + 1, :n], lengths[b : b + 1])
            assert each.lengths[b] == alone.lengths[0]
            frames = int(alone.lengths[0])
            torch.testing.assert_close(each.output[b, :frames], alone.output[0], rtol=0, atol=0)
            assert (each.output[b, frames:] == 0).all()
    shortest = int(each.lengths[2])
    assert int(batched.lengths[2]) != shortest or not torch.allclose(
        batched.output[2, :shortest], each.output[2, :shortest], atol=1e-4)
