"""espeak-ng in-process: speak text (with word times), list voices and variants.

espeak-ng is driven in-process through `ctypes` and the `libespeak-ng.so` bundled with
`espeakng-loader` (no `espeak-ng` binary needed). A "speaker" is an espeak voice plus a
variant, e.g. `en-us+m3` or `en-gb-scotland+f2`: the voice sets the accent, the variant
the pitch and formants. Output is deterministic: the same text, voice and prosody give the
same samples whatever was spoken before and in whichever process. Word times come from
espeak's own word and phoneme events (trimmed of silence), not from an aligner.

    audio, sr = speak("one two three", voice="en-us+f2")       # float32 (T,), 22050
    audio, sr, words = speak_with_word_times("null eins", voice="de")  # [WordTime("null", 0.0, 0.235), ...]

Corpora (Kaldi data dirs) built on it: `speechlm.data.synth`.
"""
from __future__ import annotations

import _ctypes  # dlclose, which ctypes does not expose
import ctypes
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import espeakng_loader
import numpy as np


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


def check_prosody(rate: int, pitch: int, pitch_range: int, word_gap: int) -> None:
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
    check_prosody(rate, pitch, pitch_range, word_gap)
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


def check_voice(voice: str) -> None:
    """ValueError unless espeak-ng can load `voice` (e.g. 'en-us+f2')."""
    with _fresh_espeak() as (lib, _):
        _set_voice(lib, voice)
