"""Generation from a decoder-only LM (`speechlm.decoders.causal_lm.CausalLM`), batched, from
prompt embeddings: greedy, sampling (temperature, top-k, top-p) and beam search, each giving
what transformers' `generate` gives on the same model.

A speech-LLM's prompt is embeddings (text embeddings with the adapter's audio frames spliced
in), so the input is `embeds` (B, L, D) with `mask` (B, L) bool (True = real; left, right or
any padding); `prompt_embeds` makes both from token-id prompts. The prompt goes through the
LM once (`lm.forward_embeds`, the prefill), then one token per step through the core's
incremental protocol (`lm.step`, `CausalLM.select_state`). Rows leave the batch when they
end (greedy, sampling) and prompts when their beam search is over, so finished work stops
costing compute.

As in `joint_beam` and whisper's `decoding.py`, the searches compose logit filters:
`filter(tokens (N, t) generated so far, scores (N, V)) -> scores` forbids a token by giving
it -inf. `MinNewTokens` is transformers' `MinNewTokensLengthLogitsProcessor`. Sampling then
applies transformers' warpers in its order: temperature, top-k, top-p.

Beam search is transformers' (`GenerationMixin._beam_search`, 5.x), per prompt:
- every step the (1 + #eos) x beam best continuations of all running beams by summed
  log-probability are taken, best first; those ending in an eos id (or reaching
  max_new_tokens) that rank among the first `beam` become finished hypotheses scored
  sum_logprob / len**length_penalty, len = generated tokens including the eos; the `beam`
  best of the others run on;
- a prompt's search ends when its `beam` best finished hypotheses cannot be beaten:
  early_stopping=False (the default): the best running beam, normalised by its current
  length, is no better than the worst of them; True: as soon as there are `beam` of them;
  "never": the best running beam normalised by max_new_tokens (length_penalty > 0) or by
  its current length.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

LogitFilter = Callable[[Tensor, Tensor], Tensor]
NEG_INF = float("-inf")


@dataclass
class Generation:
    """Per prompt: generated ids (without the eos that ended them) and a score: the beam
    search's length-normalised score (transformers' `sequences_scores`), or for greedy and
    sampling the sum of the model's log-probabilities of the ids (eos included)."""

    tokens: list[list[int]]
    scores: list[float]


class MinNewTokens:
    """No eos before `min_new_tokens` tokens are generated (transformers'
    `MinNewTokensLengthLogitsProcessor`)."""

    def __init__(self, eos_ids: Sequence[int], min_new_tokens: int):
        self.eos_ids = sorted({int(t) for t in eos_ids})
        self.min_new_tokens = int(min_new_tokens)

    def __call__(self, tokens: Tensor, scores: Tensor) -> Tensor:
        if tokens.shape[1] >= self.min_new_tokens:
            return scores
        return scores.index_fill_(-1, torch.tensor(self.eos_ids, device=scores.device), NEG_INF)


def top_k_filter(scores: Tensor, k: int) -> Tensor:
    """Keep the k best scores of each row (ties with the k-th kept: transformers' rule)."""
    k = min(int(k), scores.shape[-1])
    kth = torch.topk(scores, k, dim=-1).values[:, -1:]
    return scores.masked_fill(scores < kth, NEG_INF)


def top_p_filter(scores: Tensor, p: float) -> Tensor:
    """Keep the smallest set of best tokens whose probability reaches p (nucleus sampling),
    at least one; transformers' `TopPLogitsWarper`."""
    ascending, order = torch.sort(scores, descending=False, dim=-1)
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative <= 1 - p
    drop[:, -1] = False
    return scores.masked_fill(drop.scatter(1, order, drop), NEG_INF)


