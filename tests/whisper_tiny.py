"""A tiny OpenAI-format Whisper that has learned something, for decoding parity tests and
bench/whisper_transcribe.py: openai-whisper's own model class and loss, trained for ~a minute on
synthetic espeak-ng clips (English and German sentences, some windows holding several with
segment timestamps), saved as OpenAI's checkpoint format. Random weights would decode
near-uniform garbage, where float rounding alone can flip a choice.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

SENTENCES = [
    ("en", "one two three"), ("en", "four five six"), ("en", "seven eight nine"), ("en", "hello world"),
    ("en", "good morning"), ("de", "eins zwei drei"), ("de", "vier fünf sechs"), ("de", "guten morgen"),
]
VOICES = {"en": ["en-us+m1", "en+f2"], "de": ["de+m3", "de+f2"]}
SAMPLE_RATE = 16000


def speak16k(text: str, voice: str) -> np.ndarray:
    from speechlm.data.audio import resample
    from speechlm.data.espeak import speak

    audio, sr = speak(text, voice=voice)
    return resample(torch.from_numpy(audio), sr, SAMPLE_RATE).numpy()


def clips(seed: int = 0) -> list[tuple[np.ndarray, str, str, float, float]]:
    """(audio, language, text, speech start, speech end) per sentence x voice."""
    rng = random.Random(seed)
    out = []
    for lang, text in SENTENCES:
        for voice in VOICES[lang]:
            speech = speak16k(text, voice)
            lead = rng.uniform(0.1, 0.6)
            audio = np.concatenate([np.zeros(int(lead * SAMPLE_RATE), np.float32), speech,
                                    np.zeros(int(0.3 * SAMPLE_RATE), np.float32)])
            out.append((audio, lang, text, lead, lead + len(speech) / SAMPLE_RATE))
    return out


def long_audio(parts: list[tuple[np.ndarray, str, str, float, float]], gap: float = 1.0) -> np.ndarray:
    """The clips one after another with `gap` seconds of silence: a file of any length."""
    silence = np.zeros(int(gap * SAMPLE_RATE), np.float32)
    return np.concatenate([np.concatenate([a, silence]) for a, *_ in parts])


def _targets(tokenizer, items: list[tuple[str, str, float, float]], lang: str, timestamps: bool) -> list[int]:
    seq = [tokenizer.sot, tokenizer.to_language_token(lang), tokenizer.transcribe]
    if not timestamps:
        text = " ".join(t for _, t, _, _ in items)
        return seq + [tokenizer.no_timestamps] + tokenizer.encode(" " + text) + [tokenizer.eot]
    for _, text, start, end in items:
        seq += [tokenizer.timestamp_begin + round(start / 0.02)] + tokenizer.encode(" " + text) + \
               [tokenizer.timestamp_begin + round(end / 0.02)]
    return seq + [tokenizer.eot]


def training_windows(data, seed: int = 0):
    """(audio of <= 30 s, token sequence) pairs: each clip alone, with and without
    timestamps, and windows of 2-4 clips in a row (segment timestamps)."""
    import whisper

    tokenizer = whisper.tokenizer.get_tokenizer(True, num_languages=99)
    rng = random.Random(seed)
    windows = []
    for audio, lang, text, start, end in data:
        for ts in (False, True):
            windows.append((audio, _targets(tokenizer, [(lang, text, start, end)], lang, ts)))
    for _ in range(12):
        lang = rng.choice(["en", "de"])
        pool = [c for c in data if c[1] == lang]
        parts, pieces, t = [], [], 0.0
        for _ in range(rng.randint(2, 4)):
            audio, _, text, start, end = rng.choice(pool)
            if t + len(audio) / SAMPLE_RATE > 29.0:
                break
            parts.append(audio)
            pieces.append((lang, text, t + start, t + end))
            t += len(audio) / SAMPLE_RATE
        windows.append((np.concatenate(parts), _targets(tokenizer, pieces, lang, True)))
    return windows


def train_tiny_whisper(path: Path, steps: int = 120, seed: int = 0, batch_size: int = 8):
    """Train (openai-whisper's classes, its cross-entropy) and save {"dims", "model_state_dict"}.
    Returns the whisper model in eval mode."""
    import whisper
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(seed)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=4, n_audio_layer=1,
                           n_vocab=51865, n_text_ctx=448, n_text_state=64, n_text_head=4, n_text_layer=2)
    model = Whisper(dims)
    # whisper leaves these to the checkpoint: N(0, 1) token embeddings (logits of std ~8 at
    # d=64, a loss of ~30 to start from) and uninitialised positions
    torch.nn.init.normal_(model.decoder.token_embedding.weight, std=0.02)
    torch.nn.init.normal_(model.decoder.positional_embedding, std=0.01)
    data = clips(seed)
    windows = training_windows(data, seed)
    mels = torch.stack([whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(a))) for a, _ in windows])
    length = max(len(t) for _, t in windows)
    tokens = torch.full((len(windows), length), -100, dtype=torch.long)
    for i, (_, t) in enumerate(windows):
        tokens[i, : len(t)] = torch.tensor(t)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for step in range(steps):
        batch = torch.randperm(len(windows))[:batch_size]
        inp = tokens[batch, :-1].clamp(min=0)
        logits = model(mels[batch], inp)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens[batch, 1:], ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0 or step == steps - 1:
            print(f"step {step} loss {loss.item():.3f}", flush=True)
    model.eval()
    torch.save({"dims": dims.__dict__, "model_state_dict": model.state_dict()}, path)
    return model, loss.item()
