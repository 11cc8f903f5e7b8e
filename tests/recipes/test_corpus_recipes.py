"""Stage 1 (data preparation) of the standard-corpus recipes on tiny fake corpora that mirror
the real ones (file names, transcript formats, speaker layout, audio formats: LibriSpeech
flac, Common Voice TSV + 48 kHz mp3, AN4 NIST SPHERE): each recipe's run.sh runs stage 1 on a
copy of the recipe, and the data dirs must be exactly what the corpus says (ids, texts,
speakers, readable audio of the right length and rate) and pass validate_data_dir; malformed
corpora must be reported naming file and line, or counted and listed with --skip-bad."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechlm.data.kaldi_dir import DataDir
from speechlm.data.validate import validate_data_dir

ROOT = Path(__file__).resolve().parents[2]


def tone(seconds: float, sr: int, seed: int) -> np.ndarray:
    """A distinct harmonic tone with a little noise (never silent)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    f0 = 120 + 15 * seed
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 5))
    return (0.2 * x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def copy_recipe(tmp_path: Path, corpus: str) -> Path:
    recipe = tmp_path / corpus
    shutil.copytree(ROOT / "egs" / corpus / "asr", recipe, ignore=shutil.ignore_patterns("data", "exp", "dump"))
    return recipe


def run_stage1(recipe: Path, *options: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPEECHLM_ROOT": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", "run.sh", "--stage", "1", "--stop-stage", "1", *options], cwd=recipe, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_clean(d: Path) -> None:
    faults = validate_data_dir(d, audio=True, sample_rate=16000)
    assert not faults, "\n".join(map(str, faults))


def durations(dd: DataDir) -> dict[str, float]:
    out = {}
    for utt, entry in dd.wav_scp.items():
        info = sf.info(entry)
        assert info.samplerate == 16000, entry
        out[utt] = info.frames / info.samplerate
    return out


# ---------------------------------------------------------------- LibriSpeech

# subset -> reader -> chapter -> [(utterance number, text, seconds)]
LIBRISPEECH = {
    "train-clean-100": {"19": {"198": [(0, "NORTHANGER ABBEY", 0.6), (1, "THAT THE DAY'S WORK", 0.9)]},
                        "103": {"1240": [(5, "CHAPTER ONE", 0.7)], "1241": [(0, "MISSUS RACHEL LYNDE", 1.1)]}},
    "train-clean-360": {"100": {"121669": [(0, "TOM THE PIPER'S SON", 0.8)]}},
    "train-other-500": {"20": {"205": [(3, "AND SO THEY WENT", 0.5)]}},
    "dev-clean": {"84": {"121123": [(0, "GO DO YOU HEAR", 0.6), (2, "BUT IN LESS THAN FIVE MINUTES", 1.0)]}},
    "dev-other": {"116": {"288045": [(1, "AS I APPROACHED THE CITY", 0.75)]}},
    "test-clean": {"1089": {"134686": [(0, "HE HOPED THERE WOULD BE STEW", 0.9)]}},
    "test-other": {"1688": {"142285": [(0, "THERE WAS NO ANSWER", 0.65)]}},
}


def fake_librispeech(root: Path, corpus=LIBRISPEECH) -> Path:
    """root/LibriSpeech/<subset>/<reader>/<chapter>/{<r>-<c>-<nnnn>.flac, <r>-<c>.trans.txt}"""
    seed = 0
    for subset, readers in corpus.items():
        for reader, chapters in readers.items():
            for chapter, utts in chapters.items():
                d = root / "LibriSpeech" / subset / reader / chapter
                d.mkdir(parents=True)
                lines = []
                for n, text, seconds in utts:
                    utt = f"{reader}-{chapter}-{n:04d}"
                    sf.write(d / f"{utt}.flac", tone(seconds, 16000, seed), 16000, format="FLAC", subtype="PCM_16")
                    lines.append(f"{utt} {text}\n")
                    seed += 1
                (d / f"{reader}-{chapter}.trans.txt").write_text("".join(lines))
    return root


def librispeech_expected(subsets) -> dict[str, tuple[str, str, float]]:
    """utt -> (text, speaker = reader-chapter, seconds)"""
    return {f"{r}-{c}-{n:04d}": (text, f"{r}-{c}", s)
            for sub in subsets for r, chapters in LIBRISPEECH[sub].items() for c, utts in chapters.items()
            for n, text, s in utts}


@pytest.mark.parametrize("size", ["100", "960"])
def test_librispeech_stage1_writes_exact_data_dirs(tmp_path, size):
    corpus = fake_librispeech(tmp_path / "corpus")
    recipe = copy_recipe(tmp_path, "librispeech")
    proc = run_stage1(recipe, "--size", size, "--librispeech-dir", str(corpus))
    assert proc.returncode == 0, proc.stdout + proc.stderr

    train = ["train-clean-100"] + (["train-clean-360", "train-other-500"] if size == "960" else [])
    sets = {"train": train, "dev": ["dev-clean", "dev-other"], "dev_clean": ["dev-clean"],
            "dev_other": ["dev-other"], "test_clean": ["test-clean"], "test_other": ["test-other"]}
    for name, subsets in sets.items():
        d = recipe / "data" / name
        assert_clean(d)
        dd = DataDir.load(d)
        want = librispeech_expected(subsets)
        assert dd.text == {u: t for u, (t, _, _) in want.items()}
        assert dd.utt2spk == {u: s for u, (_, s, _) in want.items()}
        assert all(Path(p).is_absolute() and p.endswith(f"/{u}.flac") for u, p in dd.wav_scp.items())
        assert durations(dd) == pytest.approx({u: s for u, (_, _, s) in want.items()}, abs=1e-6)
    # no train_* dir of its own for the training subsets; LM text = the training transcripts
    assert not (recipe / "data" / "train_clean_100").exists()
    assert (recipe / "data/local/lm_train.txt").read_text() == (recipe / "data/train/text").read_text()


def test_librispeech_faults_are_named_by_file_and_line(tmp_path):
    corpus = fake_librispeech(tmp_path / "corpus")
    chapter = corpus / "LibriSpeech/train-clean-100/19/198"
    trans = chapter / "19-198.trans.txt"
    trans.write_text(trans.read_text() + "19-198-0007\n" + "19-198-0009 NO AUDIO FOR THIS ONE\n" + "NOTANID TEXT\n")
    (corpus / "LibriSpeech/dev-clean/84/121123/84-121123-0002.flac").rename(
        corpus / "LibriSpeech/dev-clean/84/121123/84-121123-0003.flac")  # transcript line 2 loses its audio
    recipe = copy_recipe(tmp_path, "librispeech")

    proc = run_stage1(recipe, "--librispeech-dir", str(corpus))
    assert proc.returncode != 0
    assert f"{trans}:3: '19-198-0007' has no text" in proc.stderr
    assert f"{trans}:4: '19-198-0009': audio 19-198-0009.flac missing" in proc.stderr
    assert f"{trans}:5: 'NOTANID' is not an id <reader>-<chapter>-<n> of 19/198" in proc.stderr
    dev_trans = corpus / "LibriSpeech/dev-clean/84/121123/84-121123.trans.txt"
    assert f"{dev_trans}:2: '84-121123-0002': audio 84-121123-0002.flac missing" in proc.stderr
    assert "84-121123-0003.flac: no line in 84-121123.trans.txt" in proc.stderr
    assert not (recipe / "data/train").exists()

    # --skip-bad true: the rest is prepared; what was left out is counted and listed
    proc = run_stage1(recipe, "--librispeech-dir", str(corpus), "--skip-bad", "true")
    assert proc.returncode == 0, proc.stderr
    assert "5 utterance(s) left out, listed in data/local/dropped" in proc.stderr
    listing = (recipe / "data/local/dropped").read_text().splitlines()
    assert len(listing) == 5 and sum(line.startswith(f"{trans}:") for line in listing) == 3
    assert set(DataDir.load(recipe / "data/train").text) == set(librispeech_expected(["train-clean-100"]))
    assert set(DataDir.load(recipe / "data/dev_clean").text) == {"84-121123-0000"}
    assert_clean(recipe / "data/dev")


# ---------------------------------------------------------------- AN4

AN4_TRAIN = [  # (file id, words, seconds); speakers fash, fbbh, mblw
    ("an251-fash-b", "YES", 0.5), ("an253-fash-b", "GO", 0.4), ("cen1-fash-b", "R O S E", 0.9),
    ("an76-fbbh-b", "ENTER SIX TWO", 0.8), ("cen2-fbbh-b", "H I N E S", 0.7),
    ("an126-mblw-b", "NO", 0.45), ("cen4-mblw-b", "ONE FIFTY ONE", 1.0),
]
AN4_TEST = [("an406-fcaw-b", "RUBOUT T U O Y", 0.85), ("cen5-mjwl-b", "SEVENTEEN", 0.6)]


def fake_an4(root: Path) -> Path:
    """root/an4/{etc/an4_{train,test}.transcription, wav/{an4_clstk,an4test_clstk}/<spk>/<id>.sph}"""
    an4 = root / "an4"
    (an4 / "etc").mkdir(parents=True)
    seed = 0
    for name, folder, rows in (("train", "an4_clstk", AN4_TRAIN), ("test", "an4test_clstk", AN4_TEST)):
        lines = []
        for fileid, words, seconds in rows:
            sph = an4 / "wav" / folder / fileid.split("-")[1] / f"{fileid}.sph"
            sph.parent.mkdir(parents=True, exist_ok=True)
            sf.write(sph, tone(seconds, 16000, seed), 16000, format="NIST", subtype="PCM_16")
            seed += 1
            lines.append(f"<s> {words} </s> ({fileid})\n")
        (an4 / "etc" / f"an4_{name}.transcription").write_text("".join(lines))
    return an4


def an4_utt(fileid: str) -> str:
    pre, spk, last = fileid.split("-")
    return f"{spk}-{pre}-{last}"


def test_an4_stage1_writes_exact_data_dirs(tmp_path):
    an4 = fake_an4(tmp_path / "corpus")
    assert sf.info(str(next(an4.glob("wav/an4_clstk/fash/*.sph")))).format == "NIST"
    recipe = copy_recipe(tmp_path, "an4")
    proc = run_stage1(recipe, "--an4-dir", str(an4), "--ndev", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    train = {an4_utt(f): (w, f.split("-")[1], s) for f, w, s in AN4_TRAIN}
    first_two = sorted(train)[:2]  # ESPnet: dev = the first ndev sorted training utterances
    expected = {"dev": {u: train[u] for u in first_two},
                "train": {u: v for u, v in train.items() if u not in first_two},
                "test": {an4_utt(f): (w, f.split("-")[1], s) for f, w, s in AN4_TEST}}
    assert first_two == ["fash-an251-b", "fash-an253-b"]
    for name, want in expected.items():
        d = recipe / "data" / name
        assert_clean(d)
        dd = DataDir.load(d)
        assert dd.text == {u: w for u, (w, _, _) in want.items()}
        assert dd.utt2spk == {u: s for u, (_, s, _) in want.items()}
        assert all(p.endswith(".sph") for p in dd.wav_scp.values())  # libsndfile reads SPHERE: no pipe
        assert durations(dd) == pytest.approx({u: s for u, (_, _, s) in want.items()}, abs=1e-6)


def test_an4_faults_are_named_by_file_and_line(tmp_path):
    an4 = fake_an4(tmp_path / "corpus")
    trans = an4 / "etc/an4_train.transcription"
    trans.write_text(trans.read_text() + "<s> NO ID HERE </s>\n" + "<s> TWO </s> (an9-nobody-b)\n"
                     + "<s> </s> (an251-fash-b)\n" + "<s> BAD ID </s> (an9fash)\n")
    (an4 / "wav/an4test_clstk/mjwl/cen5-mjwl-b.sph").write_bytes(b"not a sphere file")
    recipe = copy_recipe(tmp_path, "an4")

    proc = run_stage1(recipe, "--an4-dir", str(an4), "--ndev", "2")
    assert proc.returncode != 0
    assert f"{trans}:8: not '<s> TEXT </s> (fileid)'" in proc.stderr
    assert f"{trans}:9: 'an9-nobody-b': audio {an4}/wav/an4_clstk/nobody/an9-nobody-b.sph missing" in proc.stderr
    assert f"{trans}:10: 'an251-fash-b' has no text" in proc.stderr
    assert f"{trans}:11: file id 'an9fash' is not <prefix>-<speaker>-<suffix>" in proc.stderr
    test_trans = an4 / "etc/an4_test.transcription"
    if shutil.which("sph2pipe") is None:
        assert f"{test_trans}:2: 'cen5-mjwl-b': {an4}/wav/an4test_clstk/mjwl/cen5-mjwl-b.sph is not a SPHERE" in proc.stderr

    proc = run_stage1(recipe, "--an4-dir", str(an4), "--ndev", "2", "--skip-bad", "true")
    assert proc.returncode == 0, proc.stderr
    dropped = 4 if shutil.which("sph2pipe") else 5
    assert f"{dropped} utterance(s) left out, listed in data/local/dropped" in proc.stderr
    assert len((recipe / "data/local/dropped").read_text().splitlines()) == dropped
    assert len(DataDir.load(recipe / "data/train")) + len(DataDir.load(recipe / "data/dev")) == len(AN4_TRAIN)


# ---------------------------------------------------------------- Common Voice

HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccent\tlocale\tsegment"
SPK = {"a": "4b1d" * 8, "b": "9c0e" * 8, "c": "17f3" * 8}
# tsv -> [(speaker, clip number, sentence, seconds)]
CV = {
    "dev": [("c", 10, "Dov'è la stazione?", 0.7)],
    "test": [("b", 11, "Ｆｕｌｌ-width ＡＢＣ.", 0.6)],
    "train": [("a", 1, "Buongiorno a tutti", 0.8), ("b", 2, "«Ciao», disse l'uomo.", 0.9)],
}
CV["validated"] = CV["train"] + CV["dev"] + CV["test"] + [("a", 3, "Un  altro   esempio", 0.5)]


def clip_name(n: int) -> str:
    return f"common_voice_it_{1000 + n}.mp3"


def fake_commonvoice(root: Path) -> Path:
    """root/cv-corpus-test/it/{train,dev,test,validated}.tsv + clips/*.mp3 (48 kHz)"""
    lang = root / "cv-corpus-test" / "it"
    (lang / "clips").mkdir(parents=True)
    for rows in CV.values():
        for _, n, _, seconds in rows:
            path = lang / "clips" / clip_name(n)
            if not path.exists():
                sf.write(path, tone(seconds, 48000, n), 48000, format="MP3", subtype="MPEG_LAYER_III")
    for tsv, rows in CV.items():
        lines = [HEADER] + [f"{SPK[s]}\t{clip_name(n)}\t{text}\t2\t0\t\t\t\tit\t" for s, n, text, _ in rows]
        (lang / f"{tsv}.tsv").write_text("\n".join(lines) + "\n")
    return root / "cv-corpus-test"


def cv_utt(s: str, n: int) -> str:
    return f"{SPK[s]}-{clip_name(n)[:-4]}"


@pytest.fixture(scope="module")
def mp3_supported():
    if "MP3" not in sf.available_formats():
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} has no MP3 support (needs >= 1.1)")


def test_commonvoice_stage1_converts_mp3_and_writes_exact_data_dirs(tmp_path, mp3_supported):
    corpus = fake_commonvoice(tmp_path / "corpus")
    recipe = copy_recipe(tmp_path, "commonvoice")
    proc = run_stage1(recipe, "--cv-dir", str(corpus), "--lang", "it", "--nj", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "train: 2 clips of validated.tsv are in dev/test and left out (as ESPnet)" in proc.stdout

    # validated minus dev and test; NFKC (full-width letters), upper case, punctuation kept
    expected = {
        "train": {cv_utt("a", 1): "BUONGIORNO A TUTTI", cv_utt("b", 2): "«CIAO», DISSE L'UOMO.",
                  cv_utt("a", 3): "UN ALTRO ESEMPIO"},
        "dev": {cv_utt("c", 10): "DOV'È LA STAZIONE?"},
        "test": {cv_utt("b", 11): "FULL-WIDTH ABC."},
    }
    seconds = {cv_utt(s, n): sec for rows in CV.values() for s, n, _, sec in rows}
    for name, want in expected.items():
        d = recipe / "data" / name
        assert_clean(d)  # 16 kHz FLAC: the asr.sh stage-3 check passes
        dd = DataDir.load(d)
        assert dd.text == want
        assert dd.utt2spk == {u: u.split("-")[0] for u in want}
        assert all(Path(p).parent == (recipe / "dump/audio_16k").resolve() and p.endswith(".flac")
                   for p in dd.wav_scp.values())
        # mp3 adds encoder delay/padding (up to ~1152 samples at 48 kHz ~ 0.024 s each side)
        assert durations(dd) == pytest.approx({u: seconds[u] for u in want}, abs=0.06)
    # the converted audio is the clip's tone: its spectrum peaks at the clip's f0
    audio, sr = sf.read(DataDir.load(recipe / "data/train").wav_scp[cv_utt("a", 1)])
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * sr / len(audio) - (120 + 15 * 1)) < 3


def test_commonvoice_text_normalisation_options():
    import importlib.util

    spec = importlib.util.spec_from_file_location("cv_prep", ROOT / "egs/commonvoice/asr/local/prepare_data.py")
    cv_prep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cv_prep)
    norm = cv_prep.normalize_text
    assert norm("«Ciao», disse l'uomo.") == "«CIAO», DISSE L'UOMO."
    assert norm("«Ciao», disse l'uomo.", case="lower", remove_punctuation=True) == "ciao disse l'uomo"
    assert norm("'Well-known' -- rock'n'roll!", case="keep", remove_punctuation=True) == "Well-known rock'n'roll"
    assert norm("ﬁne Ｆｕｌｌ", case="keep") == "fine Full"  # NFKC: ligature and full-width folded
    assert norm("Straße", case="upper") == "STRASSE"


