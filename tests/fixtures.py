"""Test data the tests make themselves: wav files and small Kaldi data dirs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

FSDD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd"


def write_wav(path: Path, seconds: float, sr: int = 16000, seed: int = 0, subtype: str = "PCM_16") -> Path:
    """A voiced-sounding signal: a few harmonics of a gliding f0 under an envelope,
    plus a little noise (distinct per seed)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    f0 = 110 + 40 * rng.random() + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = 0.5 * (1 - np.cos(2 * np.pi * np.minimum(t / max(seconds, 1e-9), 1)))
    x = 0.3 * env * x / 2 + 0.01 * rng.standard_normal(n)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), sr, subtype=subtype)
    return path


def make_data_dir(root: Path, speakers=("spkA", "spkB"), per_speaker: int = 3, sr: int = 16000) -> Path:
    """A clean Kaldi data dir: root/data with wav.scp, text, utt2spk, spk2utt, utt2dur."""
    d = root / "data"
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for s, spk in enumerate(speakers):
        for i in range(per_speaker):
            utt = f"{spk}-utt{i}"
            dur = 0.5 + 0.25 * i + 0.1 * s
            wav = write_wav(root / "wav" / f"{utt}.wav", dur, sr, seed=10 * s + i)
            rows.append((utt, spk, str(wav), f"WORD{i} SPEAKER {spk.upper()}", dur))
    rows.sort()
    (d / "wav.scp").write_text("".join(f"{u} {w}\n" for u, _, w, _, _ in rows))
    (d / "text").write_text("".join(f"{u} {t}\n" for u, _, _, t, _ in rows))
    (d / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s, _, _, _ in rows))
    (d / "utt2dur").write_text("".join(f"{u} {dur:.3f}\n" for u, _, _, _, dur in rows))
    spk2utt = {}
    for u, s, *_ in rows:
        spk2utt.setdefault(s, []).append(u)
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk2utt.items())))
    return d


# Transcripts for tokenizer tests: digits, punctuation, quotes, non-linguistic symbols.
TEXT_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "one seven three",
    "two nine nine four one",
    "hello, world! it's a test.",
    "[noise] okay so one two three [noise]",
    'she said: "don\'t stop" -- then left?',
    "<laugh> that's funny",
    "seven seven three one zero",
]


# A 1-block, d=32 Conformer CTC/attention: trains an epoch on make_data_dir in seconds.
TINY_MODEL = ["encoder.num_blocks=1", "encoder.output_size=32", "encoder.linear_units=64", "encoder.attention_heads=2",
              "encoder.cnn_module_kernel=7", "decoder.num_blocks=1", "decoder.linear_units=64",
              "decoder.attention_heads=2", "data.max_seconds=4", "data.num_workers=0",
              "optim.scheduler.warmup_steps=5", "+trainer.enable_model_summary=false",
              "trainer.enable_progress_bar=false"]


def prepare_training(tmp_path: Path, data: Path) -> None:
    """Character tokenizer (tmp_path/tok) and CMVN stats (tmp_path/cmvn.npz) for `data`."""
    from speechlm.bin.compute_cmvn import main as cmvn_main
    from speechlm.bin.train_tokenizer import main as tokenizer_main

    assert tokenizer_main(["--data-dir", str(data), "--type", "char", "--out", str(tmp_path / "tok")]) == 0
    assert cmvn_main([str(data), str(tmp_path / "cmvn.npz")]) == 0


def train_tiny(tmp_path: Path, data: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m speechlm.bin.train` of TINY_MODEL on `data` into tmp_path/exp (after
    prepare_training)."""
    cmd = [sys.executable, "-m", "speechlm.bin.train", f"data.train_dir={data}", f"data.valid_dir={data}",
           f"tokenizer_dir={tmp_path / 'tok'}", f"cmvn_stats={tmp_path / 'cmvn.npz'}", f"exp_dir={tmp_path / 'exp'}",
           *TINY_MODEL, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def tiny_ctc_checkpoint(path: Path, texts=("WORD0 WORD1 WORD2 SPEAKER SPKA SPKB",), seed: int = 0) -> Path:
    """A randomly initialised 1-block Conformer CTC model (fbank + CMVN) with a character
    tokenizer of `texts`, saved as a speechlm checkpoint (state_dict + resolved config +
    tokenizer, what training writes; no training needed). Its config's `search` is CTC
    greedy, and the blank's output bias is lowered so that the search emits tokens."""
    import torch

    from speechlm.models.build import build_model
    from speechlm.tokenizers import CharTokenizer

    tokenizer = CharTokenizer.train(texts)
    frontend = {"_target_": "speechlm.features.Fbank", "sample_rate": 16000, "n_mels": 23}
    config = {
        "model": {"_target_": "speechlm.models.ctc_attention.CTCAttentionModel",
                  "vocab_size": tokenizer.vocab_size, "ctc_weight": 1.0,
                  "encoder": {"_target_": "speechlm.encoders.conformer.ConformerEncoder", "input_size": 23,
                              "output_size": 16, "attention_heads": 2, "linear_units": 16, "num_blocks": 1,
                              "cnn_module_kernel": 7},
                  "frontend": frontend,
                  "normalize": {"_target_": "speechlm.features.GlobalCMVN.empty", "dim": 23}},
        "frontend": frontend,
        "search": {"_target_": "speechlm.search.ctc_greedy.CTCGreedySearch"},
    }
    torch.manual_seed(seed)
    model = build_model(config["model"], initialize=False)
    with torch.no_grad():
        model.normalize.mean.copy_(torch.linspace(-12.0, -4.0, 23))
        model.normalize.std.copy_(torch.linspace(1.0, 3.0, 23))
        model.ctc.ctc_lo.bias[model.blank_id] -= 3.0
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "speechlm": {"config": config, "tokenizer": tokenizer.to_dict()}},
               path)
    return path
