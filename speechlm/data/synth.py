"""Synthetic speech corpora from espeak-ng: speak text, write a Kaldi data directory.

espeak-ng is driven in-process through `ctypes` and the `libespeak-ng.so` bundled with
`espeakng-loader` (no `espeak-ng` binary needed). A "speaker" is an espeak voice plus a
variant, e.g. `en-us+m3` or `en-gb-scotland+f2`: the voice sets the accent, the variant
the pitch and formants. Output is deterministic: the same text, voice and prosody give the
same samples whatever was spoken before and in whichever process. Word times come from
espeak's own word and phoneme events (trimmed of silence), not from an aligner.

    audio, sr = speak("one two three", voice="en-us+f2")       # float32 (T,), 22050
    audio, sr, words = speak_with_word_times("null eins", voice="de")  # [WordTime("null", 0.0, 0.235), ...]
    write_synth_data_dir("data/synth", [SynthUtterance("spk1-0001", "spk1", "hello", "en-us")])
"""
from __future__ import annotations

import _ctypes  # dlclose, which ctypes does not expose
import argparse
import ctypes
import functools
import hashlib
import multiprocessing
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import espeakng_loader
import numpy as np
import soundfile as sf

from speechlm.atomic import atomic_path, atomic_write_text
from speechlm.data.kaldi_dir import spk2utt_from_utt2spk, write_table

# Distinct English speakers, each an accent x variant pair so that two speakers never share
# both. Checked against the bundled data (espeak-ng 1.52): all load, and median F0, spectral
# centroid or duration differ by >= 3% between any two (f* variants ~175-210 Hz, m* ~85-110 Hz;
# klatt4 is another synthesiser). There is no `en-gb`: British English is the voice `en`.
DEFAULT_VOICES: tuple[str, ...] = (
    "en-us+m1", "en-us+f1", "en-us+m7", "en-us+f3", "en+m3", "en+f2",
    "en-gb-x-rp+m4", "en-gb-x-rp+f4", "en-gb-scotland+m2", "en-gb-scotland+f5",
    "en-029+m5", "en-029+f3", "en-us-nyc+m8", "en-gb-x-gbclan+klatt4",
)

# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # without it a bad data path calls exit() and kills Python
_INITIALIZE_PHONEME_EVENTS = 0x0001  # phoneme events too (they mark pauses); the audio is the same
_EVENT_WORD, _EVENT_PHONEME = 1, 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000  # end with a sentence pause, as a recorded utterance would
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7
_EE_OK = 0
_RATE_MIN, _RATE_MAX = 80, 450
_CHUNK_MS = 200  # callback granularity; any value gives the same samples
# espeak's default volume (100) clips the klatt4/klatt5 variants and drives the others into
# espeak's gain limiter (peaks ~0.999); at 60 the m*, f* and klatt* variants peak <= ~0.85.
_VOLUME_PERCENT = 60
# Word spans are trimmed to |sample| >= this: espeak's pauses and stop closures are exact zeros
# (except in variants with an echo, whose spans then keep their synthesis bounds).
_SILENCE = 1e-3


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p),
    ]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
        ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
        # id: union {int number; const char *name; char string[8]}; a phoneme event's mnemonic
        ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8),
    ]


_SynthCallbackType = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                      ctypes.POINTER(_Event))

# espeak-ng is one global state per loaded library; every use holds this lock.
_lock = threading.Lock()
_chunks: list[bytes] = []
_events: list[tuple[int, int, int, bytes]] = []  # (type, text_position, sample, phoneme) of word/phoneme events
_private_library_path: str | None = None
_libc = ctypes.CDLL(None)
_libc.initstate.argtypes = [ctypes.c_uint, ctypes.c_void_p, ctypes.c_size_t]
_libc.initstate.restype = ctypes.c_void_p
_libc.setstate.argtypes = [ctypes.c_void_p]
_libc.setstate.restype = ctypes.c_void_p
_libc.free.argtypes = [ctypes.c_void_p]