def test_commonvoice_convert_false_lists_the_mp3s(tmp_path, mp3_supported):
    """--convert false: wav.scp names the 48 kHz clips themselves (the loader resamples)."""
    corpus = fake_commonvoice(tmp_path / "corpus")
    script = ROOT / "egs/commonvoice/asr/local/prepare_data.py"
    proc = subprocess.run([str(ROOT / ".venv/bin/python"), str(script), "--cv-dir", str(corpus / "it"), "--out",
                           str(tmp_path / "data"), "--convert", "false", "--audio-dir", str(tmp_path / "dump")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    dd = DataDir.load(tmp_path / "data/dev")
    assert dd.wav_scp == {cv_utt("c", 10): str((corpus / "it/clips" / clip_name(10)).resolve())}
    assert sf.info(dd.wav_scp[cv_utt("c", 10)]).samplerate == 48000 and not (tmp_path / "dump").exists()
    assert not validate_data_dir(tmp_path / "data/dev", audio=True)  # valid, just not at 16 kHz


def test_commonvoice_faults_are_named_by_file_and_line(tmp_path, mp3_supported):
    corpus = fake_commonvoice(tmp_path / "corpus")
    lang = corpus / "it"
    validated = lang / "validated.tsv"
    validated.write_text(validated.read_text()
                         + f"{SPK['a']}\tcommon_voice_it_9999.mp3\tMissing clip\t2\t0\t\t\t\tit\t\n"
                         + f"{SPK['a']}\t{clip_name(1)}\ttoo few fields\n"
                         + f"{SPK['c']}\tcommon_voice_it_8888.mp3\t  \t2\t0\t\t\t\tit\t\n")
    (lang / "clips" / "common_voice_it_7777.mp3").write_bytes(b"\xff\xfbnot really an mp3" * 3)
    test_tsv = lang / "test.tsv"
    test_tsv.write_text(test_tsv.read_text() + f"{SPK['b']}\tcommon_voice_it_7777.mp3\tBroken audio\t2\t0\t\t\t\tit\t\n")
    recipe = copy_recipe(tmp_path, "commonvoice")

    proc = run_stage1(recipe, "--cv-dir", str(corpus), "--lang", "it", "--nj", "1")
    assert proc.returncode != 0
    assert f"{validated}:7: 'common_voice_it_9999.mp3': clip {lang}/clips/common_voice_it_9999.mp3 missing" in proc.stderr
    assert f"{validated}:8: 3 tab-separated fields, the header has 10" in proc.stderr
    assert f"{validated}:9: 'common_voice_it_8888.mp3': empty sentence" in proc.stderr
    assert not (recipe / "data/train").exists()

    proc = run_stage1(recipe, "--cv-dir", str(corpus), "--lang", "it", "--nj", "1", "--skip-bad", "true")
    assert proc.returncode == 0, proc.stderr
    assert "4 row(s) left out, listed in data/local/dropped" in proc.stderr
    # the undecodable clip is found when converting, and named by its TSV line
    assert f"{test_tsv}:3: 'common_voice_it_7777.mp3': cannot decode" in (recipe / "data/local/dropped").read_text()
    assert set(DataDir.load(recipe / "data/test").text) == {cv_utt("b", 11)}
    assert_clean(recipe / "data/train")


# ---------------------------------------------------------------- presets vs ESPnet's configs

# The model part of each ESPnet recipe config a preset maps (copied from the files named in
# the presets' headers: encoder/decoder/model/frontend confs as published).
ESPNET_LS100_DECODER = dict(decoder="transformer", decoder_conf=dict(
    attention_heads=4, linear_units=2048, num_blocks=6, dropout_rate=0.1, positional_dropout_rate=0.1,
    self_attention_dropout_rate=0.1, src_attention_dropout_rate=0.1),
    model_conf=dict(ctc_weight=0.3, lsm_weight=0.1, length_normalized_loss=False),
    frontend_conf=dict(n_fft=512, win_length=400, hop_length=160))
ESPNET = {
    # egs2/librispeech_100/asr1/conf/tuning/train_asr_conformer_lr2e-3_warmup15k_amp_nondeterministic.yaml
    ("librispeech", "librispeech100_conformer"): (dict(encoder="conformer", encoder_conf=dict(
        output_size=256, attention_heads=4, linear_units=1024, num_blocks=12, dropout_rate=0.1,
        positional_dropout_rate=0.1, attention_dropout_rate=0.1, input_layer="conv2d", normalize_before=True,
        macaron_style=True, rel_pos_type="latest", pos_enc_layer_type="rel_pos",
        selfattention_layer_type="rel_selfattn", activation_type="swish", use_cnn_module=True,
        cnn_module_kernel=31), **ESPNET_LS100_DECODER), set()),
    # egs2/librispeech_100/asr1/conf/tuning/train_asr_e_branchformer_size256_mlp1024_linear1024_e12_mactrue_edrop0.0_ddrop0.0.yaml
    ("librispeech", "librispeech100_e_branchformer"): (dict(encoder="e_branchformer", encoder_conf=dict(
        output_size=256, attention_heads=4, attention_layer_type="rel_selfattn", pos_enc_layer_type="rel_pos",
        rel_pos_type="latest", cgmlp_linear_units=1024, cgmlp_conv_kernel=31, use_linear_after_conv=False,
        gate_activation="identity", num_blocks=12, dropout_rate=0.1, positional_dropout_rate=0.1,
        attention_dropout_rate=0.1, input_layer="conv2d", layer_drop_rate=0.0, linear_units=1024,
        positionwise_layer_type="linear", use_ffn=True, macaron_ffn=True, merge_conv_kernel=31),
        **ESPNET_LS100_DECODER), {"encoder_conf.positionwise_layer_type"}),  # "linear", the only kind ours has
    # egs2/librispeech/asr1/conf/tuning/train_asr_e_branchformer.yaml
    ("librispeech", "librispeech960_e_branchformer"): (dict(
        encoder="e_branchformer", encoder_conf=dict(
            output_size=512, attention_heads=8, attention_layer_type="rel_selfattn", pos_enc_layer_type="rel_pos",
            rel_pos_type="latest", cgmlp_linear_units=3072, cgmlp_conv_kernel=31, use_linear_after_conv=False,
            gate_activation="identity", num_blocks=17, dropout_rate=0.1, positional_dropout_rate=0.1,
            attention_dropout_rate=0.1, input_layer="conv2d", layer_drop_rate=0.1, linear_units=1024,
            positionwise_layer_type="linear", macaron_ffn=True, use_ffn=True, merge_conv_kernel=31),
        decoder="transformer", decoder_conf=dict(
            attention_heads=8, linear_units=2048, num_blocks=6, dropout_rate=0.1, positional_dropout_rate=0.1,
            self_attention_dropout_rate=0.1, src_attention_dropout_rate=0.1, layer_drop_rate=0.2),
        model_conf=dict(ctc_weight=0.3, lsm_weight=0.1, length_normalized_loss=False),
        frontend_conf=dict(n_fft=512, hop_length=160)),
        {"encoder_conf.positionwise_layer_type"}),
    # egs2/commonvoice/asr1/conf/tuning/train_asr_conformer5.yaml
    ("commonvoice", "commonvoice_conformer"): (dict(
        frontend="default", frontend_conf=dict(n_fft=512, win_length=400, hop_length=160),
        encoder="conformer", encoder_conf=dict(
            input_layer="conv2d", num_blocks=12, linear_units=2048, dropout_rate=0.1, output_size=256,
            attention_heads=4, attention_dropout_rate=0.0, pos_enc_layer_type="rel_pos",
            selfattention_layer_type="rel_selfattn", activation_type="swish", macaron_style=True,
            use_cnn_module=True, cnn_module_kernel=15),
        decoder="transformer", decoder_conf=dict(input_layer="embed", num_blocks=6, linear_units=2048, dropout_rate=0.1),
        model_conf=dict(ctc_weight=0.3, lsm_weight=0.1, length_normalized_loss=False)),
        {"decoder_conf.input_layer"}),  # "embed", the only kind ours has
    # egs2/an4/asr1/conf/train_asr_transformer.yaml (its e2e_conf holds the loss weights)
    ("an4", "an4_transformer"): (dict(
        encoder="transformer", encoder_conf=dict(
            output_size=256, attention_heads=4, linear_units=2048, num_blocks=12, dropout_rate=0.1,
            positional_dropout_rate=0.1, attention_dropout_rate=0.0, input_layer="conv2d", normalize_before=True),
        decoder="transformer", decoder_conf=dict(
            attention_heads=4, linear_units=2048, num_blocks=6, dropout_rate=0.1, positional_dropout_rate=0.1,
            self_attention_dropout_rate=0.0, src_attention_dropout_rate=0.0),
        model_conf=dict(ctc_weight=0.3, lsm_weight=0.1, length_normalized_loss=False)), set()),
}


def compose_preset(corpus: str, experiment: str, vocab_size: int):
    """The recipe's training config (conf/train.yaml + the recipe's conf/ as asr.sh's --config-dir)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True, overrides=[
            f"experiment={experiment}", f"hydra.searchpath=[file://{ROOT / 'egs' / corpus / 'asr' / 'conf'}]",
            f"vocab_size={vocab_size}", f"special_ids={{blank: 0, unk: 1, sos: {vocab_size - 1}, eos: {vocab_size - 1}}}"])
    HydraConfig.instance().set_config(cfg)  # train.yaml's tag reads hydra:runtime.choices
    return cfg


@pytest.mark.parametrize("corpus,experiment", list(ESPNET))
def test_preset_is_the_espnet_recipe_model(corpus, experiment):
    """Our converter's reading of ESPnet's published config and the recipe's preset build the
    same network: ESPnet-config weights load strictly into the preset's model and give the
    same loss (frontend STFT, normalisation, encoder, decoder, CTC and loss weights)."""
    import torch

    from speechlm.interop.espnet_asr import espnet_asr_model_config
    from speechlm.models.build import build_model

    espnet_conf, expected_left_out = ESPNET[(corpus, experiment)]
    vocab = 40
    left_out: dict[str, str] = {}
    theirs_cfg = espnet_asr_model_config({**espnet_conf, "token_list": [f"t{i}" for i in range(vocab)],
                                          "normalize": "global_mvn"}, left_out)
    assert set(left_out) == expected_left_out
    cfg = compose_preset(corpus, experiment, vocab)
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    torch.manual_seed(0)
    theirs = build_model(theirs_cfg, initialize=False).eval()
    ours = build_model(cfg.model, initialize=False).eval()
    # every option ESPnet's config sets (dropouts and layer drop included, which the loss
    # comparison in eval mode cannot see) has the preset's value
    from omegaconf import OmegaConf
    mine = OmegaConf.to_container(cfg.model, resolve=True)
    for part in ("encoder", "decoder"):
        for key, value in theirs_cfg[part].items():
            assert key in ("_target_", "input_size") or mine[part][key] == value, (part, key, mine[part][key], value)
    assert mine["ctc_weight"] == theirs_cfg["ctc_weight"] and mine["lsm_weight"] == theirs_cfg["lsm_weight"]
    ours.load_state_dict(theirs.state_dict(), strict=True)
    g = torch.Generator().manual_seed(0)
    batch = {"audio": 0.1 * torch.randn(2, 16000, generator=g), "audio_lens": torch.tensor([16000, 11000]),
             "tokens": torch.randint(2, vocab - 1, (2, 5), generator=g), "token_lens": torch.tensor([5, 3])}
    with torch.no_grad():
        a, b = theirs(batch), ours(batch)
    for key in ("loss", "loss_ctc", "loss_att"):
        assert torch.allclose(a[key], b[key], rtol=1e-5, atol=1e-5), (key, a[key], b[key])


@pytest.mark.parametrize("experiment,millions", [("librispeech100_e_branchformer", 38.47),
                                                 ("librispeech960_e_branchformer", 148.92)])
def test_librispeech_presets_have_espnets_parameter_count(experiment, millions):
    """ESPnet's README gives the parameter count (bpe5000: a 5000-token list)."""
    from speechlm.models.build import build_model

    cfg = compose_preset("librispeech", experiment, 5000)
    model = build_model(cfg.model, initialize=False)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == millions


# ---------------------------------------------------------------- AN4 end to end

TINY_AN4 = ("trainer=cpu trainer.max_epochs=1 trainer.accumulate_grad_batches=1 encoder.num_blocks=1 "
            "encoder.output_size=32 encoder.linear_units=64 encoder.attention_heads=2 decoder.num_blocks=1 "
            "decoder.linear_units=64 decoder.attention_heads=2 data.num_workers=0 "
            "+trainer.enable_model_summary=false trainer.enable_progress_bar=false")
TINY_AN4_LM = ("trainer=cpu trainer.max_epochs=1 model.unit=16 model.nlayers=1 "
               "+trainer.enable_model_summary=false trainer.enable_progress_bar=false")


@pytest.mark.slow  # ~2 min on a busy 2-core machine
def test_an4_recipe_runs_stages_1_to_8_on_the_fake_corpus(tmp_path):
    """Every stage of egs/an4/asr (speed perturbation, validation + CMVN, tokenizer, the LM from
    the recipe's LM preset, training with the recipe's preset, both shrunk and on the CPU,
    averaging, decoding with shallow fusion, scoring)."""
    an4 = fake_an4(tmp_path / "corpus")
    recipe = copy_recipe(tmp_path, "an4")
    env = {**os.environ, "SPEECHLM_ROOT": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "run.sh", "--stage", "1", "--an4-dir", str(an4), "--ndev", "2",
                           "--token-type", "char", "--num-avg", "1", "--beam-size", "2", "--train-args", TINY_AN4,
                           "--use-lm", "true", "--lm-args", TINY_AN4_LM],
                          cwd=recipe, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lm_config = (recipe / "exp/lm/config.yaml").read_text()  # the recipe's an4_lm_lstm preset, shrunk
    assert "speechlm.models.lm.LSTMLM" in lm_config and "max_batch_size: 256" in lm_config
    assert (recipe / "exp/lm/model.avg.ckpt").is_file()  # stage 7 decodes with it (asr.sh's search.lm_checkpoint)
    exp = recipe / "exp/an4_transformer"
    config = (exp / "config.yaml").read_text()
    assert "speechlm.encoders.transformer.TransformerEncoder" in config and "hop_length: 128" in config
    assert len(DataDir.load(recipe / "data/train_sp")) == 3 * (len(AN4_TRAIN) - 2)
    results = (exp / "RESULTS.md").read_text()
    assert "|dev|2|2|" in results and f"|test|{len(AN4_TEST)}|6|" in results


# ---------------------------------------------------------------- stage 0 downloads

@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server over tmp_path/www (127.0.0.1, a free port)."""
    import functools
    import http.server
    import threading

    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_stage0_downloads_and_unpacks(tmp_path, http_server):
    import hashlib
    import tarfile

    www, url = http_server
    fake_librispeech(tmp_path / "ls", {"dev-clean": LIBRISPEECH["dev-clean"]})
    with tarfile.open(www / "dev-clean.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "ls/LibriSpeech", arcname="LibriSpeech")
    an4 = fake_an4(tmp_path / "an4src")
    with tarfile.open(www / "an4_sphere.tar.gz", "w:gz") as tar:
        tar.add(an4, arcname="an4")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    script = ROOT / "egs/librispeech/asr/local/download.py"
    proc = subprocess.run([str(ROOT / ".venv/bin/python"), str(script), str(tmp_path / "dl"), "--url", url, "dev-clean"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = sorted(p.name for p in (tmp_path / "dl/LibriSpeech/dev-clean").rglob("*.*"))
    assert got == ["84-121123-0000.flac", "84-121123-0002.flac", "84-121123.trans.txt"]

    script = ROOT / "egs/an4/asr/local/download.py"
    digest = hashlib.sha256((www / "an4_sphere.tar.gz").read_bytes()).hexdigest()
    wrong = subprocess.run([str(ROOT / ".venv/bin/python"), str(script), str(tmp_path / "a1"),
                            "--url", f"{url}/an4_sphere.tar.gz"], capture_output=True, text=True, env=env, timeout=120)
    assert wrong.returncode != 0 and f"sha256 {digest}, expected" in wrong.stderr  # not CMU's archive
    assert not (tmp_path / "a1/an4").exists()
    proc = subprocess.run([str(ROOT / ".venv/bin/python"), str(script), str(tmp_path / "a2"), "--url",
                           f"{url}/an4_sphere.tar.gz", "--sha256", digest], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "a2/an4/etc/an4_train.transcription").read_text() == (an4 / "etc/an4_train.transcription").read_text()