@torch.no_grad()
def prompt_embeds(lm, prompts: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """Token-id prompts of any lengths -> (embeds (B, L, D), mask (B, L) bool), left-padded
    (what `generate` of transformers expects of its input ids)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    device = next(lm.parameters()).device
    L = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), L, dtype=torch.long, device=device)
    mask = torch.zeros(len(prompts), L, dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        ids[i, L - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
        mask[i, L - len(p):] = True
    return lm.embed(ids), mask


def prefill(lm, embeds: Tensor, mask: Tensor | None):
    """The prompt through the LM once: (log-probabilities (B, V) float32 of the token after
    each prompt's last real position, the state holding the prompts)."""
    if embeds.dim() != 3:
        raise ValueError(f"embeds must be (B, L, D), got shape {tuple(embeds.shape)}")
    B, L = embeds.shape[:2]
    if mask is not None:
        if mask.shape != (B, L):
            raise ValueError(f"mask must be (B, L) = {(B, L)}, got {tuple(mask.shape)}")
        mask = mask.to(device=embeds.device, dtype=torch.bool)
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"prompts {empty} have no real position (mask all False)")
    if mask is None:
        last = torch.full((B,), L - 1, device=embeds.device)
    else:  # the last True of each row (any padding layout)
        last = (mask * torch.arange(1, L + 1, device=embeds.device)).argmax(dim=1)
    keep = torch.zeros(B, L, dtype=torch.bool, device=embeds.device)
    keep[torch.arange(B, device=embeds.device), last] = True
    logits, state = lm.forward_embeds(embeds, mask, logits_at=keep)  # (B, V): one position per row
    return logits.float().log_softmax(dim=-1), state


def _eos_tensor(eos_ids: int | Sequence[int] | None, device) -> Tensor:
    ids = [] if eos_ids is None else [eos_ids] if isinstance(eos_ids, int) else list(eos_ids)
    return torch.tensor(sorted({int(t) for t in ids}), dtype=torch.long, device=device)


def _filtered(filters: Sequence[LogitFilter], tokens: Callable[[], Tensor], scores: Tensor) -> Tensor:
    """The scores through the filters (on a copy: filters write in place); `tokens` makes
    the (N, t) tokens so far, only when there is a filter."""
    if not filters:
        return scores
    scores, tokens = scores.clone(), tokens()
    for f in filters:
        scores = f(tokens, scores)
    return scores


@torch.no_grad()
def sample_generate(lm, embeds: Tensor, mask: Tensor | None, max_new_tokens: int,
                    eos_ids: int | Sequence[int] | None = None, min_new_tokens: int = 0, greedy: bool = True,
                    temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                    generator: torch.Generator | None = None, logit_filters: Sequence[LogitFilter] = ()) -> Generation:
    """Greedy (`greedy=True`) or ancestral sampling, B prompts at once.

    embeds: (B, L, D) prompt embeddings; mask: (B, L) bool, True = real (None: all real).
    A row stops at its first eos (any of `eos_ids`) or after max_new_tokens tokens.
    Sampling draws from softmax(filtered scores / temperature) restricted to top_k, then
    top_p, with `generator` (its device must be the embeddings')."""
    if not greedy and temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling, got {temperature} (greedy: greedy=True)")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    device = embeds.device
    B = embeds.shape[0]
    eos = _eos_tensor(eos_ids, device)
    filters = ([MinNewTokens(eos.tolist(), min_new_tokens)] if min_new_tokens > 0 and eos.numel() else []) + list(
        logit_filters)
    out = torch.full((B, max(max_new_tokens, 0)), -1, dtype=torch.long, device=device)
    length = torch.zeros(B, dtype=torch.long, device=device)  # generated tokens per prompt, eos excluded
    total = torch.zeros(B, device=device)
    if max_new_tokens <= 0:
        return Generation([[] for _ in range(B)], [0.0] * B)
    logp, state = prefill(lm, embeds, mask)
    rows = torch.arange(B, device=device)  # the prompt of each running row
    for t in range(max_new_tokens):
        scores = _filtered(filters, lambda: out[rows, :t], logp)
        if greedy:
            token = scores.argmax(dim=-1)
        else:
            scores = scores / temperature
            if top_k is not None and top_k > 0:
                scores = top_k_filter(scores, top_k)
            if top_p is not None and top_p < 1:
                scores = top_p_filter(scores, top_p)
            token = torch.multinomial(scores.softmax(dim=-1), 1, generator=generator)[:, 0]
        total[rows] += logp.gather(1, token[:, None])[:, 0]
        out[rows, t] = token
        ended = torch.isin(token, eos)
        length[rows] += (~ended).long()
        if t == max_new_tokens - 1:
            break
        if bool(ended.any()):
            keep = (~ended).nonzero().flatten()
            if keep.numel() == 0:
                break
            rows, token = rows[keep], token[keep]
            state = lm.select_state(state, keep)
        logp, state = lm.step(token, state)
    return Generation([out[b, :n].tolist() for b, n in enumerate(length.tolist())], total.tolist())


@torch.no_grad()
def beam_generate(lm, embeds: Tensor, mask: Tensor | None, max_new_tokens: int,
                  eos_ids: int | Sequence[int] | None = None, beam_size: int = 4, length_penalty: float = 1.0,
                  early_stopping: bool | str = False, min_new_tokens: int = 0, nbest: int = 1,
                  logit_filters: Sequence[LogitFilter] = ()) -> list[list[tuple[list[int], float]]]:
    """Transformers' beam search (module docstring), B prompts at once; returns per prompt
    its `nbest` best (ids without eos, sum_logprob / len**length_penalty), best first.

    embeds: (B, L, D); mask: (B, L) bool, True = real (None: all real). Running rows: U
    prompts x W beams (W = 1 at the first step), a prompt's rows contiguous."""
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"nbest must be in [1, beam_size={beam_size}], got {nbest}")
    device = embeds.device
    B = embeds.shape[0]
    K = beam_size
    eos = _eos_tensor(eos_ids, device)
    filters = ([MinNewTokens(eos.tolist(), min_new_tokens)] if min_new_tokens > 0 and eos.numel() else []) + list(
        logit_filters)
    keep_n = max(2, 1 + eos.numel()) * K  # candidates per prompt and step: enough to refill K beams
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]  # (score, ids), best first, <= K
    if max_new_tokens <= 0:
        return [[([], 0.0)] for _ in range(B)]
    logp, state = prefill(lm, embeds, mask)
    prompts = torch.arange(B, device=device)  # the prompt of each running block of W rows
    W = 1
    score = torch.zeros(B, device=device)  # (U * W,) summed log-probabilities
    seqs = torch.zeros(B, 0, dtype=torch.long, device=device)  # (U * W, t)
    for t in range(max_new_tokens):
        U = prompts.numel()
        V = logp.shape[-1]
        acc = (_filtered(filters, lambda: seqs, logp) + score[:, None]).view(U, W * V)
        k = min(keep_n, W * V)
        values, flat = acc.topk(k, dim=1)  # (U, k), best first
        parent = torch.arange(U, device=device)[:, None] * W + torch.div(flat, V, rounding_mode="floor")
        token = flat % V
        last = t == max_new_tokens - 1
        ends = torch.isin(token, eos) | last
        # Only the first K candidates may finish (the rest only refill the running beams).
        new = ends & (torch.arange(k, device=device) < K)[None] & (values > NEG_INF)
        if bool(new.any()):
            norm = values / float(t + 1) ** length_penalty
            for u, j in new.nonzero().tolist():
                b = int(prompts[u])
                ids = seqs[parent[u, j]].tolist() + ([] if bool(torch.isin(token[u, j], eos)) else [int(token[u, j])])
                finished[b].append((float(norm[u, j]), ids))
                finished[b].sort(key=lambda e: -e[0])  # stable: earlier hypotheses win ties
                del finished[b][K:]
        if last:
            break
        running, pick = values.masked_fill(ends, NEG_INF).topk(min(K, k), dim=1)  # the K best that go on
        # A prompt is done when its K finished hypotheses cannot be beaten (module docstring).
        n_done = torch.tensor([len(finished[int(b)]) for b in prompts.tolist()], device=device)
        worst = torch.tensor([finished[int(b)][-1][0] if finished[int(b)] else NEG_INF for b in prompts.tolist()],
                             device=device)
        best_len = max_new_tokens if early_stopping == "never" and length_penalty > 0 else t + 1
        beaten = running[:, 0] / float(best_len) ** length_penalty <= worst
        done = (n_done >= K) & (beaten | (early_stopping is True))
        stay = (~done).nonzero().flatten()
        if stay.numel() == 0:
            break
        parent, token, running, pick = parent[stay], token[stay], running[stay], pick[stay]
        prompts = prompts[stay]
        rows = parent.gather(1, pick).reshape(-1)
        token = token.gather(1, pick).reshape(-1)
        score = running.reshape(-1)
        seqs = torch.cat([seqs[rows], token[:, None]], dim=1)
        state = lm.select_state(state, rows)
        W = pick.shape[1]
        logp, state = lm.step(token, state)
    return [[(ids, s) for s, ids in finished[b][:nbest]] for b in range(B)]