def _collect_samples(wav, num_samples, events) -> int:
    if num_samples > 0:
        _chunks.append(ctypes.string_at(wav, num_samples * 2))
    i = 0
    while events and events[i].type != 0:  # the list ends with espeakEVENT_LIST_TERMINATED
        e = events[i]
        if e.type in (_EVENT_WORD, _EVENT_PHONEME):
            # `sample` counts output samples from the start of this synthesis (audio_position is ms)
            _events.append((e.type, e.text_position, e.sample, e.id if e.type == _EVENT_PHONEME else b""))
        i += 1
    return 0  # 0 = keep synthesising


# Module-level so ctypes' C thunk is never garbage-collected while espeak may call it.
_synth_callback = _SynthCallbackType(_collect_samples)


def _library_path() -> str:
    """A private in-memory copy of libespeak-ng.so (a memfd), made once per process.

    The copy (own inode) is never shared with another user of espeak in this process (e.g. a
    phonemizer), so unloading it really unloads it (see `_fresh_espeak`), and nothing is left
    on disk. Without memfd (not Linux) the original is used, shared with any other user.
    """
    global _private_library_path
    if _private_library_path is None:
        try:
            fd = os.memfd_create("libespeak-ng-private.so")
            with open(espeakng_loader.get_library_path(), "rb") as src, os.fdopen(os.dup(fd), "wb") as dst:
                dst.write(src.read())
            _ctypes.dlclose(ctypes.CDLL(f"/proc/self/fd/{fd}")._handle)  # raises if memfds are noexec
            _private_library_path = f"/proc/self/fd/{fd}"
        except (AttributeError, OSError):
            _private_library_path = espeakng_loader.get_library_path()
    return _private_library_path


@contextmanager
def _seeded_libc_rand() -> Iterator[None]:
    """Run with libc's rand() seeded to 0, then give the caller back its own generator state.

    The bundled speechPlayer synthesiser (e.g. the 'Reed' and 'caleb' variants) draws noise
    from libc rand(); in glibc rand() uses random()'s state, which initstate/setstate swap.
    """
    state = ctypes.create_string_buffer(256)
    previous = _libc.initstate(0, state, len(state))
    try:
        yield
    finally:
        _libc.setstate(previous)


@contextmanager
def _fresh_espeak() -> Iterator[tuple[ctypes.CDLL, int]]:
    """Load, initialise, yield (library, sample_rate), then terminate and unload.

    Why reload for every call: espeak-ng keeps synthesis state in C statics (pitch-flutter
    phase, AGC, ...) that neither espeak_Terminate nor any API call resets, so the same text
    comes out a few ms longer or shorter depending on what was spoken before. A freshly
    loaded library has fresh statics; load + init + unload costs a few ms.
    """
    with _lock, _seeded_libc_rand():
        _chunks.clear()
        _events.clear()
        lib = ctypes.CDLL(_library_path(), mode=os.RTLD_LOCAL)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        data_path = espeakng_loader.get_data_path()
        sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _CHUNK_MS, data_path.encode(),
                                            _INITIALIZE_DONT_EXIT | _INITIALIZE_PHONEME_EVENTS)
        try:
            if sample_rate <= 0:
                raise RuntimeError(f"espeak_Initialize failed (code {sample_rate}) with data path {data_path}")
            lib.espeak_SetSynthCallback(_synth_callback)
            lib.espeak_ng_SetRandSeed(0)  # else seeded from the clock (breath noise of f2, f3, f5)
            yield lib, sample_rate
        finally:
            if sample_rate > 0:
                # espeak_ListVoices (also called by SetVoiceByName) returns a static array that
                # Terminate never frees (~2 kB lost per unload); one more call hands it to us.
                _libc.free(ctypes.cast(lib.espeak_ListVoices(None), ctypes.c_void_p))
            lib.espeak_Terminate()
            _ctypes.dlclose(lib._handle)


def _voice_identifiers(lib: ctypes.CDLL, language: str | None) -> list[str]:
    """espeak_ListVoices identifiers, e.g. 'gmw/en-US', or '!v/m3' for language 'variant'."""
    spec = _Voice(languages=language.encode()) if language else None
    voices = lib.espeak_ListVoices(ctypes.byref(spec) if spec is not None else None)
    ids, i = [], 0
    while voices[i]:  # NULL-terminated array of pointers
        ids.append(voices[i].contents.identifier.decode())
        i += 1
    return ids


