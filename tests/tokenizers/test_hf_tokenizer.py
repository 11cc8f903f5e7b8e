"""HFTokenizer against transformers' AutoTokenizer over the same files (peers: transformers,
tokenizers). Two vocabularies built here, no downloads: (a) a byte-level BPE (GPT-2/Qwen2
style) trained with `tokenizers` and saved by transformers' PreTrainedTokenizerFast; (b)
train_hf_tokenizer's sentencepiece-style BPE, saved by our save_pretrained."""

from __future__ import annotations

import io
import json
import pickle
import random
import shutil
import sys

import jinja2
import pytest
import torch

transformers = pytest.importorskip("transformers")
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

from speechlm.bin import train_hf_tokenizer as cli  # noqa: E402
from speechlm.tokenizers import HFTokenizer, load_tokenizer, tokenizer_from_dict  # noqa: E402
from speechlm.tokenizers.chat_template import CHATML, CHATML_INLINE  # noqa: E402
from speechlm.tokenizers.hf import ESCAPE_MARK, token_from_name, token_name  # noqa: E402
from speechlm.tokenizers.hf_train import DEFAULT_SPECIAL_TOKENS, train_hf_tokenizer  # noqa: E402

WORDS = ("one two three four five six seven eight nine zero hello world the quick brown fox jumps over "
         "lazy dog café naïve über straße 日本 語 😀 don't it's 3.14 1,000 (yes) [no] e-mail #tag @user").split()
TEXTS = [
    "hello world",
    "The quick brown fox, naïve café! 12345 and 3.14159",
    "  leading and trailing spaces  ",
    "tabs\tand\nnew lines\n\nparagraph",
    "unseen: zebra Ωmega ∑∫ 한국어 🙂🙃 «quotes» — dash",
    "<|im_start|>user how much is two plus two<|im_end|>",
    "<s>spelled out</s> <pad> x<|audio|>y <|endoftext|>",
    "",
    "a",
]
ROLES_A = {"audio": "<|audio|>", "start_of_turn": "<|im_start|>", "end_of_turn": "<|im_end|>"}
MESSAGES = [
    {"role": "system", "content": "You count."},
    {"role": "user", "content": "how much is two plus two"},
    {"role": "assistant", "content": "four"},
    {"role": "user", "content": "and three plus <|audio|> five?"},
]


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rnd = random.Random(seed)
    return [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 12))) for _ in range(n)]


def hf_ids(hf, text: str) -> list[int]:
    return hf.encode(text, add_special_tokens=False)


def hf_chat_ids(hf, messages, **kwargs) -> list[int]:
    return list(hf.apply_chat_template(messages, tokenize=True, return_dict=False, **kwargs))


@pytest.fixture(scope="module")
def byte_level_dir(tmp_path_factory):
    """(a): GPT-2-style byte-level BPE with Qwen2-like special tokens, a non-special added
    token holding whitespace, saved by transformers."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<s>", "<|im_start|>", "<|im_end|>", "<|audio|>"]
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(corpus(), trainer)
    backend.add_tokens([AddedToken("\n\n", normalized=False)])
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|audio|>"], chat_template=CHATML)
    directory = tmp_path_factory.mktemp("byte_level")
    hf.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def byte_level(byte_level_dir):
    return HFTokenizer.from_pretrained(byte_level_dir, special_tokens=ROLES_A)


@pytest.fixture(scope="module")
def trained():
    """(b): train_hf_tokenizer's sentencepiece-style BPE with the inline ChatML template."""
    chats = [f"<|im_start|>user {line}<|im_end|><|im_start|>assistant {line[::-1]}<|im_end|>"
             for line in corpus(50, 1)]
    return train_hf_tokenizer(corpus() + chats, 600, DEFAULT_SPECIAL_TOKENS, CHATML_INLINE)


@pytest.fixture(scope="module")
def trained_dir(trained, tmp_path_factory):
    return trained.save_pretrained(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="module", params=["byte_level", "trained"])
def pair(request):
    """(HFTokenizer, transformers' AutoTokenizer of the same directory)."""
    ours = request.getfixturevalue(request.param)
    return ours, transformers.AutoTokenizer.from_pretrained(request.getfixturevalue(f"{request.param}_dir"))


