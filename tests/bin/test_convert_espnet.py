"""`python -m speechlm.bin.convert_espnet` on an ESPnet experiment dir (config.yaml,
valid.acc.ave.pth, feats_stats.npz): the checkpoint loads with `load_pretrained` and gives
ESPnet's CTC log-posteriors on raw audio, its tokenizer ESPnet's ids and text; decode and
transcribe run on it."""
from __future__ import annotations

import io
import subprocess
import sys

import sentencepiece as spm
import torch
import yaml
from espnet.nets.batch_beam_search import BatchBeamSearch
from espnet.nets.scorers.ctc import CTCPrefixScorer
from espnet.nets.scorers.length_bonus import LengthBonus
from espnet2.text.char_tokenizer import CharTokenizer as EspnetCharTokenizer
from espnet2.text.sentencepiece_tokenizer import SentencepiecesTokenizer
from espnet2.text.token_id_converter import TokenIDConverter

from fixtures import make_data_dir
from interop.test_espnet_asr import V, espnet_experiment, speech_batch
from speechlm.bin.convert_espnet import main
from speechlm.bin.transcribe import main as transcribe
from speechlm.tokenizers import CharTokenizer, SentencePieceTokenizer
from speechlm.train.pretrained import load_pretrained

CHAR_TOKENS = ["<blank>", "<unk>", "<space>", *"etaoinshrdlcu", "<sos/eos>"]


def cli_args(tmp_path) -> list[str]:
    return ["--config", str(tmp_path / "config.yaml"), "--model", str(tmp_path / "valid.acc.ave.pth"),
            "--out", str(tmp_path / "model.ckpt")]


def convert(tmp_path, *extra_args, **experiment):
    """Build the ESPnet experiment, write fs as asr.sh does ("16k"), convert, load."""
    ref, _ = espnet_experiment(tmp_path, **experiment)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["frontend_conf"]["fs"] = "16k"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(cli_args(tmp_path) + list(extra_args)) == 0
    model, tokenizer, resolved = load_pretrained(tmp_path / "model.ckpt")  # torch.load(weights_only=True)
    assert resolved["frontend"]["sample_rate"] == 16000 and resolved["vocab_size"] == V
    return ref, model, tokenizer


def assert_same_ctc(ref, model, tmp_path):
    """ESPnet's and our CTC log-posteriors on the same padded raw-audio batch, within 1e-5."""
    audio, audio_lens = speech_batch(tmp_path / "test", seed=100)
    with torch.no_grad():
        enc_ref, lens_ref = ref.encode(audio, audio_lens)
        enc = model.encode(audio, audio_lens)
        ctc_ref, ctc = ref.ctc.log_softmax(enc_ref), model.ctc.log_softmax(enc.output)
    assert enc.lengths.tolist() == lens_ref.tolist()
    for b, n in enumerate(lens_ref.tolist()):
        torch.testing.assert_close(ctc[b, :n], ctc_ref[b, :n], rtol=0, atol=1e-5)


def assert_same_text(tokenizer, espnet_tokenizer, token_list, texts):
    converter = TokenIDConverter(token_list)
    for text in texts:
        ids = converter.tokens2ids(espnet_tokenizer.text2tokens(text))
        assert tokenizer.encode(text) == ids, text
        assert tokenizer.decode(ids) == espnet_tokenizer.tokens2text(converter.ids2tokens(ids)), text