def list_voices(language: str | None = "en") -> list[str]:
    """Voice names usable in `speak(voice=...)`, best match for `language` first (None: all).

    Names are espeak identifiers without their family folder, lower-cased: 'gmw/en-US'
    -> 'en-us'. Append '+VARIANT' (see `list_variants`) for other speakers.
    """
    with _fresh_espeak() as (lib, _):
        return _voice_names(lib, language)


def _voice_names(lib: ctypes.CDLL, language: str | None) -> list[str]:
    # A variant may declare a language too ('!v/Storm' is listed for 'en'): not a voice.
    ids = [i for i in _voice_identifiers(lib, language) if not i.startswith("!v/")]
    return list(dict.fromkeys(i.rsplit("/", 1)[-1].lower() for i in ids))


def list_variants() -> list[str]:
    """Variant names for 'voice+VARIANT': m1..m8, f1..f5, klatt..klatt6, and named ones."""
    with _fresh_espeak() as (lib, _):
        return [i.split("/", 1)[1] for i in _voice_identifiers(lib, "variant")]


def _set_voice(lib: ctypes.CDLL, voice: str) -> None:
    base, _, variant = voice.partition("+")
    # espeak ignores an unknown variant silently ('en+typo' sounds like 'en'), so check it here.
    variant_file = os.path.join(espeakng_loader.get_data_path(), "voices", "!v", variant)
    if variant and ("/" in variant or not os.path.isfile(variant_file)):
        raise ValueError(f"unknown espeak-ng variant '{variant}' in voice '{voice}'; "
                         f"e.g. m1..m8, f1..f5, klatt..klatt6 (list_variants() lists all)")
    if not base or lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
        english = ", ".join(_voice_names(lib, "en"))
        raise ValueError(f"unknown espeak-ng voice '{voice}'; English voices: {english} "
                         f"(list_voices(None) lists all; note British English is 'en', not 'en-gb')")


def _check_prosody(rate: int, pitch: int, pitch_range: int, word_gap: int) -> None:
    if not _RATE_MIN <= rate <= _RATE_MAX:
        raise ValueError(f"rate must be {_RATE_MIN}..{_RATE_MAX} words per minute, got {rate}")
    for name, value in (("pitch", pitch), ("pitch_range", pitch_range)):
        if not 0 <= value <= 100:
            raise ValueError(f"{name} must be 0..100, got {value}")
    if word_gap < 0:
        raise ValueError(f"word_gap must be >= 0 (units of 10 ms), got {word_gap}")


def speak(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50, pitch_range: int = 50,
          word_gap: int = 0) -> tuple[np.ndarray, int]:
    """Synthesise `text`; returns (audio (T,) float32 in [-1, 1), sample_rate=22050).

    rate: words per minute (80..450); pitch, pitch_range: 0..100 relative to the voice;
    word_gap: extra pause between words in units of 10 ms.
    """
    audio, sample_rate, _ = _synthesize(text, voice, rate, pitch, pitch_range, word_gap)
    return audio, sample_rate


@dataclass(frozen=True)
class WordTime:
    """A word of the spoken text and when it sounds, in seconds from the start of the audio."""

    word: str
    start: float
    end: float


def speak_with_word_times(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50,
                          pitch_range: int = 50, word_gap: int = 0) -> tuple[np.ndarray, int, list[WordTime]]:
    """`speak`, plus one WordTime per whitespace-separated word of `text`, in order.

    A word starts at espeak's word event and ends where espeak next starts a pause (word gap,
    punctuation, end of sentence) or the next word; the span is then trimmed to its first and
    last non-silent sample, so a stop's closure or a leading pause is not part of it. The audio
    is exactly `speak`'s; the times hold after resampling (seconds, not samples).
    """
    audio, sample_rate, events = _synthesize(text, voice, rate, pitch, pitch_range, word_gap)
    return audio, sample_rate, _word_times(text, audio, sample_rate, events)


