"""Long-form transcription (audio of any length) with Whisper's seek logic
(openai-whisper `transcribe.py`), batched over files.

Each file's log-mel is computed once over the whole file (30 s of silence appended, the
maximum for the max-8 clamp taken over all of it, as whisper does). A file is read in 30-s
windows starting at its `seek`: the window is decoded with timestamps; complete segments
(<|t0|> text <|t1|>) become output segments and the seek moves to the last complete
timestamp, or past the window when it ends on a lone timestamp or has none. A window whose
no-speech probability is above `no_speech_threshold` while its average log-probability is
below `logprob_threshold` is skipped. With `condition_on_previous_text`, the text so far is
the next window's prompt (<|startofprev|>).

What differs from `whisper.transcribe` is the batching: every round decodes the current
window of every unfinished file at once (one encoder call, one batched search). Results are
file-by-file identical to whisper.transcribe at temperature 0 (no temperature fallback, no
word timestamps: not implemented here).
"""
from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from speechlm.models.encode import encode_speech
from speechlm.search.whisper import TIME_PRECISION, WhisperSearch

SAMPLE_RATE = 16000
HOP_LENGTH = 160
N_FRAMES = 3000  # mel frames in a 30-s window
N_SAMPLES = 480000
INPUT_STRIDE = 2  # mel frames per encoder frame (= per timestamp step)


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))


def pad_or_trim_frames(mel: Tensor, frames: int = N_FRAMES) -> Tensor:
    """(n_mels, T) -> (n_mels, frames): cut, or padded with zeros (whisper's pad_or_trim)."""
    if mel.shape[-1] >= frames:
        return mel[..., :frames]
    return torch.nn.functional.pad(mel, (0, frames - mel.shape[-1]))


@dataclass
class _File:
    mel: Tensor  # (n_mels, frames + 3000)
    content_frames: int
    language: str | None
    seek: int = 0
    tokens: list[int] = field(default_factory=list)
    segments: list[dict] = field(default_factory=list)
    prompt_reset_since: int = 0
    initial_prompt_tokens: list[int] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.seek >= self.content_frames


def transcribe_long(model, search: WhisperSearch, audios: Sequence[Tensor], log_mel: Callable[..., Tensor],
                    n_mels: int, no_speech_threshold: float | None = 0.6, logprob_threshold: float | None = -1.0,
                    condition_on_previous_text: bool = True, initial_prompt: str | None = None,
                    batch_size: int = 16, progress: Callable[[int], None] | None = None) -> list[dict]:
    """One dict per file, as `whisper.transcribe` returns: {text, segments, language}.
    `audios`: 16-kHz waveforms (T,); `log_mel(audio, n_mels, padding=...)` is
    `speechlm.features.whisper_mel.log_mel_spectrogram`; `search` (timestamps on) carries the
    decoding options; `progress(frames)` is called as files advance."""
    if not search.timestamps:
        raise ValueError("long-form transcription needs timestamps (WhisperSearch(timestamps=True))")
    tokenizer = search.tokenizer
    files = []
    for audio in audios:
        mel = log_mel(audio, n_mels, padding=N_SAMPLES)
        files.append(_File(mel, mel.shape[-1] - N_FRAMES, search.language))
    if initial_prompt is not None:
        for f in files:
            f.initial_prompt_tokens = tokenizer.encode(" " + initial_prompt.strip())
            f.tokens.extend(f.initial_prompt_tokens)
    # language: detected once per file on its first 30 s (as whisper: the padded mel, not a window)
    undetected = [f for f in files if f.language is None and search.languages]
    for start in range(0, len(undetected), batch_size):
        chunk = undetected[start:start + batch_size]
        enc = _encode(model, [pad_or_trim_frames(f.mel) for f in chunk])
        mask = None
        langs, _ = search.detect_language(model, enc.output, mask)
        for f, lang in zip(chunk, langs):
            f.language = lang
    if not search.languages:
        for f in files:
            f.language = "en"
    while True:
        active = [f for f in files if not f.done]
        if not active:
            break
        for start in range(0, len(active), batch_size):
            chunk = active[start:start + batch_size]
            sizes = [min(N_FRAMES, f.content_frames - f.seek) for f in chunk]
            windows = [pad_or_trim_frames(f.mel[:, f.seek:f.seek + n]) for f, n in zip(chunk, sizes)]
            enc = _encode(model, windows)
            prompts = [f.tokens[f.prompt_reset_since:] for f in chunk]
            results = search.decode(model, enc, prompts=prompts, languages=[f.language for f in chunk])
            for f, size, result in zip(chunk, sizes, results):
                before = f.seek
                _advance(f, size, result, tokenizer, search, no_speech_threshold, logprob_threshold,
                         condition_on_previous_text)
                if progress is not None:
                    progress(min(f.content_frames, f.seek) - before)
    return [dict(text=tokenizer.decode(f.tokens[len(f.initial_prompt_tokens):]), segments=f.segments,
                 language=f.language) for f in files]


