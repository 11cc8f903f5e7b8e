"""Shallow fusion of a language model into the beam searches: loading the LM a search names
(`lm_checkpoint`, once per search object, checked against the ASR model's tokenizer) and,
for the transducer searches, next-token LM log-probabilities of hypotheses of any length.

An LM follows `speechlm.models.lm`'s protocol (`vocab_size`, `sos`, `init_state(n, device)`,
`step(tokens (N,), state) -> (log_probs (N, V), state)`, `select_state(state, index)`).

The joint CTC/attention search steps the LM with its decoder: every running hypothesis has
the same number of tokens, so one `step` per search step serves all of them. In a
transducer beam hypotheses grow at different frames and have different lengths, which a
Transformer LM's key/value cache cannot hold in one state without a padding mask (not in the
protocol). `PrefixLogProbs` therefore keeps each live hypothesis's next-token log-probs,
keyed by its tokens, and computes those of new hypotheses in one batched, teacher-forced
pass of `sos + tokens` through the LM's `logits` (or, for an LM without them, `step` by
step; causal: a shorter row's log-probs are read at its own length, the padding after it
changes nothing). Exact for any LM. icefall's shallow fusion re-scores a Transformer LM's
whole prefix per emitted token in the same way.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn


def check_lm_matches(lm: nn.Module, lm_tokenizer: dict | None, asr_tokenizer, vocab_size: int, source: str) -> None:
    """Refuse an LM whose token ids mean something else than the ASR model's."""
    if int(lm.vocab_size) != int(vocab_size):
        raise ValueError(f"{source}: the LM has {lm.vocab_size} tokens, the ASR model {vocab_size}: "
                         "train the LM with the ASR model's tokenizer (tokenizer_dir=<its data/tokenizer>)")
    if asr_tokenizer is None or lm_tokenizer is None:
        return  # nothing more to compare (ids are trusted by count)
    ours = asr_tokenizer.to_dict() if hasattr(asr_tokenizer, "to_dict") else dict(asr_tokenizer)
    if lm_tokenizer != ours:
        differ = sorted(k for k in set(lm_tokenizer) | set(ours) if lm_tokenizer.get(k) != ours.get(k))
        raise ValueError(f"{source}: the LM's tokenizer differs from the ASR model's (in {', '.join(differ)}): "
                         "train the LM with the ASR model's tokenizer (tokenizer_dir=<its data/tokenizer>)")


class FusionLM:
    """What a search keeps for fusion: the LM path and weight, the LM loaded on first use
    (`get`), on the ASR model's device, checked against its tokenizer."""

    def __init__(self, lm_checkpoint: str | None, lm_weight: float, tokenizer=None):
        if lm_weight != 0 and not lm_checkpoint:
            raise ValueError(f"lm_weight={lm_weight} needs an LM: set search.lm_checkpoint=PATH")
        self.path, self.weight, self.tokenizer = lm_checkpoint, float(lm_weight), tokenizer
        self._lm: nn.Module | None = None

    def get(self, vocab_size: int, device: torch.device) -> nn.Module | None:
        """The LM to fuse (None when lm_weight is 0 or no LM is named)."""
        if self.weight == 0 or not self.path:
            return None
        if self._lm is None:
            from speechlm.models.lm import load_language_model

            lm, lm_tokenizer = load_language_model(self.path)
            check_lm_matches(lm, lm_tokenizer, self.tokenizer, vocab_size, str(self.path))
            self._lm = lm
        return self._lm.to(device)


class PrefixLogProbs:
    """Next-token LM log-probs of token sequences, the live ones cached: for the transducer
    searches, whose hypotheses have different lengths (module docstring)."""

    def __init__(self, lm: nn.Module, device: torch.device):
        self.lm, self.device = lm, device
        self.cache: dict[tuple[int, ...], Tensor] = {}

    def __call__(self, prefixes: Sequence[tuple[int, ...]]) -> Tensor:
        """prefixes: N token tuples (no sos) -> (N, V) log p_LM(next token | sos + prefix)."""
        missing = list(dict.fromkeys(p for p in prefixes if p not in self.cache))
        if missing:
            for prefix, row in zip(missing, self.replay(missing)):
                self.cache[prefix] = row
        return torch.stack([self.cache[p] for p in prefixes])

    @torch.no_grad()
    def replay(self, prefixes: list[tuple[int, ...]]) -> Tensor:
        """One batched pass of `sos + prefix`; (N, V) read at each row's length. Through the
        LM's teacher-forced `logits` (one call) where it has them, else through `step`."""
        n, longest = len(prefixes), max(len(p) for p in prefixes)
        tokens = torch.zeros(n, longest, dtype=torch.long, device=self.device)
        for i, p in enumerate(prefixes):
            tokens[i, : len(p)] = torch.tensor(p, dtype=torch.long)
        lens = torch.tensor([len(p) for p in prefixes], device=self.device)
        sos = torch.full((n,), self.lm.sos, dtype=torch.long, device=self.device)
        try:
            logits = self.lm.logits(torch.cat([sos[:, None], tokens], dim=1))  # (N, L + 1, V), causal
        except (AttributeError, NotImplementedError):
            logits = None
        if logits is not None:
            return torch.log_softmax(logits[torch.arange(n, device=self.device), lens].float(), dim=-1)
        state = self.lm.init_state(n, self.device)
        log_probs, state = self.lm.step(sos, state)
        out = log_probs.clone()
        for t in range(longest):
            log_probs, state = self.lm.step(tokens[:, t], state)
            done = lens == t + 1
            out[done] = log_probs[done]
        return out

    def keep(self, live: Iterable[tuple[int, ...]]) -> None:
        """Forget the sequences no hypothesis has any more."""
        live = set(live)
        self.cache = {p: v for p, v in self.cache.items() if p in live}