def _synthesize(text: str, voice: str, rate: int, pitch: int, pitch_range: int,
                word_gap: int) -> tuple[np.ndarray, int, list[tuple[int, int, int, bytes]]]:
    if not text.strip():
        raise ValueError("text is empty")
    _check_prosody(rate, pitch, pitch_range, word_gap)
    with _fresh_espeak() as (lib, sample_rate):
        _set_voice(lib, voice)
        params = ((_VOLUME, _VOLUME_PERCENT), (_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range),
                  (_WORDGAP, word_gap))
        for param, value in params:
            if (err := lib.espeak_SetParameter(param, int(value), 0)) != _EE_OK:
                raise RuntimeError(f"espeak_SetParameter({param}, {value}) failed with code {err}")
        encoded = text.encode("utf-8") + b"\0"
        err = lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
        if err != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with code {err} for text {text[:50]!r}")
        samples = np.frombuffer(b"".join(_chunks), dtype=np.int16)
        events = list(_events)
    return (samples.astype(np.float32) / 32768.0), sample_rate, events


def _word_times(text: str, audio: np.ndarray, sample_rate: int,
                events: Sequence[tuple[int, int, int, bytes]]) -> list[WordTime]:
    """Sample bounds of each whitespace word from espeak's events, trimmed of silence, in seconds.

    Word events carry the 1-based character position of the word in `text`; several in one
    word (espeak reads '42' as two words) continue it. Phonemes whose mnemonic starts with '_'
    are pauses: the first after a word's last sound ends it.
    """
    words = list(re.finditer(r"\S+", text))
    bounds: list[list[int | None]] = [[None, None] for _ in words]
    current = None
    for kind, position, sample, phoneme in events:
        if kind == _EVENT_WORD:
            # the first word ending at or after `position`: after a full stop espeak reports the
            # position of the space before the word
            first = 0 if current is None else current
            index = next((i for i in range(first, len(words)) if position <= words[i].end()), None)
            if index is None:
                continue
            if index == current:
                bounds[current][1] = None  # the same word goes on
                continue
            if current is not None and bounds[current][1] is None:
                bounds[current][1] = sample
            current, bounds[index][0] = index, sample
        elif current is not None:
            if not phoneme.startswith(b"_"):
                bounds[current][1] = None
            elif bounds[current][1] is None:
                bounds[current][1] = sample
    if current is not None and bounds[current][1] is None:
        bounds[current][1] = len(audio)
    times = []
    for m, (lo, hi) in zip(words, bounds):
        if lo is None:
            raise ValueError(f"espeak-ng spoke no word for {m.group()!r} in {text[:50]!r}: word times need "
                             f"every whitespace-separated word to be pronounced")
        loud = np.flatnonzero(np.abs(audio[lo:hi]) >= _SILENCE)
        if loud.size:
            lo, hi = lo + int(loud[0]), lo + int(loud[-1]) + 1
        times.append(WordTime(m.group(), lo / sample_rate, hi / sample_rate))
    return times


@dataclass(frozen=True)
class SynthUtterance:
    """One utterance to synthesise. Kaldi requires `speaker` to be a prefix of `utt_id`."""

    utt_id: str
    speaker: str
    text: str
    voice: str
    rate: int = 175
    pitch: int = 50
    word_gap: int = 0  # extra pause between words, units of 10 ms


NOISE_COLORS = ("white", "pink")


def _noise(rng: np.random.Generator, n: int, color: str) -> np.ndarray:
    white = rng.standard_normal(n)
    if color == "white":
        return white
    if color == "pink":  # 1/f power: scale the spectrum by 1/sqrt(f), drop DC
        spectrum = np.fft.rfft(white)
        spectrum[0] = 0.0
        spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
        return np.fft.irfft(spectrum, n)
    raise ValueError(f"noise_color must be one of {NOISE_COLORS}, got {color!r}")


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator,
              noise_color: str = "white") -> np.ndarray:
    """audio + noise scaled so that 10*log10(mean(audio**2) / mean(noise**2)) == snr_db."""
    noise = _noise(rng, len(audio), noise_color)
    signal_power = float(np.mean(audio.astype(np.float64) ** 2))
    noise *= np.sqrt(signal_power / (np.mean(noise ** 2) * 10.0 ** (snr_db / 10.0)))
    return (audio + noise).astype(np.float32)


