"""speechlm.data.synth: espeak-ng through ctypes, and the synthetic Kaldi data directory."""
import ctypes
import itertools
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from speechlm.data import synth
from speechlm.data.espeak import DEFAULT_VOICES, list_variants, list_voices, speak
from speechlm.data.synth import SynthUtterance, write_synth_data_dir

COUNT = "one two three four five"
PANGRAM = "the quick brown fox jumps over the lazy dog"


def median_f0(audio: np.ndarray, sample_rate: int, fmin: float = 60.0, fmax: float = 400.0) -> float:
    """Median over loud 40 ms frames of the autocorrelation-peak pitch. (torchaudio's
    detect_pitch_frequency agrees within ~10% here but is far slower on busy cores.)"""
    frame = int(0.04 * sample_rate)
    frames = np.lib.stride_tricks.sliding_window_view(audio, frame)[::frame // 2]
    energy = (frames ** 2).mean(axis=1)
    voiced = frames[energy > 0.1 * energy.max()] * np.hanning(frame)
    autocorr = np.fft.irfft(np.abs(np.fft.rfft(voiced, 2 * frame)) ** 2)[:, :frame]
    lo, hi = int(sample_rate / fmax), int(sample_rate / fmin)
    return float(np.median(sample_rate / (lo + autocorr[:, lo:hi].argmax(axis=1))))


def spectral_centroid(audio: np.ndarray, sample_rate: int) -> float:
    magnitude = np.abs(np.fft.rfft(audio))
    return float((magnitude * np.fft.rfftfreq(len(audio), 1 / sample_rate)).sum() / magnitude.sum())


# ---- speak -------------------------------------------------------------------------------

def test_speak_returns_plausible_audio():
    audio, sample_rate = speak(COUNT)
    assert sample_rate == 22050
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 1.0 < len(audio) / sample_rate < 4.0
    assert np.abs(audio).max() <= 1.0
    assert np.sqrt(np.mean(audio ** 2)) > 0.01


@pytest.mark.parametrize("voice", ["en-us", "en-us+f3", "en+klatt4", "en+Reed"])
def test_speak_is_deterministic_whatever_was_spoken_before(voice):
    # espeak keeps state in C statics between calls; f3 adds breath noise; Reed uses libc rand().
    first, _ = speak(COUNT, voice)
    speak("something else entirely", "en-gb-scotland+m2", rate=300, pitch=90)
    again, _ = speak(COUNT, voice)
    np.testing.assert_array_equal(first, again)


def test_speak_is_thread_safe():
    voices = ["en-us", "en+f2", "en-029+m5", "en-us+klatt3"] * 2
    expected = [speak(COUNT, v)[0] for v in voices]
    with ThreadPoolExecutor(4) as pool:
        for want, (got, _) in zip(expected, pool.map(lambda v: speak(COUNT, v), voices)):
            np.testing.assert_array_equal(want, got)


def test_speak_neither_depends_on_nor_disturbs_the_callers_libc_rand():
    libc = ctypes.CDLL(None)
    first, _ = speak(COUNT, "en+Reed")
    libc.srand(123)
    np.testing.assert_array_equal(first, speak(COUNT, "en+Reed")[0])
    libc.srand(7)
    expected = [libc.rand() for _ in range(3)]
    libc.srand(7)
    libc.rand()
    speak("hello", "en+Reed")
    assert [libc.rand() for _ in range(2)] == expected[1:]


def test_faster_rate_gives_shorter_audio():
    slow, _ = speak(COUNT, rate=120)
    fast, _ = speak(COUNT, rate=300)
    assert len(fast) < 0.7 * len(slow)


def test_higher_pitch_gives_higher_f0():
    low = median_f0(*speak(COUNT, pitch=10))
    high = median_f0(*speak(COUNT, pitch=90))
    assert high > 1.3 * low


def test_word_gap_lengthens_and_pitch_range_changes_the_audio():
    plain, sample_rate = speak(COUNT)
    gapped, _ = speak(COUNT, word_gap=20)  # 4 gaps of 200 ms
    assert (len(gapped) - len(plain)) / sample_rate > 0.5
    flat, _ = speak(COUNT, pitch_range=0)
    assert len(flat) != len(plain) or not np.array_equal(flat, plain)


def test_default_voices_are_distinct_speakers():
    assert len(set(DEFAULT_VOICES)) == len(DEFAULT_VOICES) >= 8
    features = {}
    for voice in DEFAULT_VOICES:
        audio, sample_rate = speak(PANGRAM, voice)
        assert np.sqrt(np.mean(audio ** 2)) > 0.01, voice
        features[voice] = np.array([median_f0(audio, sample_rate), spectral_centroid(audio, sample_rate),
                                    len(audio)])
    for a, b in itertools.combinations(DEFAULT_VOICES, 2):
        assert np.abs(np.log(features[a] / features[b])).max() > 0.02, (a, b)


def test_list_voices_and_variants():
    english = list_voices()
    assert {"en", "en-us", "en-gb-scotland", "en-029"} <= set(english)
    assert all("/" not in v and "+" not in v for v in english)
    assert "storm" not in english  # a variant that declares language 'en' is not a voice
    everything = list_voices(None)
    assert set(english) < set(everything) and "de" in everything
    variants = set(list_variants())
    assert {f"m{i}" for i in range(1, 9)} | {f"f{i}" for i in range(1, 6)} | {"klatt", "klatt4"} <= variants
    for voice in english:
        assert len(speak("hello", voice)[0]) > 0, voice


@pytest.mark.parametrize("voice", ["en-gb", "xx-nope", "en-us+typo", "+m3", ""])
def test_unknown_voice_or_variant_raises(voice):
    with pytest.raises(ValueError, match="unknown espeak-ng"):
        speak("hello", voice)


@pytest.mark.parametrize("kwargs", [dict(rate=20), dict(rate=1000), dict(pitch=-1), dict(pitch_range=101),
                                    dict(word_gap=-1), dict(text="  ")])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        speak(**{"text": "hello", **kwargs})


# ---- write_synth_data_dir ----------------------------------------------------------------

# Deliberately unsorted, with two speakers and per-utterance prosody.
UTTS = [
    SynthUtterance("spkb-002", "spkb", "five wizards box quickly", "en+f2", rate=200),
    SynthUtterance("spka-001", "spka", "one two three", "en-us+m1"),
    SynthUtterance("spka-000", "spka", "hello   world", "en-us+m1", pitch=70),
]


def read_kaldi_table(path) -> dict[str, str]:
    """Parse strictly: UTF-8, LF line endings, one `key value` per line, keys in C order."""
    raw = path.read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n"), path
    rows = [line.split(" ", 1) for line in raw.decode("utf-8").split("\n")[:-1]]
    keys = [key for key, _ in rows]
    assert keys == sorted(keys, key=lambda k: k.encode()) and len(set(keys)) == len(keys), path
    return dict(rows)


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory):
    return write_synth_data_dir(tmp_path_factory.mktemp("synth") / "clean", UTTS)