def test_char_experiment_converts_decodes_and_transcribes(tmp_path, capsys):
    ref, model, tokenizer = convert(tmp_path, token_list=CHAR_TOKENS, token_type="char")
    assert isinstance(tokenizer, CharTokenizer) and tokenizer.tokens == CHAR_TOKENS
    assert_same_ctc(ref, model, tmp_path)
    assert_same_text(tokenizer, EspnetCharTokenizer(), CHAR_TOKENS, ["the cat sat on a hat", "zebra x"])

    # transcribe one file: the text of ESPnet's best hypothesis (BatchBeamSearch as
    # asr_inference.py builds it; joint CTC/attention, beam 4, ctc_weight 0.3)
    wav = tmp_path / "test" / "utt100.wav"
    capsys.readouterr()
    assert transcribe(["--model", str(tmp_path / "model.ckpt"), "--beam-size", "4", "--ctc-weight", "0.3", str(wav)]) == 0
    printed = capsys.readouterr().out
    audio, audio_lens = speech_batch(tmp_path / "test", seconds=(1.3,), seed=100)
    search = BatchBeamSearch(
        scorers={"decoder": ref.decoder, "ctc": CTCPrefixScorer(ref.ctc, V - 1), "length_bonus": LengthBonus(V)},
        weights={"decoder": 0.7, "ctc": 0.3, "length_bonus": 0.0}, beam_size=4, vocab_size=V, sos=V - 1,
        eos=V - 1, token_list=None, pre_beam_score_key="full",
    ).eval()
    with torch.no_grad():
        enc_ref, _ = ref.encode(audio, audio_lens)
        best = search(x=enc_ref[0], maxlenratio=0.0, minlenratio=0.0)[0]
    ids = [i for i in best.yseq[1:-1].tolist() if i != 0]
    expected = EspnetCharTokenizer().tokens2text(TokenIDConverter(CHAR_TOKENS).ids2tokens(ids))
    assert expected and printed == f"{wav}\t{expected}\n"

    # decode a Kaldi data dir with the Hydra entry point
    data = make_data_dir(tmp_path / "corpus", per_speaker=1)
    run = subprocess.run([sys.executable, "-m", "speechlm.bin.decode", f"checkpoint={tmp_path / 'model.ckpt'}",
                          f"data_dir={data}", f"out_dir={tmp_path / 'decode'}", "search.beam_size=2"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert len((tmp_path / "decode" / "hyp.trn").read_text().splitlines()) == 2


def test_bpe_experiment_converts(tmp_path, capsys):
    """A sentencepiece model trained as asr.sh trains it (sentencepiece's default <unk> 0,
    <s> 1, </s> 2) and its token_list (<blank>, <unk>, the pieces after </s>, <sos/eos>);
    config.yaml names it by a recipe-relative path, so --bpemodel points at it."""
    g = torch.Generator().manual_seed(0)
    words = ["".join("abcdef"[i] for i in torch.randint(0, 6, (int(n),), generator=g))
             for n in torch.randint(1, 6, (300,), generator=g)]
    lines = [" ".join(words[i : i + 6]) for i in range(0, 300, 6)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, vocab_size=V,
                                   model_type="bpe", character_coverage=1.0, minloglevel=2)
    bpemodel = tmp_path / "bpe.model"
    bpemodel.write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_file=str(bpemodel))
    token_list = ["<blank>", "<unk>", *[sp.id_to_piece(i) for i in range(3, V)], "<sos/eos>"]
    config_path = "data/token_list/bpe_bpe17/bpe.model"  # relative to an ESPnet recipe dir

    ref, model, tokenizer = convert(tmp_path, "--bpemodel", str(bpemodel),
                                    token_list=token_list, token_type="bpe", bpemodel=config_path)
    assert isinstance(tokenizer, SentencePieceTokenizer) and tokenizer.tokens == token_list
    assert tokenizer.model_type == "bpe"
    assert_same_ctc(ref, model, tmp_path)
    assert_same_text(tokenizer, SentencepiecesTokenizer(str(bpemodel)), token_list,
                     [*lines[:5], "abc fed zzz"])
    assert main(cli_args(tmp_path)) == 1  # without --bpemodel: the recipe-relative path, not found here
    assert config_path in capsys.readouterr().err


def test_unsupported_experiments_are_refused(tmp_path, capsys):
    espnet_experiment(tmp_path)  # TOKEN_LIST, no token_type
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    for change, message in [
        ({"token_type": "phn"}, "token_type 'phn' is not supported"),
        ({"token_type": "char", "frontend": "s3prl"}, "frontend: s3prl is not supported"),
        ({"token_type": "char", "frontend_conf": {"apply_stft": False}}, "apply_stft: false"),
        ({"token_type": "char", "frontend_conf": {"onesided": False}}, "onesided: false"),
        ({"token_type": "char", "frontend_conf": {"frontend_conf": {"use_wpe": True}}}, "WPE"),
        ({"token_type": "char", "frontend_conf": {"fs": "16kHz"}}, "not a sample rate"),
        ({"token_type": "char", "input_size": 40}, "precomputed features"),
        ({"token_type": "word", "token_list": ["<unk>", "<blank>", *CHAR_TOKENS[2:]]}, "must start with"),
    ]:
        (tmp_path / "config.yaml").write_text(yaml.safe_dump({**config, **change}))
        assert main(cli_args(tmp_path)) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "model.ckpt").exists()


def test_normalize_options_travel_in_the_checkpoint(tmp_path):
    """normalize_conf norm_vars: false (subtract the mean only) survives load_pretrained."""
    espnet_experiment(tmp_path, token_list=CHAR_TOKENS, token_type="char")
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["normalize_conf"]["norm_vars"] = False
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(cli_args(tmp_path)) == 0
    model, _, _ = load_pretrained(tmp_path / "model.ckpt")
    assert model.normalize.norm_means and not model.normalize.norm_vars