def _utterance_rng(seed: int, utt_id: str) -> np.random.Generator:
    # Seeded from (seed, utt_id), not from a running generator, so the noise of one
    # utterance does not depend on the order or the worker that renders it.
    digest = hashlib.sha256(f"{seed}\0{utt_id}".encode()).digest()
    return np.random.default_rng(np.frombuffer(digest, dtype=np.uint32))


def render_utterance(utt: SynthUtterance, sample_rate: int = 16000, noise_snr_db: float | None = None,
                     seed: int = 0, noise_color: str = "white") -> np.ndarray:
    """Speak, resample to `sample_rate` and optionally add noise: (T,) float32, peak <= 1."""
    return _render(utt, sample_rate, noise_snr_db, seed, noise_color)[0]


def _render(utt: SynthUtterance, sample_rate: int, noise_snr_db: float | None, seed: int,
            noise_color: str) -> tuple[np.ndarray, list[WordTime]]:
    """`render_utterance` and the word times (seconds: resampling and noise leave them)."""
    import torch  # heavy; only the data-dir path needs it

    audio, espeak_rate, words = speak_with_word_times(utt.text, voice=utt.voice, rate=utt.rate, pitch=utt.pitch,
                                                      word_gap=utt.word_gap)
    if sample_rate != espeak_rate:
        with torch.no_grad():
            audio = _resampler(espeak_rate, sample_rate)(torch.from_numpy(audio)).numpy()
    if noise_snr_db is not None:
        audio = add_noise(audio, noise_snr_db, _utterance_rng(seed, utt.utt_id), noise_color)
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if peak > 1.0:  # scale rather than clip: keeps the SNR and avoids clipping distortion
        audio = audio / peak
    return audio.astype(np.float32), words


@functools.lru_cache(maxsize=4)
def _resampler(orig_freq: int, new_freq: int):
    """torchaudio.functional.resample's filter, made once (it costs more than the resampling);
    float32 like resample's for float32 audio, so the output is the same."""
    import torch
    import torchaudio
    return torchaudio.transforms.Resample(orig_freq, new_freq, dtype=torch.float32)


def _write_wav(job: tuple) -> tuple[int, list[WordTime]]:
    """Render one utterance and write its WAV atomically; returns (number of samples, word times)."""
    utt, wav_path, sample_rate, noise_snr_db, seed, noise_color = job
    audio, words = _render(utt, sample_rate, noise_snr_db, seed, noise_color)
    with atomic_path(wav_path) as tmp:
        sf.write(tmp, audio, sample_rate, subtype="PCM_16", format="WAV")
    return len(audio), words


def _init_worker() -> None:
    import torch
    torch.set_num_threads(1)  # one process per core already


def _check_utterances(utterances: Sequence[SynthUtterance]) -> None:
    """Fail before any audio is made: ids, the Kaldi speaker-prefix rule, voices, prosody."""
    seen: set[str] = set()
    for u in utterances:
        for what, value in (("utterance id", u.utt_id), ("speaker id", u.speaker)):
            if not value or any(c.isspace() for c in value) or "/" in value:
                raise ValueError(f"utterance '{u.utt_id}': bad {what} {value!r} (empty, whitespace or '/')")
        if u.utt_id in seen:
            raise ValueError(f"duplicate utterance id '{u.utt_id}'")
        seen.add(u.utt_id)
        if not u.utt_id.startswith(u.speaker):
            raise ValueError(f"utterance '{u.utt_id}': speaker id '{u.speaker}' is not a prefix of the "
                             f"utterance id (Kaldi sorts utt2spk and spk2utt consistently only then)")
        if not u.text.strip():
            raise ValueError(f"utterance '{u.utt_id}': text is empty")
        _check_prosody(u.rate, u.pitch, 50, u.word_gap)
    for voice in sorted({u.voice for u in utterances}):
        with _fresh_espeak() as (lib, _):
            _set_voice(lib, voice)


