"""`python -m speechlm.bin.train experiment=lm_transformer`: a tiny Transformer LM trained on
a digit grammar (each word followed by the next digit) learns it (validation loss falls well
below uniform; grammatical strings score higher than reversed ones), bad text lines are
listed, the run resumes, `average_checkpoints` averages it and `load_language_model` loads
the average."""
from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from speechlm.models.lm import TransformerLM, load_language_model
from speechlm.tokenizers import WordTokenizer
from speechlm.tokenizers.base import tokenizer_from_dict

DIGITS = "zero one two three four five six seven eight nine".split()
TINY = ["model.embed_unit=16", "model.att_unit=32", "model.unit=64", "model.layer=2", "model.head=2",
        "data.max_tokens=300", "optim.optimizer.lr=3e-3", "optim.scheduler.warmup_steps=10", "trainer.enable_progress_bar=false"]


def grammar_text(path, n: int, seed: int, prefix: str, bad: bool = False):
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        start = rng.randrange(10)
        lines.append(f"{prefix}{i:04d} " + " ".join(DIGITS[(start + k) % 10] for k in range(rng.randint(2, 6))))
    if bad:
        lines += [f"{prefix}_empty", f"{prefix}_unknown xyzzy plugh"]
    path.write_text("\n".join(lines) + "\n")
    return path


def train(tmp_path, *extra):
    cmd = [sys.executable, "-m", "speechlm.bin.train", "experiment=lm_transformer",
           f"data.train_text={tmp_path / 'train'}", f"data.valid_text={tmp_path / 'valid'}",
           f"tokenizer_dir={tmp_path / 'tok'}", f"exp_dir={tmp_path / 'exp'}", *TINY, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_lm_trains_learns_the_grammar_resumes_and_averages(tmp_path):
    grammar_text(tmp_path / "train", 400, 0, "t", bad=True)
    grammar_text(tmp_path / "valid", 60, 1, "v")
    tokenizer = WordTokenizer.train([" ".join(DIGITS)])
    tokenizer.save(tmp_path / "tok")
    first = train(tmp_path, "trainer.max_epochs=2")
    assert first.returncode == 0, first.stderr[-3000:]
    exp = tmp_path / "exp"
    listed = (exp / "bad_text_lines").read_text().splitlines()
    assert [line.split(": ", 1)[1] for line in listed] == ["no token (empty line)", "only unknown tokens"]
    assert "2 of 402 lines left out" in first.stdout + first.stderr

    second = train(tmp_path, "trainer.max_epochs=4")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stdout + second.stderr
    events = EventAccumulator(str(exp / "tensorboard"))
    events.Reload()
    valid = [s.value for s in events.Scalars("valid/loss")]
    assert len(valid) == 4
    uniform = math.log(tokenizer.vocab_size)
    # the grammar leaves ~log(10) nats for the first word and ~log(2) (next digit or eos)
    # after: ~1.0 nat/token on this text; the untrained model is near uniform (2.6)
    assert valid[-1] < valid[0] - 0.3 and valid[-1] < 0.6 * uniform, valid

    avg = subprocess.run([sys.executable, "-m", "speechlm.bin.average_checkpoints", str(exp), "--num", "2"],
                         capture_output=True, text=True, timeout=300)
    assert avg.returncode == 0, avg.stderr[-3000:]
    model, tok = load_language_model(exp / "model.avg.ckpt")
    assert isinstance(model, TransformerLM) and not model.training
    tok = tokenizer_from_dict(tok)

    def logp(text: str) -> float:
        ids = torch.tensor([tok.encode(text)])
        return model.score(ids, torch.tensor([ids.shape[1]])).item()

    assert logp("three four five six") > logp("six five four three") + 2.0
    assert logp("eight nine zero") > logp("eight eight eight") + 2.0


def test_recipe_stage_5_trains_and_averages_the_lm(tmp_path):
    """tools/asr.sh stage 5 (--use-lm true) on a recipe's layout: data/{train,dev}/text and
    data/tokenizer in, exp/<lm-tag>/model.avg.ckpt out; without --use-lm it does nothing."""
    root = Path(__file__).resolve().parents[2]
    for name, n, seed in (("train", 200, 0), ("dev", 30, 1)):
        (tmp_path / "data" / name).mkdir(parents=True)
        grammar_text(tmp_path / "data" / name / "text", n, seed, name)
    WordTokenizer.train([" ".join(DIGITS)]).save(tmp_path / "data/tokenizer")
    env = {**os.environ, "PATH": f"{root / '.venv/bin'}:{root / 'tools'}:{os.environ['PATH']}"}
    stage5 = ["bash", str(root / "tools/asr.sh"), "--stage", "5", "--stop-stage", "5", "--num-avg", "1"]
    off = subprocess.run(stage5, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert off.returncode == 0 and not (tmp_path / "exp").exists(), off.stderr[-2000:]
    lm_args = " ".join(a for a in TINY if "progress" not in a) + " trainer.max_epochs=1 trainer.enable_progress_bar=false"
    on = subprocess.run([*stage5, "--use-lm", "true", "--lm-tag", "lm_digits", "--lm-args", lm_args],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert on.returncode == 0, (on.stdout[-2000:], on.stderr[-2000:])
    model, tokenizer = load_language_model(tmp_path / "exp/lm_digits/model.avg.ckpt")
    assert isinstance(model, TransformerLM) and tokenizer is not None
    assert "data/train/text: 200 lines" in on.stdout + on.stderr
