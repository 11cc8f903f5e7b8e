"""Whisper's decoding (openai-whisper `decoding.py`), batched over files, on any model with a
multitask decoder (`speechlm.models.multitask`) and a Whisper-style vocabulary
(`speechlm.tokenizers.multitask.MultitaskVocabulary`).

For each window of audio: language identification (the language token likeliest after
<|startoftranscript|>, unless given), the initial tokens
`[<|startofprev|> prompt] <|startoftranscript|> <|lang|> <|task|> [<|notimestamps|>] [prefix]`,
then greedy or beam search (temperature 0) with Whisper's logit filters (suppressed tokens, no
blank start, timestamp rules) and its ranking of finished candidates (sum of log-probabilities
over length, or Google NMT's length penalty). Results equal `whisper.decode` with the same
options, file by file; what differs is the work: every file of a batch is decoded at once,
through the decoder's incremental state (`init_state / step / select_state`), and a file
leaves the batch when its search is over (openai-whisper decodes one file at a time, and keeps
finished beams running).

`WhisperSearch(model, enc)` follows the search protocol (best token ids per utterance: the
sampled tokens, timestamps included, without <|endoftext|>); `decode` returns the full
`WhisperResult`s (language, its probabilities, average log-probability, no-speech probability)
that long-form transcription (`speechlm.search.whisper_longform`) needs.

`ctc_weight > 0` (OWSM's decoding, for a model with an auxiliary CTC head over the transcript:
transcribe without timestamps only) scores each hypothesis by the decoder and the CTC prefix
score after the same initial tokens and filters, through the joint CTC/attention beam search
(`speechlm.search.joint_beam`, beam `beam_size`, greedy = 1); Whisper's ranking is then
ESPnet's (total weighted score).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from speechlm.encoders.base import EncoderOutput
from speechlm.search.joint_beam import joint_beam_search
from speechlm.search.whisper_filters import (
    SuppressAtStart,
    SuppressTokens,
    TimestampRules,
    whisper_suppress_ids,
)

TIME_PRECISION = 0.02  # seconds per timestamp token (<|0.02|> - <|0.00|>)
N_TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|>


@dataclass
class WhisperResult:
    tokens: list[int]  # sampled tokens (text and timestamps), without <|endoftext|>
    text: str
    language: str | None
    language_probs: dict[str, float] | None = None
    sum_logprob: float = float("nan")
    avg_logprob: float = float("nan")
    no_speech_prob: float = float("nan")
    initial_tokens: list[int] = field(default_factory=list)


class WhisperSearch:
    """Options are `whisper.DecodingOptions`' (temperature 0): `language` (None: detect),
    `task` (transcribe | translate), `timestamps` (= not without_timestamps), `beam_size`
    (None: greedy), `patience`, `length_penalty`, `suppress_tokens` ("-1": Whisper's
    non-speech symbols), `suppress_blank`, `max_initial_timestamp`, `sample_len` (None: half
    the decoder's context), `prompt` (previous text: str or ids), `prefix`; and OWSM's
    `ctc_weight` (0: Whisper's decoding; see the module docstring).

    `tokenizer` is given by the entry points (`speechlm.search.decoding.build_search`)."""

    def __init__(self, tokenizer, language: str | None = None, task: str = "transcribe", timestamps: bool = False,
                 beam_size: int | None = None, patience: float | None = None, length_penalty: float | None = None,
                 suppress_tokens: str | Sequence[int] | None = "-1", suppress_blank: bool = True,
                 max_initial_timestamp: float | None = 1.0, sample_len: int | None = None,
                 prompt: str | Sequence[int] | None = None, prefix: str | Sequence[int] | None = None,
                 ctc_weight: float = 0.0):
        if not 0.0 <= ctc_weight < 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1), got {ctc_weight}")
        if ctc_weight > 0 and (task != "transcribe" or timestamps):
            raise ValueError("ctc_weight > 0 (joint CTC/attention decoding) scores the transcript: "
                             f"task=transcribe without timestamps only, got task={task!r}, timestamps={timestamps}")
        if task not in ("transcribe", "translate"):
            raise ValueError(f"task must be transcribe or translate, got {task!r}")
        if beam_size is not None and beam_size < 1:
            raise ValueError(f"beam_size must be >= 1 (or None for greedy), got {beam_size}")
        if patience is not None and beam_size is None:
            raise ValueError("patience needs beam_size")
        if length_penalty is not None and not 0 <= length_penalty <= 1:
            raise ValueError(f"length_penalty must be in [0, 1], got {length_penalty}")
        self.tokenizer = tokenizer
        ids = tokenizer.special_ids
        self.ids = ids
        self.eot, self.sot = ids["eot"], ids["sot"]
        self.languages = list(tokenizer.languages)
        if language is not None and self.languages and language not in self.languages:
            raise ValueError(f"language {language!r} is not in the vocabulary's {len(self.languages)} languages")
        self.language = language
        self.task = task
        self.timestamps = timestamps
        self.beam_size = beam_size
        self.patience = patience
        self.length_penalty = length_penalty
        self.suppress_tokens = suppress_tokens
        self.suppress_blank = suppress_blank
        self.max_initial_timestamp = max_initial_timestamp
        self.sample_len = sample_len
        self.prompt = prompt
        self.prefix = prefix
        self.ctc_weight = ctc_weight
        self.ts_begin = ids["timestamp_begin"]
        self.ts_end = self.ts_begin + N_TIMESTAMPS
        control = [ids[r] for r in ("transcribe", "translate", "sot", "sot_prev", "sot_lm", "no_speech", "blank")
                   if r in ids]
        self.suppress_ids = whisper_suppress_ids(suppress_tokens, tokenizer.non_speech_ids(), control)

    # --- the search protocol -----------------------------------------------------------------

    def __call__(self, model, enc: EncoderOutput) -> list[list[int]]:
        return [r.tokens for r in self.decode(model, enc)]

    # --- pieces ------------------------------------------------------------------------------

    def _text_ids(self, text_or_ids) -> list[int]:
        if text_or_ids is None:
            return []
        if isinstance(text_or_ids, str):
            return self.tokenizer.encode(" " + text_or_ids.strip())
        return [int(t) for t in text_or_ids]

    def initial_tokens(self, language: str | None, prompt=None, n_ctx: int = 448, sample_len: int = 224) -> list[int]:
        """`_get_initial_tokens` of openai-whisper for one row (its slicing quirks included:
        a prefix is cut to its last n_ctx // 2 - sample_len tokens, which is all of it at the
        default sample_len)."""
        tokens = list(self.tokenizer.sot_sequence(language, self.task))
        if not self.timestamps:
            tokens.append(self.ids["no_timestamps"])
        if self.prefix:
            tokens += self._text_ids(self.prefix)[-(n_ctx // 2 - sample_len):]
        prompt = self.prompt if prompt is None else prompt
        if prompt is not None and len(prompt) > 0:
            tokens = [self.ids["sot_prev"]] + self._text_ids(prompt)[-(n_ctx // 2 - 1):] + tokens
        return tokens

    @torch.no_grad()
    def detect_language(self, model, memory: Tensor, memory_mask: Tensor | None) -> tuple[list[str], list[dict[str, float]]]:
        """The likeliest language token after <|startoftranscript|> for each row of `memory`."""
        if not self.languages:
            raise ValueError("this vocabulary has no language tokens: give the language")
        state = model.decoder.init_state(memory.shape[0], memory.device, memory=memory, memory_mask=memory_mask)
        logp, _ = model.decoder.step(torch.full((memory.shape[0],), self.sot, dtype=torch.long, device=memory.device),
                                     state)
        lang_ids = torch.tensor([self.ids[f"lang_{c}"] for c in self.languages], device=logp.device)
        probs = logp.index_select(1, lang_ids).float().softmax(dim=-1)
        best = probs.argmax(dim=-1).tolist()
        return [self.languages[b] for b in best], [dict(zip(self.languages, row)) for row in probs.tolist()]

    def _filters(self, sample_begin: int) -> list:
        filters = []
        if self.suppress_blank:
            filters.append(SuppressAtStart(self.tokenizer.encode(" ") + [self.eot], sample_begin))
        if self.suppress_ids:
            filters.append(SuppressTokens(self.suppress_ids))
        if self.timestamps:
            index = None if not self.max_initial_timestamp else round(self.max_initial_timestamp / TIME_PRECISION)
            filters.append(TimestampRules(sample_begin, self.eot, self.ids["no_timestamps"], self.ts_begin,
                                          self.ts_end, index))
        return filters

    # --- decoding ----------------------------------------------------------------------------

    @torch.no_grad()
    def decode(self, model, enc: EncoderOutput, prompts: Sequence | None = None,
               languages: Sequence[str | None] | None = None) -> list[WhisperResult]:
        """One `WhisperResult` per row of `enc` (each row a window of audio). `prompts`
        (per row: previous text or ids, overriding the `prompt` option) and `languages` (per
        row; None: the option, or detection) are what long-form transcription varies."""
        memory, lengths = enc.output, enc.lengths
        n = memory.shape[0]
        mask = None
        if bool((lengths < memory.shape[1]).any()):
            mask = (torch.arange(memory.shape[1], device=memory.device)[None] < lengths[:, None]).unsqueeze(1)
        langs = list(languages) if languages is not None else [self.language] * n
        probs: list[dict[str, float] | None] = [None] * n
        if not self.languages:  # an English-only vocabulary: no language token
            langs = [None] * n
        else:
            todo = [i for i, lang in enumerate(langs) if lang is None]
            if todo:
                index = torch.tensor(todo, device=memory.device)
                found, found_probs = self.detect_language(
                    model, memory.index_select(0, index), None if mask is None else mask.index_select(0, index))
                for i, lang, p in zip(todo, found, found_probs):
                    langs[i], probs[i] = lang, p
        n_ctx = int(model.decoder.max_positions)
        sample_len = self.sample_len or n_ctx // 2
        rows = [self.initial_tokens(langs[i], None if prompts is None else prompts[i], n_ctx, sample_len)
                for i in range(n)]
        # rows with the same number of initial tokens (joint CTC/attention: the same initial
        # tokens) are decoded together
        results: list[WhisperResult | None] = [None] * n
        keys = [tuple(r) if self.ctc_weight > 0 else len(r) for r in rows]
        for key in sorted(set(keys)):
            group = [i for i in range(n) if keys[i] == key]
            index = torch.tensor(group, device=memory.device)
            if self.ctc_weight > 0:
                decoded = self._decode_joint(model, memory.index_select(0, index), lengths.index_select(0, index),
                                             rows[group[0]])
            else:
                decoded = self._decode_group(model, memory.index_select(0, index),
                                             None if mask is None else mask.index_select(0, index),
                                             [rows[i] for i in group], sample_len, n_ctx)
            for i, (tokens, sum_logprob, no_speech) in zip(group, decoded):
                results[i] = WhisperResult(
                    tokens=tokens, text=self.tokenizer.decode(tokens).strip(), language=langs[i],
                    language_probs=probs[i], sum_logprob=sum_logprob, avg_logprob=sum_logprob / (len(tokens) + 1),
                    no_speech_prob=no_speech, initial_tokens=rows[i])
        return results

    def _decode_group(self, model, memory: Tensor, mask: Tensor | None, initial: list[list[int]], sample_len: int,
                      n_ctx: int) -> list[tuple[list[int], float, float]]:
        decoder = model.decoder
        n_audio = memory.shape[0]
        group = self.beam_size or 1
        sample_begin = len(initial[0])
        sot_index = initial[0].index(self.sot)
        if group > 1:
            memory = memory.repeat_interleave(group, dim=0)
            mask = None if mask is None else mask.repeat_interleave(group, dim=0)
        tokens = torch.tensor(initial, dtype=torch.long, device=memory.device).repeat_interleave(group, dim=0)
        state = decoder.init_state(tokens.shape[0], memory.device, memory=memory, memory_mask=mask)
        # the initial tokens in (at most) two calls: up to <|startoftranscript|>, whose
        # distribution gives the no-speech probability, then the rest; not one call with
        # every position's distribution (a long prompt would cost K x V log-probabilities)
        logp, state = decoder.step(tokens[:, : sot_index + 1], state)
        no_speech = [float("nan")] * n_audio
        if "no_speech" in self.ids:
            no_speech = logp[::group, self.ids["no_speech"]].float().exp().tolist()
        if sot_index + 1 < tokens.shape[1]:
            logp, state = decoder.step(tokens[:, sot_index + 1:], state)
        filters = self._filters(sample_begin)
        if group == 1:
            return self._greedy(decoder, state, tokens, logp, filters, sample_begin, sample_len, n_ctx, no_speech)
        return self._beam(decoder, state, tokens, logp, filters, sample_begin, sample_len, n_ctx, no_speech, n_audio)

    def _decode_joint(self, model, memory: Tensor, lengths: Tensor,
                      initial: list[int]) -> list[tuple[list[int], float, float]]:
        """(tokens, the decoder's sum of log-probabilities, no-speech probability: NaN) per row;
        a hypothesis is at most as long as its encoder frames (ESPnet's maxlenratio 0)."""
        ctc = getattr(model, "ctc", None)
        if ctc is None:
            raise ValueError(f"ctc_weight={self.ctc_weight} needs a model with a CTC head; "
                             f"{type(model).__name__} has none")
        hyps = joint_beam_search(
            model.decoder, ctc.log_softmax(memory), memory, lengths, sos=self.sot, eos=self.eot,
            beam_size=self.beam_size or 1, ctc_weight=self.ctc_weight, maxlenratio=0.0,
            blank=ctc.blank_id, prefix=initial, logit_filters=self._filters(len(initial)))
        nan = float("nan")
        return [(h[0].tokens, h[0].scores.get("decoder", nan), nan) if h else ([], nan, nan) for h in hyps]

    def _filtered(self, tokens: Tensor, logp: Tensor, filters) -> Tensor:
        for f in filters:
            logp = f(tokens, logp)
        return torch.log_softmax(logp.float(), dim=-1)

    def _greedy(self, decoder, state, tokens, logp, filters, sample_begin, sample_len, n_ctx, no_speech):
        n = tokens.shape[0]
        sum_logprobs = torch.zeros(n, device=tokens.device)
        active = torch.arange(n, device=tokens.device)  # original row of each active row
        out: list[list[int] | None] = [None] * n
        for i in range(sample_len):
            if i > 0:
                logp, state = decoder.step(tokens[:, -1], state)
            logp = self._filtered(tokens, logp, filters)
            nxt = logp.argmax(dim=-1)
            sum_logprobs[active] += logp.gather(1, nxt[:, None])[:, 0]
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            done = nxt == self.eot
            over = tokens.shape[1] > n_ctx or i == sample_len - 1
            if over or bool(done.any()):
                for r in torch.nonzero(done | over).flatten().tolist():
                    out[int(active[r])] = tokens[r, sample_begin:].tolist()
            if over:
                break
            if bool(done.any()):
                keep = torch.nonzero(~done).flatten()
                if keep.numel() == 0:
                    break
                tokens, active = tokens.index_select(0, keep), active.index_select(0, keep)
                state = decoder.select_state(state, keep)
        results = []
        for r in range(n):
            seq = out[r] if out[r] is not None else []
            if self.eot in seq:
                seq = seq[: seq.index(self.eot)]
            results.append((seq, float(sum_logprobs[r]), no_speech[r]))
        return results

    def _beam(self, decoder, state, tokens, logp, filters, sample_begin, sample_len, n_ctx, no_speech, n_audio):
        beam = self.beam_size
        max_candidates = round(beam * (self.patience or 1.0))
        if max_candidates <= 0:
            raise ValueError(f"beam_size {beam} with patience {self.patience} keeps no candidates")
        device = tokens.device
        sum_logprobs = torch.zeros(tokens.shape[0], device=device)
        finished: list[dict[tuple, float]] = [{} for _ in range(n_audio)]
        active = list(range(n_audio))  # audio of each active block of `beam` rows
        last_tokens: dict[int, Tensor] = {}
        last_sums: dict[int, Tensor] = {}
        for i in range(sample_len):
            if i > 0:
                logp, state = decoder.step(tokens[:, -1], state)
            logp = self._filtered(tokens, logp, filters)
            a = len(active)
            top_lp, top_id = logp.topk(beam + 1, dim=-1)  # (A*beam, beam+1)
            scores = (sum_logprobs[:, None] + top_lp).reshape(a, beam * (beam + 1))
            cand_tok = top_id.reshape(a, beam * (beam + 1))
            cand_src = torch.arange(a * beam, device=device).repeat_interleave(beam + 1).reshape(a, -1)
            if i == 0:
                # every beam holds the same tokens: whisper's dict keeps one copy of each
                # candidate; the copies sort after all of the first beam's (stable sort) and
                # are never reached (beam + 1 candidates, at most one of them <|endoftext|>)
                scores[:, beam + 1:] = float("-inf")
            # Python's sorted(reverse=True) keeps equal scores in insertion order, as stable=True
            order = torch.sort(scores, dim=1, descending=True, stable=True).indices
            s_scores = scores.gather(1, order)
            s_tok = cand_tok.gather(1, order)
            s_src = cand_src.gather(1, order)
            is_eot = s_tok == self.eot
            before = torch.cumsum((~is_eot).long(), dim=1) - (~is_eot).long()  # non-eot before each
            keep = (~is_eot) & (before < beam)
            fin = is_eot & (before < beam)
            if not bool((keep.sum(1) == beam).all()):
                raise RuntimeError("beam search: fewer continuations than beams")
            src = s_src[keep].reshape(a, beam).flatten()
            new_tok = s_tok[keep].reshape(a, beam).flatten()
            new_sum = s_scores[keep].reshape(a, beam).flatten()
            prev = tokens
            tokens = torch.cat([prev.index_select(0, src), new_tok[:, None]], dim=1)
            sum_logprobs = new_sum
            state = decoder.select_state(state, src)
            completed = []
            if bool(fin.any()):
                for r in torch.nonzero(fin.any(1)).flatten().tolist():
                    audio = active[r]
                    for c in torch.nonzero(fin[r]).flatten().tolist():
                        if len(finished[audio]) >= max_candidates:
                            break
                        seq = tuple(prev[int(s_src[r, c])].tolist()) + (self.eot,)
                        finished[audio][seq] = float(s_scores[r, c])
            for r, audio in enumerate(active):
                if len(finished[audio]) >= max_candidates:
                    completed.append(r)
            over = tokens.shape[1] > n_ctx
            if completed or over or i == sample_len - 1:
                for r, audio in enumerate(active):
                    last_tokens[audio] = tokens[r * beam:(r + 1) * beam]
                    last_sums[audio] = sum_logprobs[r * beam:(r + 1) * beam]
            if over:
                break
            if completed:
                keep_blocks = [r for r in range(a) if r not in set(completed)]
                if not keep_blocks:
                    break
                rows = torch.tensor([r * beam + j for r in keep_blocks for j in range(beam)], device=device)
                tokens, sum_logprobs = tokens.index_select(0, rows), sum_logprobs.index_select(0, rows)
                state = decoder.select_state(state, rows)
                active = [active[r] for r in keep_blocks]
        results = []
        for audio in range(n_audio):
            seqs = finished[audio]
            if len(seqs) < beam:  # not enough finished: the unfinished beams, best first
                sums = last_sums[audio].cpu()
                for j in reversed(sums.numpy().argsort(kind="quicksort").tolist()):
                    seqs[tuple(last_tokens[audio][j].tolist()) + (self.eot,)] = float(sums[j])
                    if len(seqs) >= beam:
                        break
            cands = [list(s[sample_begin:]) for s in seqs]
            cands = [c[: c.index(self.eot)] if self.eot in c else c for c in cands]
            lps = list(seqs.values())
            ranked = [lp / self._penalty(len(c)) for c, lp in zip(cands, lps)]
            best = max(range(len(ranked)), key=lambda k: (ranked[k], -k))
            results.append((cands[best], lps[best], no_speech[audio]))
        return results

    def _penalty(self, length: int) -> float:
        if self.length_penalty is None:
            return length
        return ((5 + length) / 6) ** self.length_penalty