def write_synth_data_dir(out_dir: str | os.PathLike, utterances: Sequence[SynthUtterance],
                         sample_rate: int = 16000, noise_snr_db: float | None = None, seed: int = 0,
                         num_workers: int = 1, noise_color: str = "white", ctm: bool = False) -> Path:
    """Synthesise `utterances` into a Kaldi data directory and return its path.

    Writes out_dir/wav/<utt_id>.wav (16-bit PCM, mono, `sample_rate`) and wav.scp (absolute
    paths), text, utt2spk, spk2utt, utt2dur (seconds); with `ctm`, also `ctm`: the words of
    `text` with their times from the synthesis (see `speak_with_word_times`), Kaldi CTM lines
    `<utt> 1 <start> <duration> <word>`, seconds from the utterance start. With `noise_snr_db`,
    white or pink noise is added at that SNR, seeded by (seed, utt_id). `num_workers` > 1
    renders in a spawn process pool (so a calling script needs the `if __name__ == "__main__":`
    guard).
    """
    utterances = list(utterances)
    _check_utterances(utterances)
    if noise_color not in NOISE_COLORS:
        raise ValueError(f"noise_color must be one of {NOISE_COLORS}, got {noise_color!r}")
    out_dir = Path(out_dir).resolve()
    wav_dir = out_dir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(u, wav_dir / f"{u.utt_id}.wav", sample_rate, noise_snr_db, seed, noise_color) for u in utterances]
    if num_workers > 1 and len(jobs) > 1:
        # spawn, not fork: the parent may hold torch threads and the espeak lock.
        with multiprocessing.get_context("spawn").Pool(min(num_workers, len(jobs)), _init_worker) as pool:
            rendered = pool.map(_write_wav, jobs, chunksize=max(1, len(jobs) // (4 * num_workers)))
    else:
        rendered = [_write_wav(job) for job in jobs]
    lengths = [n for n, _ in rendered]

    write_table(out_dir / "wav.scp", {u.utt_id: str(job[1]) for u, job in zip(utterances, jobs)})
    write_table(out_dir / "text", {u.utt_id: " ".join(u.text.split()) for u in utterances})
    utt2spk = {u.utt_id: u.speaker for u in utterances}
    write_table(out_dir / "utt2spk", utt2spk)
    write_table(out_dir / "spk2utt", spk2utt_from_utt2spk(utt2spk))
    write_table(out_dir / "utt2dur", {u.utt_id: f"{n / sample_rate:.4f}" for u, n in zip(utterances, lengths)})
    if ctm:
        write_ctm(out_dir / "ctm", {u.utt_id: words for u, (_, words) in zip(utterances, rendered)})
    return out_dir


def write_ctm(path: str | os.PathLike, utt2words: dict[str, Sequence[WordTime]]) -> None:
    """Kaldi CTM, utterances in C order, words in time order: `<utt> 1 <start> <duration> <word>`
    (milliseconds; the duration is that of the rounded times, so start + duration is the end)."""
    lines = []
    for utt in sorted(utt2words):
        for w in sorted(utt2words[utt], key=lambda w: w.start):
            start, end = round(w.start, 3), round(w.end, 3)
            lines.append(f"{utt} 1 {start:.3f} {end - start:.3f} {w.word}\n")
    atomic_write_text(path, "".join(lines))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Speak every text with every --voice into a Kaldi data "
                                     "dir; speakers are spk01, spk02, ... in --voice order.")
    parser.add_argument("texts", nargs="+")
    parser.add_argument("--out", required=True, help="data directory to write")
    parser.add_argument("--voice", action="append", help=f"repeatable; default {DEFAULT_VOICES[0]}")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--snr", type=float, default=None, help="add white noise at this SNR (dB)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=1)
    args = parser.parse_args(argv)
    utterances = [SynthUtterance(f"spk{s:02d}-{i:04d}", f"spk{s:02d}", text, voice)
                  for s, voice in enumerate(args.voice or [DEFAULT_VOICES[0]], start=1)
                  for i, text in enumerate(args.texts, start=1)]
    out = write_synth_data_dir(args.out, utterances, args.sample_rate, args.snr, args.seed, args.num_workers)
    print(f"wrote {len(utterances)} utterances to {out}")


if __name__ == "__main__":
    main()