def test_encode_decode_tokenize_equal_transformers(pair):
    ours, hf = pair
    assert ours.vocab_size == len(hf)
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == hf_ids(hf, text), text
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True), text
        assert ours.decode(torch.tensor(ids, dtype=torch.long)) == ours.decode(ids)
        assert [token_from_name(t) for t in ours.tokenize(text)] == hf.convert_ids_to_tokens(ids)
    assert hf.convert_ids_to_tokens(ours.encode("<|im_start|>")) == ["<|im_start|>"]  # spelled-out specials match
    with pytest.raises(IndexError, match="out of range"):
        ours.decode([ours.vocab_size])


def test_special_ids_by_role(byte_level, trained, byte_level_dir):
    hf = transformers.AutoTokenizer.from_pretrained(byte_level_dir)
    assert byte_level.special_ids == {
        "sos": hf.bos_token_id, "eos": hf.eos_token_id, "pad": hf.pad_token_id,
        **{role: hf.convert_tokens_to_ids(t) for role, t in ROLES_A.items()}}
    assert "unk" not in byte_level.special_ids  # byte-level: no unk token
    assert byte_level.sos_id == hf.bos_token_id and byte_level.eos_id == hf.eos_token_id
    assert trained.special_ids == {role: i for i, role in enumerate(DEFAULT_SPECIAL_TOKENS)}
    assert trained.tokens[7:9] == ["<0x00>", "<0x01>"]  # byte fallback after the special tokens


@pytest.mark.parametrize("generation_prompt", [False, True])
def test_chat_template_equal_transformers(pair, generation_prompt):
    ours, hf = pair
    assert ours.chat_template == hf.chat_template
    for messages in (MESSAGES, MESSAGES[1:2], MESSAGES[:3]):
        text = ours.render_chat(messages, add_generation_prompt=generation_prompt)
        assert text == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        ids = ours.apply_chat_template(messages, add_generation_prompt=generation_prompt)
        assert ids == hf_chat_ids(hf, messages, add_generation_prompt=generation_prompt)
        assert ids == ours.encode(text)


def test_chat_template_variables_and_helpers(byte_level, byte_level_dir):
    """bos/eos variables, raise_exception, trim/lstrip_blocks, tojson, {% generation %}, kwargs."""
    template = (
        "{{ bos_token }}\n"
        "{% for m in messages %}\n"
        "    {% if m['role'] == 'tool' %}{{ raise_exception('no tools here') }}{% endif %}\n"
        "    {% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}{{ eos_token }}{% endgeneration %}"
        "{% else %}{{ m['role'] | upper }}: {{ m['content'] }} {{ m | tojson }}\n{% endif %}\n"
        "{% endfor %}\n"
        "{% if add_generation_prompt %}ASSISTANT{{ suffix }}{% endif %}"
        "{% if tools is not none or documents is not none %}TOOLS{% endif %}"
    )
    ours = HFTokenizer(byte_level.to_dict()["tokenizer_json"], byte_level.special_tokens, template)
    hf = transformers.AutoTokenizer.from_pretrained(byte_level_dir)
    messages = [*MESSAGES[:3], {"role": "user", "content": "<é> & \"q\"", "name": None}]
    for prompt in (False, True):
        expected = hf.apply_chat_template(messages, chat_template=template, tokenize=False,
                                          add_generation_prompt=prompt, suffix=":")
        assert ours.render_chat(messages, add_generation_prompt=prompt, suffix=":") == expected
        assert expected.startswith("<s>\nSYSTEM: You count. {\"role\": \"system\"")  # no HTML escaping
    with pytest.raises(jinja2.TemplateError, match="no tools here"):
        ours.render_chat([{"role": "tool", "content": "x"}])
    with pytest.raises(jinja2.TemplateError, match="no tools here"):
        hf.apply_chat_template([{"role": "tool", "content": "x"}], chat_template=template, tokenize=False)


def test_metaspace_always_prompt_answer_split(trained):
    """Prompt and answer encoded apart == encoded joined by a space; an inline ChatML answer
    turn == the generation prompt's ids + encode(answer) + end_of_turn."""
    for prompt, answer in [("how much is two plus two", "four"), ("x", "naïve 😀 café"), ("the fox", "3.14")]:
        assert trained.encode(f"{prompt} {answer}") == trained.encode(prompt) + trained.encode(answer)
        question = [{"role": "user", "content": prompt}]
        full = trained.apply_chat_template([*question, {"role": "assistant", "content": answer}])
        generation = trained.apply_chat_template(question, add_generation_prompt=True)
        assert full == generation + trained.encode(answer) + [trained.special_ids["end_of_turn"]]
    # text after a special token is encoded as at the start ("always" prepends ▁ there too)
    start = trained.special_ids["start_of_turn"]
    assert trained.encode("<|im_start|>assistant one") == [start, *trained.encode("assistant one")]
    assert trained.render_chat([{"role": "assistant", "content": "three"}]) == \
        "<|im_start|>assistant three<|im_end|>"
    # the special tokens are whole tokens, never pieces learned from the chat lines
    assert not [t for t in trained.tokens if "<|" in t and t not in DEFAULT_SPECIAL_TOKENS.values()]


