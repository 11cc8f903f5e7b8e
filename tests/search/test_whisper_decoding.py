"""Whisper decoding parity: a tiny OpenAI-format Whisper trained here for about a minute
(openai-whisper's model class and loss, tests/whisper_tiny.py), loaded into speechlm, decodes
exactly as `whisper.decode` / `whisper.transcribe` (temperature 0, same options): text,
tokens, language, timestamps, long-form segments; greedy and beam 5; our side batched over
files. Then a fine-tuning step through speechlm's multitask loss, saved back in OpenAI's
format, loads in openai-whisper and decodes the same there."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

whisper = pytest.importorskip("whisper")

from whisper_tiny import clips, long_audio, train_tiny_whisper  # noqa: E402

from speechlm.features.whisper_mel import log_mel_spectrogram  # noqa: E402
from speechlm.search.whisper import WhisperSearch  # noqa: E402
from speechlm.search.whisper_longform import transcribe_long  # noqa: E402
from speechlm.train.pretrained import load_pretrained  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("whisper") / "tiny.pt"
    theirs, loss = train_tiny_whisper(path)
    assert loss < 3.0, f"the tiny Whisper did not learn (loss {loss:.2f}): parity on garbage proves little"
    ours, tokenizer, config = load_pretrained(path)
    return path, theirs, ours, tokenizer, clips(0)


def _windows(data):
    audio = [torch.from_numpy(whisper.pad_or_trim(a)) for a, *_ in data]
    return torch.stack([whisper.log_mel_spectrogram(a) for a in audio]), audio


def _ours(ours, tokenizer, audio, **options):
    search = WhisperSearch(tokenizer, **options)
    batch = torch.nn.utils.rnn.pad_sequence(audio, batch_first=True)
    lengths = torch.tensor([len(a) for a in audio])
    return search.decode(ours, ours.encode(batch, lengths))


@pytest.mark.parametrize("options", [
    dict(language="en", timestamps=False),
    dict(language=None, timestamps=False),  # detected
    dict(language=None, timestamps=True),
    dict(language="de", timestamps=True, beam_size=5),
    dict(language=None, timestamps=False, beam_size=5),
    dict(language="en", timestamps=True, beam_size=5, patience=2.0, length_penalty=0.6),
    dict(language="en", timestamps=False, prompt="one two three", prefix="four"),
])
def test_decode_equals_whisper_decode(tiny, options):
    _, theirs, ours, tokenizer, data = tiny
    mels, audio = _windows(data[::2])  # 8 clips, both languages, every sentence
    got = _ours(ours, tokenizer, audio, **options)
    their_options = dict(options)
    their_options["without_timestamps"] = not their_options.pop("timestamps")
    texts = set()
    for mel, mine in zip(mels, got):
        want = whisper.decode(theirs, mel, whisper.DecodingOptions(fp16=False, **their_options))
        assert mine.tokens == want.tokens
        assert mine.text == want.text
        assert mine.language == want.language
        assert math.isclose(mine.avg_logprob, want.avg_logprob, rel_tol=1e-4, abs_tol=1e-4)
        assert math.isclose(mine.no_speech_prob, want.no_speech_prob, rel_tol=1e-4, abs_tol=1e-6)
        texts.add(want.text)
    assert all(t for t in texts), "the trained model should say something for every clip"


def test_detected_language_probabilities_equal(tiny):
    _, theirs, ours, tokenizer, data = tiny
    mels, audio = _windows(data[:4])
    got = _ours(ours, tokenizer, audio, language=None)
    _, want = theirs.detect_language(mels)
    for mine, theirs_probs in zip(got, want):
        assert mine.language == max(theirs_probs, key=theirs_probs.get)
        assert max(abs(mine.language_probs[c] - p) for c, p in theirs_probs.items()) < 1e-5


@pytest.mark.parametrize("options", [dict(), dict(beam_size=5, condition_on_previous_text=False, language="en",
                                                  initial_prompt="hello world")])
def test_long_form_equals_whisper_transcribe(tiny, options):
    _, theirs, ours, tokenizer, data = tiny
    files = [torch.from_numpy(long_audio(data[:6] + data[:5])), torch.from_numpy(long_audio(data[8:] + data[:6])),
             torch.from_numpy(data[3][0])]  # ~45 s, ~40 s and one short clip
    assert len(files[0]) / 16000 > 30 and len(files[1]) / 16000 > 30
    condition = options.pop("condition_on_previous_text", True)
    initial_prompt = options.pop("initial_prompt", None)
    search = WhisperSearch(tokenizer, timestamps=True, **options)
    got = transcribe_long(ours, search, files, log_mel_spectrogram, 80, condition_on_previous_text=condition,
                          initial_prompt=initial_prompt)
    n_segments = 0
    for audio, mine in zip(files, got):
        want = whisper.transcribe(theirs, audio, temperature=0.0, fp16=False, condition_on_previous_text=condition,
                                  initial_prompt=initial_prompt, **options)
        assert mine["language"] == want["language"]
        assert mine["text"] == want["text"]
        assert len(mine["segments"]) == len(want["segments"])
        for a, b in zip(mine["segments"], want["segments"]):
            assert (a["seek"], a["tokens"], a["text"]) == (b["seek"], b["tokens"], b["text"])
            assert math.isclose(a["start"], b["start"], abs_tol=1e-9) and math.isclose(a["end"], b["end"], abs_tol=1e-9)
            assert math.isclose(a["avg_logprob"], b["avg_logprob"], rel_tol=1e-4, abs_tol=1e-4)
        n_segments += len(want["segments"])
    assert n_segments >= 3


def test_transcribe_cli_takes_an_openai_checkpoint(tiny, tmp_path, capsys):
    from speechlm.bin.transcribe import main

    path, theirs, _, _, data = tiny
    wavs = []
    for k, (audio, *_rest) in enumerate(data[:2]):
        wavs.append(tmp_path / f"clip{k}.wav")
        sf.write(wavs[-1], audio, 16000, subtype="FLOAT")
    long_file = tmp_path / "long.flac"
    sf.write(long_file, long_audio(data[:6] + data[:5]), 16000, subtype="PCM_24")
    files = [*map(str, wavs), str(long_file)]
    assert main(["--model", str(path), *files]) == 0
    lines = capsys.readouterr().out.splitlines()
    for line, f in zip(lines, files):
        audio = torch.from_numpy(sf.read(f, dtype="float32")[0])
        assert line == f"{f}\t{whisper.transcribe(theirs, audio, temperature=0.0, fp16=False)['text'].strip()}"
    assert main(["--model", str(path), "--output-format", "json", "--output-dir", str(tmp_path / "out"),
                 "--beam-size", "5", "--language", "en", files[-1]]) == 0
    got = json.loads((tmp_path / "out" / "long.json").read_text())
    want = whisper.transcribe(theirs, torch.from_numpy(sf.read(files[-1], dtype="float32")[0]), temperature=0.0,
                              fp16=False, beam_size=5, language="en")
    assert [s["text"] for s in got["segments"]] == [s["text"] for s in want["segments"]]
    assert main(["--model", str(path), "--output-format", "srt", "--output-dir", str(tmp_path / "out"), files[-1]]) == 0
    srt = (tmp_path / "out" / "long.srt").read_text()
    assert srt.startswith("1\n00:00:") and " --> " in srt


def test_fine_tuned_model_saved_back_decodes_the_same_in_whisper(tiny, tmp_path):
    from speechlm.data.collate import collate_audio
    from speechlm.data.transforms import MultitaskTargets
    from speechlm.interop.whisper import save_openai_checkpoint

    _, _, _, tokenizer, data = tiny
    model, tokenizer, _ = load_pretrained(tiny[0])  # a fresh copy to train
    targets = MultitaskTargets(tokenizer=tokenizer)
    items = [targets({"id": f"u{k}", "audio": torch.from_numpy(a), "text": text, "lang": lang})
             for k, (a, lang, text, *_r) in enumerate(data[:6])]
    batch = collate_audio(items)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = model(batch)["loss"].item()
    for _ in range(3):
        loss = model(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert model(batch)["loss"].item() < before
    save_openai_checkpoint(model, tmp_path / "tuned.pt")
    theirs = whisper.load_model(tmp_path / "tuned.pt", device="cpu")
    mels, audio = _windows(data[::2])
    got = _ours(model, tokenizer, audio, language=None, timestamps=True, beam_size=5)
    for mel, mine in zip(mels, got):
        want = whisper.decode(theirs, mel, whisper.DecodingOptions(fp16=False, beam_size=5))
        assert (mine.tokens, mine.text, mine.language) == (want.tokens, want.text, want.language)
    assert np.isfinite(before)
