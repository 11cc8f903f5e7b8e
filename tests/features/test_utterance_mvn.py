"""UtteranceMVN against ESPnet's UtteranceMVN (the normaliser of ESPnet configs that name
none): equal on single utterances for every norm_means/norm_vars setting; on a padded batch
equal on real frames (means only), padding at 0; and, where ESPnet's statistics count the
padding (means and variances), each utterance as it is alone."""
from __future__ import annotations

import itertools

import pytest
import torch

from espnet2.layers.utterance_mvn import UtteranceMVN as EspnetUtteranceMVN

from speechlm.features import UtteranceMVN

LENGTHS = torch.tensor([50, 31, 7])


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 3.0 + 2.0 * torch.randn(3, 50, 20, generator=g)
    return x.masked_fill((torch.arange(50)[None, :] >= LENGTHS[:, None])[..., None], 0.0)


@pytest.mark.parametrize("norm_means,norm_vars", list(itertools.product([True, False], repeat=2)))
def test_single_utterances_match_espnet(norm_means, norm_vars):
    ours, ref = UtteranceMVN(norm_means, norm_vars), EspnetUtteranceMVN(norm_means, norm_vars)
    x = batch()
    for b, n in enumerate(LENGTHS.tolist()):
        got, _ = ours(x[b : b + 1, :n], LENGTHS[b : b + 1])
        expected, _ = ref(x[b : b + 1, :n].clone(), LENGTHS[b : b + 1])
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
        without_lengths, _ = ours(x[b : b + 1, :n])
        torch.testing.assert_close(without_lengths, expected, rtol=1e-6, atol=1e-6)
    if norm_means or norm_vars:  # it does something
        assert not torch.allclose(got, x[2:3, :7])


def test_padded_batch_means_only_matches_espnet_on_real_frames():
    x = batch()
    got, _ = UtteranceMVN()(x, LENGTHS)
    expected, _ = EspnetUtteranceMVN()(x.clone(), LENGTHS)
    for b, n in enumerate(LENGTHS.tolist()):
        torch.testing.assert_close(got[b, :n], expected[b, :n], rtol=1e-6, atol=1e-6)
        assert (got[b, n:] == 0).all()  # ESPnet leaves -mean there


def test_padded_batch_with_variances_equals_each_utterance_alone():
    x = batch()
    got, _ = UtteranceMVN(True, True)(x, LENGTHS)
    espnet_batch, _ = EspnetUtteranceMVN(True, True)(x.clone(), LENGTHS)
    for b, n in enumerate(LENGTHS.tolist()):
        alone, _ = EspnetUtteranceMVN(True, True)(x[b : b + 1, :n].clone(), LENGTHS[b : b + 1])
        torch.testing.assert_close(got[b, :n], alone[0], rtol=1e-5, atol=1e-5)
        assert (got[b, :n].std(dim=0, unbiased=False) - 1).abs().max() < 1e-4
    # ESPnet's variance counts the padding of the shorter utterances
    assert not torch.allclose(espnet_batch[2, :7], got[2, :7], atol=1e-3)


def test_empty_utterance_gives_zeros_not_nan():
    out, _ = UtteranceMVN(True, True)(torch.randn(2, 5, 3), torch.tensor([5, 0]))
    assert torch.isfinite(out).all() and (out[1] == 0).all()