def test_data_dir_is_a_sorted_kaldi_dir(clean_dir):
    wav_scp = read_kaldi_table(clean_dir / "wav.scp")
    assert list(wav_scp) == ["spka-000", "spka-001", "spkb-002"]
    assert read_kaldi_table(clean_dir / "text") == {
        "spka-000": "hello world", "spka-001": "one two three", "spkb-002": "five wizards box quickly"}
    assert read_kaldi_table(clean_dir / "utt2spk") == {"spka-000": "spka", "spka-001": "spka", "spkb-002": "spkb"}
    assert read_kaldi_table(clean_dir / "spk2utt") == {"spka": "spka-000 spka-001", "spkb": "spkb-002"}
    utt2dur = read_kaldi_table(clean_dir / "utt2dur")
    for utt in UTTS:
        path = Path(wav_scp[utt.utt_id])
        assert path.is_absolute() and path == clean_dir / "wav" / f"{utt.utt_id}.wav"
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert len(utt2dur[utt.utt_id].split(".")[1]) >= 3
        assert abs(info.frames / 16000 - float(utt2dur[utt.utt_id])) < 1e-3


def test_wavs_hold_the_resampled_speech_of_each_utterance(clean_dir):
    for utt in UTTS:
        audio, sample_rate = speak(utt.text, utt.voice, rate=utt.rate, pitch=utt.pitch)
        expected = torchaudio.functional.resample(torch.from_numpy(audio), sample_rate, 16000).numpy()
        written, _ = sf.read(clean_dir / "wav" / f"{utt.utt_id}.wav", dtype="float32")
        assert written.shape == expected.shape
        assert np.abs(written - expected).max() < 2 / 32768  # 16-bit quantisation only


