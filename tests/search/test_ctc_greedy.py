"""CTC greedy decoding: hand-made best paths, padding, and a plain per-frame loop."""
from __future__ import annotations

import itertools

import torch

from speechlm.search.ctc_greedy import ctc_greedy_search


def one_hot_log_probs(paths: list[list[int]], V: int) -> torch.Tensor:
    """(B, T, V) log-probs whose best path is `paths` (equal lengths)."""
    x = torch.full((len(paths), len(paths[0]), V), -5.0)
    for b, path in enumerate(paths):
        for t, c in enumerate(path):
            x[b, t, c] = -0.1
    return x


def test_collapses_repeats_and_drops_blanks():
    x = one_hot_log_probs([[0, 1, 1, 0, 1, 2, 2, 0], [3, 3, 3, 3, 0, 0, 0, 0]], V=4)
    first, second = ctc_greedy_search(x)
    assert first.tokens == [1, 1, 2] and first.frames == [1, 4, 5]
    assert second.tokens == [3] and second.frames == [0]
    assert abs(first.path_log_prob + 0.8) < 1e-6


def test_padding_frames_are_ignored():
    x = one_hot_log_probs([[2, 0, 1, 1, 3, 3], [1, 1, 0, 2, 2, 2]], V=4)
    a, b = ctc_greedy_search(x, torch.tensor([4, 3]))
    assert (a.tokens, a.frames) == ([2, 1], [0, 2])
    assert (b.tokens, b.frames) == ([1], [0])
    assert abs(b.path_log_prob + 0.3) < 1e-6


def test_matches_a_per_frame_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.log_softmax(torch.randn(5, 40, 6, generator=g), dim=-1)
    lengths = torch.tensor([40, 33, 12, 1, 27])
    for result, row, n in zip(ctc_greedy_search(x, lengths, blank=2), x, lengths.tolist()):
        best = row[:n].argmax(-1).tolist()
        runs, t = [], 0
        for c, group in itertools.groupby(best):
            if c != 2:
                runs.append((c, t))
            t += len(list(group))
        assert result.tokens == [c for c, _ in runs]
        assert result.frames == [t for _, t in runs]
        assert abs(result.path_log_prob - row[:n].max(-1).values.sum().item()) < 1e-4