def _encode(model, windows: list[Tensor]):
    feats = torch.stack(windows).transpose(1, 2)  # (B, 3000, n_mels)
    lengths = torch.full((feats.shape[0],), feats.shape[1], dtype=torch.long, device=feats.device)
    return encode_speech(model.encoder, feats, lengths, None, model.normalize, None, False)


def _advance(f: _File, segment_size: int, result, tokenizer, search: WhisperSearch, no_speech_threshold,
             logprob_threshold, condition_on_previous_text: bool) -> None:
    """One window's result into the file's segments and seek (whisper.transcribe's loop body)."""
    if no_speech_threshold is not None:
        skip = result.no_speech_prob > no_speech_threshold
        if logprob_threshold is not None and result.avg_logprob > logprob_threshold:
            skip = False
        if skip:
            f.seek += segment_size
            return
    ts_begin, ts_end = search.ts_begin, search.ts_end
    time_offset = float(f.seek * HOP_LENGTH / SAMPLE_RATE)
    tokens = torch.tensor(result.tokens, dtype=torch.long)
    is_ts = (tokens >= ts_begin) & (tokens < ts_end)
    single_timestamp_ending = is_ts[-2:].tolist() == [False, True]
    consecutive = (torch.where(is_ts[:-1] & is_ts[1:])[0] + 1).tolist()
    segments = []

    def segment(start: float, end: float, seg_tokens: Tensor) -> dict:
        seg_tokens = seg_tokens.tolist()
        return {"seek": f.seek, "start": start, "end": end,
                "text": tokenizer.decode([t for t in seg_tokens if t < search.eot]), "tokens": seg_tokens,
                "temperature": 0.0, "avg_logprob": result.avg_logprob,
                "compression_ratio": compression_ratio(result.text), "no_speech_prob": result.no_speech_prob}

    if consecutive:
        slices = list(consecutive)
        if single_timestamp_ending:
            slices.append(len(tokens))
        last = 0
        for current in slices:
            piece = tokens[last:current]
            segments.append(segment(time_offset + (int(piece[0]) - ts_begin) * TIME_PRECISION,
                                    time_offset + (int(piece[-1]) - ts_begin) * TIME_PRECISION, piece))
            last = current
        if single_timestamp_ending:
            f.seek += segment_size
        else:
            f.seek += (int(tokens[last - 1]) - ts_begin) * INPUT_STRIDE
    else:
        duration = segment_size * HOP_LENGTH / SAMPLE_RATE
        stamps = tokens[is_ts]
        if len(stamps) > 0 and int(stamps[-1]) != ts_begin:
            duration = (int(stamps[-1]) - ts_begin) * TIME_PRECISION
        segments.append(segment(time_offset, time_offset + duration, tokens))
        f.seek += segment_size
    for s in segments:  # an instantaneous or empty segment keeps its times, loses its text
        if s["start"] == s["end"] or s["text"].strip() == "":
            s["text"], s["tokens"] = "", []
    f.segments.extend({"id": i, **s} for i, s in enumerate(segments, start=len(f.segments)))
    f.tokens.extend(t for s in segments for t in s["tokens"])
    if not condition_on_previous_text:
        f.prompt_reset_since = len(f.tokens)