@pytest.mark.parametrize("noise_color", ["white", "pink"])
def test_noise_is_added_at_the_requested_snr(clean_dir, tmp_path, noise_color):
    noisy_dir = write_synth_data_dir(tmp_path / "noisy", UTTS, noise_snr_db=10.0, noise_color=noise_color)
    for utt in UTTS:
        clean, _ = sf.read(clean_dir / "wav" / f"{utt.utt_id}.wav", dtype="float64")
        noisy, _ = sf.read(noisy_dir / "wav" / f"{utt.utt_id}.wav", dtype="float64")
        gain = noisy @ clean / (clean @ clean)  # 1 unless the mix was scaled down to avoid clipping
        noise = noisy / gain - clean
        snr_db = 10 * math.log10((clean @ clean) / (noise @ noise))
        assert abs(snr_db - 10.0) < 0.2, (utt.utt_id, snr_db)


def test_noise_depends_on_seed_and_utt_id_not_on_order_or_process(tmp_path):
    serial = write_synth_data_dir(tmp_path / "serial", UTTS, noise_snr_db=5.0, seed=1)
    # Reversed, in 2 spawned processes: a fresh process (and, after ~1 s of start-up, a
    # different clock second) must not change the speech nor the noise.
    pooled = write_synth_data_dir(tmp_path / "pooled", UTTS[::-1], noise_snr_db=5.0, seed=1, num_workers=2)
    for utt in UTTS:
        name = f"wav/{utt.utt_id}.wav"
        assert (serial / name).read_bytes() == (pooled / name).read_bytes(), utt.utt_id
    twin = SynthUtterance("spka-009", "spka", UTTS[1].text, UTTS[1].voice)  # same speech, other id
    reseeded = write_synth_data_dir(tmp_path / "reseeded", [UTTS[1], twin], noise_snr_db=5.0, seed=2)
    name = f"wav/{UTTS[1].utt_id}.wav"
    assert (serial / name).read_bytes() != (reseeded / name).read_bytes()
    assert (reseeded / name).read_bytes() != (reseeded / "wav/spka-009.wav").read_bytes()


@pytest.mark.parametrize("utts, match", [
    ([SynthUtterance("spka-1", "spkb", "hi", "en-us")], "spka-1.*prefix"),
    ([SynthUtterance("s-1", "s", "hi", "en-us"), SynthUtterance("s-1", "s", "ho", "en-us")], "duplicate.*s-1"),
    ([SynthUtterance("s 1", "s", "hi", "en-us")], "whitespace"),
    ([SynthUtterance("s-1", "s", "", "en-us")], "s-1.*empty"),
    ([SynthUtterance("s-1", "s", "hi", "en-gb")], "unknown espeak-ng voice"),
])
def test_bad_utterances_raise_before_anything_is_written(tmp_path, utts, match):
    with pytest.raises(ValueError, match=match):
        write_synth_data_dir(tmp_path / "data", utts)
    assert not (tmp_path / "data").exists()


def test_cli_speaks_every_text_with_every_voice(tmp_path, capsys):
    synth.main(["--out", str(tmp_path / "data"), "--voice", "en-us", "--voice", "en+f2", "hello there", "bye"])
    assert read_kaldi_table(tmp_path / "data" / "utt2spk") == {
        "spk01-0001": "spk01", "spk01-0002": "spk01", "spk02-0001": "spk02", "spk02-0002": "spk02"}
    assert "wrote 4 utterances" in capsys.readouterr().out
