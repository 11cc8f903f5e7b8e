"""MultitaskTargets: Whisper-format decoder input/targets from data-dir items, and the
multitask model's loss on them (prompt positions carry no loss)."""
from __future__ import annotations

import pytest
import torch

from speechlm.data.collate import collate_audio
from speechlm.data.transforms import MultitaskTargets

whisper = pytest.importorskip("whisper")

from speechlm.tokenizers.whisper import WhisperTokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    return WhisperTokenizer(speaker_change=True)


def test_transcribe_sequence_is_whispers(tok):
    theirs = whisper.tokenizer.get_tokenizer(True, num_languages=99, language="de", task="transcribe")
    item = MultitaskTargets(tokenizer=tok)({"id": "u1", "text": "eins  zwei", "lang": "de"})
    expected = [*theirs.sot_sequence_including_notimestamps, *theirs.encode(" eins zwei"), theirs.eot]
    assert item["dec_in"].tolist() == expected[:-1]
    assert item["dec_target"].tolist() == expected[1:]


def test_translate_timestamps_prompt_and_speaker_change(tok):
    t = MultitaskTargets(tokenizer=tok, tasks={"translate": 1.0}, prev_text=1.0)
    item = t({"id": "u", "text": "uno dos", "lang": "es", "text_en": "one two", "prev_text": "tres"})
    ids = tok.special_ids
    prompt = [ids["sot_prev"], *tok.encode(" tres")]
    seq = [ids["sot"], ids["lang_es"], ids["translate"], ids["no_timestamps"], *tok.encode(" one two"), ids["eot"]]
    assert item["dec_in"].tolist() == prompt + seq[:-1]
    assert item["dec_target"].tolist() == [-1] * len(prompt) + seq[1:]  # no loss on the prompt

    item = MultitaskTargets(tokenizer=tok, timestamps=1.0)(
        {"id": "u", "text": "one two", "lang": "en", "word_times": "0.10 0.52 0.60 1.00"})
    body = item["dec_target"].tolist()[2:]
    assert body == [tok.timestamp_id(0.1), *tok.encode(" one"), tok.timestamp_id(0.52),
                    tok.timestamp_id(0.6), *tok.encode(" two"), tok.timestamp_id(1.0), ids["eot"]]
    assert tok.decode(body) == " one two"

    item = MultitaskTargets(tokenizer=tok, default_language="en", ctc=True)({"id": "u", "text": "one two <sc> three"})
    target = item["dec_target"].tolist()
    assert target.count(ids["speaker_change"]) == 1
    assert tok.decode(target) == "one two <sc> three"
    assert ids["speaker_change"] not in item["ctc_tokens"].tolist()


def test_bad_items_are_named(tok):
    with pytest.raises(ValueError, match="'u7'.*word_times has 3 values for 2 words"):
        MultitaskTargets(tokenizer=tok, timestamps=1.0)({"id": "u7", "text": "a b", "lang": "en", "word_times": "0 1 2"})
    with pytest.raises(ValueError, match="'u8'.*translate needs the item key 'text_en'"):
        MultitaskTargets(tokenizer=tok, tasks={"translate": 1.0})({"id": "u8", "text": "a", "lang": "en"})
    with pytest.raises(ValueError, match="unknown tasks"):
        MultitaskTargets(tokenizer=tok, tasks={"summarize": 1.0})


def test_task_mix_follows_the_weights(tok):
    torch.manual_seed(0)
    t = MultitaskTargets(tokenizer=tok, tasks={"transcribe": 1.0, "translate": 3.0})
    translate = tok.special_ids["translate"]
    n = sum(t({"id": "u", "text": "a", "lang": "de", "text_en": "b"})["dec_in"][2].item() == translate
            for _ in range(400))
    assert 260 < n < 340  # 3/4 of 400


def test_model_loss_ignores_the_prompt(tok):
    from speechlm.decoders.multitask import MultitaskDecoder
    from speechlm.encoders.whisper import WhisperEncoder
    from speechlm.features.whisper_mel import WhisperLogMel
    from speechlm.models.multitask import MultitaskModel

    torch.manual_seed(0)
    model = MultitaskModel(tok.vocab_size, WhisperEncoder(80, 32, 2, 1), MultitaskDecoder(tok.vocab_size, 32, 2, 1),
                           frontend=WhisperLogMel(chunk_seconds=None)).eval()
    t = MultitaskTargets(tokenizer=tok, prev_text=1.0)
    audio = torch.randn(8000) * 0.1
    with_prompt = t({"id": "a", "audio": audio, "text": "one", "lang": "en", "prev_text": "some earlier words"})
    without = t({"id": "a", "audio": audio, "text": "one", "lang": "en"})
    # the same answer after a prompt: its loss covers the answer's positions only, so two
    # batches with prompts of different content but equal length give one loss
    other = t({"id": "a", "audio": audio, "text": "one", "lang": "en", "prev_text": "other earlier words"})
    with torch.no_grad():
        a, b = (model(collate_audio([x]))["loss"].item() for x in (with_prompt, other))
        c = model(collate_audio([without]))["loss"].item()
    for x in (with_prompt, other):
        x.pop("prev_text")  # a table of some items only: collate refuses it
    n_target = int((with_prompt["dec_target"] >= 0).sum())
    assert n_target == len(without["dec_target"])
    assert a != c and b != c  # the prompt is context ...
    assert torch.isfinite(torch.tensor([a, b, c])).all()
    # ... and a padded batch gives each row's loss as alone (length-normalised over real tokens)
    with torch.no_grad():
        both = model(collate_audio([with_prompt, without]))["loss"].item()
    expected = (a * n_target + c * n_target) / (2 * n_target)
    assert abs(both - expected) < 1e-4