def test_round_trips(pair, tmp_path):
    ours, _ = pair
    d = ours.to_dict()
    assert set(d) == {"_target_", "tokenizer_json", "special_tokens", "chat_template"}
    assert d["_target_"] == "speechlm.tokenizers.hf.HFTokenizer"
    buffer = io.BytesIO()
    torch.save({"tokenizer": d}, buffer)
    buffer.seek(0)
    from_checkpoint = torch.load(buffer, weights_only=True)["tokenizer"]
    copies = [tokenizer_from_dict(d), tokenizer_from_dict(from_checkpoint), load_tokenizer(ours.save(tmp_path)),
              pickle.loads(pickle.dumps(ours))]
    multiline = HFTokenizer(d["tokenizer_json"], d["special_tokens"], "{{ 'a' }}\n  b: 'c' # \t\n\n")
    assert load_tokenizer(multiline.save(tmp_path / "multiline")).chat_template == multiline.chat_template
    assert "tokenizer_json" not in (tmp_path / "tokenizer.yaml").read_text()
    assert (tmp_path / "tokenizer.json").read_text() == d["tokenizer_json"]
    for copy in copies:
        assert isinstance(copy, HFTokenizer) and copy.to_dict() == d
        assert copy.tokens == ours.tokens and copy.special_ids == ours.special_ids
        assert [copy.encode(t) for t in TEXTS] == [ours.encode(t) for t in TEXTS]
        assert copy.apply_chat_template(MESSAGES) == ours.apply_chat_template(MESSAGES)


def test_save_pretrained_loads_in_transformers(pair, tmp_path):
    ours, _ = pair
    (tmp_path / "chat_template.jinja").write_text("stale")  # would override the config's
    ours.save_pretrained(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    roles = ours.special_tokens
    assert (hf.bos_token, hf.eos_token, hf.unk_token, hf.pad_token) == tuple(
        roles.get(r) for r in ("sos", "eos", "unk", "pad"))
    assert hf.chat_template == ours.chat_template
    assert [hf_ids(hf, t) for t in TEXTS] == [ours.encode(t) for t in TEXTS]
    assert hf_chat_ids(hf, MESSAGES, add_generation_prompt=True) == ours.apply_chat_template(MESSAGES, True)
    audio = ours.special_ids["audio"]
    assert hf.decode([audio], skip_special_tokens=True) == ours.decode([audio]) == ""  # other roles: special too
    # and back: every role survives
    assert HFTokenizer.from_pretrained(tmp_path).to_dict() == ours.to_dict()


def test_from_pretrained_file_variants(byte_level_dir, byte_level, tmp_path):
    """chat_template.jinja over the config's; {"content": ...} tokens; special_tokens_map.json
    alone; a list of named templates; a null config entry."""
    shutil.copytree(byte_level_dir, tmp_path, dirs_exist_ok=True)
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": {  # LLaMA-2's form
        "__type": "AddedToken", "content": "<s>", "lstrip": False, "normalized": False, "rstrip": False,
        "single_word": False, "special": True},
              "unk_token": None, "mask_token": "world", "additional_special_tokens": ["hello"],  # made special
              "chat_template": [{"name": "tools", "template": "T"},
                                                   {"name": "default", "template": CHATML_INLINE}]}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|im_end|>", "unk_token": "<s>"}))
    tok = HFTokenizer.from_pretrained(tmp_path)
    assert tok.special_tokens == {"sos": "<s>", "eos": "<|im_end|>"}
    assert tok.chat_template == CHATML_INLINE
    (tmp_path / "chat_template.jinja").write_text(CHATML)
    tok = HFTokenizer.from_pretrained(tmp_path, special_tokens={"pad": "<|endoftext|>", "eos": "<s>"})
    assert tok.chat_template == CHATML and tok.special_tokens == {"sos": "<s>", "eos": "<s>", "pad": "<|endoftext|>"}
    assert HFTokenizer.from_pretrained(tmp_path, chat_template="X").chat_template == "X"
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert [hf_ids(hf, t) for t in TEXTS] == [tok.encode(t) for t in TEXTS]
    for text in TEXTS:
        assert hf.decode(tok.encode(text), skip_special_tokens=True) == tok.decode(tok.encode(text))
    assert tok.decode(tok.encode("hello world")) == " "  # both special now (matched whole), as in transformers