class CausalLMGenerate:
    """Generation as a config node: `method` greedy | sample | beam, with transformers'
    option names. `__call__(lm, embeds (B, L, D), mask (B, L) bool) -> ids per prompt`
    (without eos); `generate` also gives the scores. `eos_ids` None: the LM's eos
    (`lm.config.eos_id`); `seed` seeds a fresh generator per call (None: torch's global one)."""

    def __init__(self, method: str = "greedy", max_new_tokens: int = 64, min_new_tokens: int = 0,
                 eos_ids: int | Sequence[int] | None = None, beam_size: int = 4, length_penalty: float = 1.0,
                 early_stopping: bool | str = False, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None):
        if method not in ("greedy", "sample", "beam"):
            raise ValueError(f"method must be greedy, sample or beam, got {method!r}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if method == "beam" and beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        self.method, self.max_new_tokens, self.min_new_tokens = method, max_new_tokens, min_new_tokens
        self.eos_ids, self.beam_size, self.length_penalty = eos_ids, beam_size, length_penalty
        self.early_stopping = early_stopping
        self.temperature, self.top_k, self.top_p, self.seed = temperature, top_k, top_p, seed

    def _eos(self, lm) -> int | Sequence[int]:
        if self.eos_ids is not None:
            return self.eos_ids
        eos = lm.config.eos_id
        if eos is None:
            raise ValueError("the LM's config names no eos_id: give eos_ids")
        return eos

    def generate(self, lm, embeds: Tensor, mask: Tensor | None) -> Generation:
        eos = self._eos(lm)
        if self.method == "beam":
            best = [h[0] for h in beam_generate(
                lm, embeds, mask, self.max_new_tokens, eos, beam_size=self.beam_size,
                length_penalty=self.length_penalty, early_stopping=self.early_stopping,
                min_new_tokens=self.min_new_tokens)]
            return Generation([ids for ids, _ in best], [s for _, s in best])
        generator = None
        if self.method == "sample" and self.seed is not None:
            generator = torch.Generator(device=embeds.device).manual_seed(self.seed)
        return sample_generate(lm, embeds, mask, self.max_new_tokens, eos, self.min_new_tokens,
                               greedy=self.method == "greedy", temperature=self.temperature, top_k=self.top_k,
                               top_p=self.top_p, generator=generator)

    def __call__(self, lm, embeds: Tensor, mask: Tensor | None) -> list[list[int]]:
        return self.generate(lm, embeds, mask).tokens

    def from_prompts(self, lm, prompts: Sequence[Sequence[int]]) -> list[list[int]]:
        """Token-id prompts of any lengths (left-padded here) -> generated ids per prompt."""
        return self(lm, *prompt_embeds(lm, prompts))