def test_role_tokens_are_special_as_in_transformers(byte_level, tmp_path):
    """A role naming a plain vocabulary token makes it special (matched whole, skipped by
    decode), as transformers does with the additional special tokens save_pretrained lists;
    truncation stored in tokenizer.json is not applied (transformers' encode does not)."""
    backend = Tokenizer.from_str(byte_level.to_dict()["tokenizer_json"])
    backend.enable_truncation(3)
    hello = backend.token_to_id("hello")
    ours = HFTokenizer(backend.to_str(), {"sos": "<s>", "audio": "hello"})
    assert ours.vocab_size == byte_level.vocab_size and ours.special_ids["audio"] == hello
    hf = transformers.AutoTokenizer.from_pretrained(ours.save_pretrained(tmp_path))
    for text in [*TEXTS, "xhellox say hello", "hellohello"]:
        assert ours.encode(text) == hf_ids(hf, text), text
        assert ours.decode(ours.encode(text)) == hf.decode(ours.encode(text), skip_special_tokens=True)
    assert ours.encode("xhellox")[1] == hello and len(ours.encode(TEXTS[1])) > 3
    assert ours.decode(ours.encode("say hello")) == byte_level.decode(byte_level.encode("say "))


def test_token_names_for_whitespace_tokens(byte_level, tmp_path):
    """The added "\\n\\n" token is listed under a reversible name; encode goes through the
    real tokenizer."""
    newlines = byte_level.backend_tokenizer.token_to_id("\n\n")
    assert byte_level.id_to_token(newlines) == ESCAPE_MARK + "\\n\\n"
    assert byte_level.token_to_id(ESCAPE_MARK + "\\n\\n") == newlines
    assert newlines in byte_level.encode("a\n\nb")
    for token in ["", " ", "\n\n", "a b", "\\", "\\n", "\\u0041 \\s", ESCAPE_MARK, ESCAPE_MARK + "x",
                  "\u3000\t\r", "plain"]:
        name = token_name(token)
        assert token_from_name(name) == token and name.split() == [name]
    assert token_name("plain") == "plain"
    lines = (byte_level.save(tmp_path) / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert lines == byte_level.tokens


def test_errors(byte_level, byte_level_dir, tmp_path):
    text = byte_level.to_dict()["tokenizer_json"]
    with pytest.raises(ValueError, match=r"not in the vocabulary: \{'audio': '<\|speech\|>'\}"):
        HFTokenizer(text, {"audio": "<|speech|>"})
    with pytest.raises(ValueError, match="not in the vocabulary"):
        HFTokenizer.from_pretrained(byte_level_dir, special_tokens={"audio": "<|speech|>"})
    with pytest.raises(ValueError, match="no chat template"):
        HFTokenizer(text, {}).apply_chat_template(MESSAGES)
    with pytest.raises(ValueError, match="chat template"):
        HFTokenizer(text, {}, "{% for m in messages %}")
    with pytest.raises(ValueError, match="not a tokenizer.json"):
        HFTokenizer("{}", {})
    # planted fault: the model's last piece moved 3 ids up (tokenizers keeps the added
    # tokens after len(vocab)): ids 402 and 404 have no token
    broken = json.loads(text)
    vocab = broken["model"]["vocab"]
    last = max(vocab, key=vocab.get)
    assert vocab[last] == 402 and byte_level.vocab_size == 404
    vocab[last] += 3
    with pytest.raises(ValueError, match=r"dense.*no token for id\(s\) 402, 404$"):
        HFTokenizer(json.dumps(broken), {})
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        HFTokenizer.from_pretrained(tmp_path)


def test_sentencepiece_only_directory(tmp_path, monkeypatch):
    """An old-LLaMA directory (tokenizer.model only) is converted by transformers: same ids."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus()), model_writer=model, vocab_size=400,
                                   model_type="bpe", byte_fallback=True, minloglevel=2)
    (tmp_path / "tokenizer.model").write_bytes(model.getvalue())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    ours = HFTokenizer.from_pretrained(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert ours.special_ids == {"sos": hf.bos_token_id, "eos": hf.eos_token_id, "unk": hf.unk_token_id}
    for text in TEXTS:
        assert ours.encode(text) == hf_ids(hf, text)
        assert ours.decode(ours.encode(text)) == hf.decode(hf_ids(hf, text), skip_special_tokens=True)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ValueError, match="save it with tokenizer.json"):
        HFTokenizer.from_pretrained(tmp_path)


def test_train_wordlevel(tmp_path):
    tok = train_hf_tokenizer(corpus(), 60, DEFAULT_SPECIAL_TOKENS, CHATML, model="wordlevel")
    assert tok.vocab_size == len(DEFAULT_SPECIAL_TOKENS) + len(set(WORDS))  # every word: fewer than 60
    assert train_hf_tokenizer(corpus(), 20, DEFAULT_SPECIAL_TOKENS, model="wordlevel").vocab_size == 20
    ids = tok.encode("hello world zzzunseen")
    assert ids[2] == tok.unk_id and tok.decode(ids[:2]) == "hello world"
    hf = transformers.AutoTokenizer.from_pretrained(tok.save_pretrained(tmp_path))
    assert [hf_ids(hf, t) for t in TEXTS] == [tok.encode(t) for t in TEXTS]
    with pytest.raises(ValueError, match="'unk' role"):
        train_hf_tokenizer(corpus(), 60, {"eos": "</s>"}, model="wordlevel")
    with pytest.raises(ValueError, match="no room"):
        train_hf_tokenizer(corpus(), 200, DEFAULT_SPECIAL_TOKENS)


def test_cli(tmp_path, capsys):
    text = tmp_path / "lm.txt"
    text.write_text("\n".join(corpus()) + "\n\n", encoding="utf-8")
    more = tmp_path / "more.txt"
    more.write_text("<|im_start|>user one<|im_end|><|im_start|>assistant two<|im_end|>\n", encoding="utf-8")
    out = tmp_path / "tok"
    assert cli.main(["--text", str(text), "--text", str(more), "--vocab-size", "450", "--out", str(out),
                     "--chat-template", "chatml_inline", "--special", "audio=<|speech|>"]) == 0
    assert "vocab_size" in capsys.readouterr().out
    ours = load_tokenizer(out)
    assert isinstance(ours, HFTokenizer) and ours.chat_template == CHATML_INLINE
    assert ours.special_tokens == {**DEFAULT_SPECIAL_TOKENS, "audio": "<|speech|>"}
    hf = transformers.AutoTokenizer.from_pretrained(out)
    assert [hf_ids(hf, t) for t in TEXTS] == [ours.encode(t) for t in TEXTS]
    assert hf_chat_ids(hf, MESSAGES) == ours.apply_chat_template(MESSAGES)
    assert cli.main(["--text", str(text), "--vocab-size", "450", "--out", str(out),
                     "--chat-template", "nonesuch"]) == 1
    assert "nonesuch" in capsys.readouterr().err


def test_import_hf_tokenizer_names_the_speech_roles(tmp_path):
    """A model directory's tokenizer (transformers' files only, no audio role) becomes a
    speechlm tokenizer dir with the roles a speech-LLM needs; a role naming a token the
    vocabulary lacks is an error, not a silently added token."""
    from speechlm.bin.import_hf_tokenizer import main as import_main
    from speechlm.tokenizers import load_tokenizer

    roles = {"unk": "<unk>", "sos": "<s>", "eos": "</s>", "pad": "<pad>", "reserved": "<|reserved_0|>",
             "start_of_turn": "<|im_start|>", "end_of_turn": "<|im_end|>"}
    model_dir = tmp_path / "model"
    train_hf_tokenizer(["one two three", "four five six seven"] * 10, 300, roles, CHATML).save_pretrained(model_dir)
    assert not (model_dir / "tokenizer.yaml").exists()
    out = tmp_path / "tok"
    assert import_main([str(model_dir), str(out), "--special", "audio=<|reserved_0|>",
                        "--chat-template", "chatml_inline"]) == 0
    tok = load_tokenizer(out)
    assert tok.special_ids["audio"] == tok.token_to_id("<|reserved_0|>")
    assert tok.render_chat([{"role": "user", "content": "hi"}], add_generation_prompt=True) == \
        "<|im_start|>user hi<|im_end|><|im_start|>assistant"
    assert import_main([str(model_dir), str(tmp_path / "bad"), "--special", "audio=<|nope|>"]) == 1
