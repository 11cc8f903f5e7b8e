"""ESPnet ASR experiments made the way espnet2 itself makes them, for the converter's tests.

`asr_train` does what asr.sh's stage 11 does through `python -m espnet2.bin.asr_train`: the
namespace comes from `ASRTask.get_parser()` (asr.sh's flags + a recipe's conf/train_*.yaml),
the model from `ASRTask.build_model`, config.yaml is dumped from the namespace as
`AbsTask.main_worker` dumps it, and the state_dict is saved as valid.acc.ave.pth. Token lists
come from `espnet2.bin.tokenize_text` as asr.sh's stage 5 writes them, and global_mvn
statistics from ESPnet's own frontend over the "training" audio (collect_stats).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import sentencepiece as spm
import soundfile as sf
import torch
import yaml

from espnet2.bin.tokenize_text import tokenize
from espnet2.tasks.asr import ASRTask
from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

from fixtures import write_wav

WORDS = "zero one two three four five six seven eight nine oh yes no stop go".split()


def transcripts(n: int = 200, seed: int = 0) -> list[str]:
    g = np.random.default_rng(seed)
    return [" ".join(g.choice(WORDS, size=int(g.integers(1, 7)))) for _ in range(n)]


def token_list(directory: Path, token_type: str) -> tuple[Path, Path | None]:
    """asr.sh stage 5: (token list file, sentencepiece model or None), from `transcripts()`.
    Tokens ordered by frequency, <blank> and <unk> first, <sos/eos> last, as
    `espnet2.bin.tokenize_text --write_vocabulary true --add_symbol ...` writes them."""
    directory.mkdir(parents=True, exist_ok=True)
    text = directory / "train_text"
    text.write_text("".join(f"{line}\n" for line in transcripts()))
    bpemodel = None
    if token_type == "bpe":
        bpemodel = directory / "bpe.model"
        spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(directory / "bpe"), vocab_size=30,
                                       model_type="bpe", character_coverage=1.0, minloglevel=2)
    out = directory / "tokens.txt"
    tokenize(input=str(text), output=str(out), field=None, delimiter=None, token_type=token_type,
             space_symbol="<space>", non_linguistic_symbols=None, bpemodel=str(bpemodel) if bpemodel else None,
             log_level="ERROR", write_vocabulary=True, vocabulary_size=0, remove_non_linguistic_symbols=False,
             cutoff=0, add_symbol=["<blank>:0", "<unk>:1", "<sos/eos>:-1"], cleaner=None, g2p=None,
             add_nonsplit_symbol=[])
    return out, bpemodel


def write_audio(directory: Path, seconds, sample_rate: int, seed: int = 0) -> list[Path]:
    return [write_wav(directory / f"utt{seed + i}.wav", s, sample_rate, seed=seed + i) for i, s in enumerate(seconds)]


def read(path: Path) -> torch.Tensor:
    return torch.from_numpy(sf.read(path, dtype="float32")[0])


def randomize(model: torch.nn.Module, eos: int, seed: int = 1) -> None:
    """Norms away from (1, 0), BatchNorm statistics away from (0, 1), so that a swapped or
    missing one cannot pass; the decoder biased toward <eos> and away from <blank>, the CTC
    head toward blank, so that beam search ends hypotheses after a few tokens, as a trained
    model's would; a self-conditioning layer scaled up so that it changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.LayerNorm, torch.nn.BatchNorm1d)) and m.weight is not None:
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.copy_(0.5 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
        if getattr(model, "decoder", None) is not None:
            model.decoder.output_layer.bias[eos] += 1.0
            model.decoder.output_layer.bias[0] -= 5.0
        model.ctc.ctc_lo.bias[0] += 2.0
        if getattr(model.encoder, "conditioning_layer", None) is not None:  # self-conditioned CTC that matters
            model.encoder.conditioning_layer.weight.mul_(20.0)


def asr_train(exp: Path, train_conf: dict, token_type: str, fs: str, normalize: str | None = "global_mvn",
              seed: int = 0):
    """An experiment dir exp/ with config.yaml and valid.acc.ave.pth, as espnet2 writes them.

    `train_conf` is the recipe's conf/train_*.yaml; asr.sh adds --token_type, --token_list,
    --bpemodel, --frontend_conf fs=..., and with feats_normalize=global_mvn --normalize
    global_mvn --normalize_conf stats_file=... (`normalize=None` leaves normalize to
    train_conf, or to ASRTask's default, utterance_mvn). Returns (ESPnet model in eval
    mode, config dict as written)."""
    exp.mkdir(parents=True, exist_ok=True)
    tokens, bpemodel = token_list(exp / "token_list", token_type)
    (exp / "train.yaml").write_text(yaml.safe_dump(train_conf))
    argv = ["--config", str(exp / "train.yaml"), "--output_dir", str(exp), "--use_preprocessor", "true",
            "--token_type", token_type, "--token_list", str(tokens), "--frontend_conf", f"fs={fs}"]
    if bpemodel is not None:
        argv += ["--bpemodel", str(bpemodel)]
    if normalize == "global_mvn":
        argv += ["--normalize", "global_mvn", "--normalize_conf", f"stats_file={exp / 'feats_stats.npz'}"]
    args = ASRTask.get_parser().parse_args(argv)
    args.version = "202511"  # AbsTask.main sets espnet.__version__
    if args.normalize == "global_mvn":
        collect_stats(args, exp / "feats_stats.npz")
    torch.manual_seed(seed)
    model = ASRTask.build_model(args)
    randomize(model, eos=len(args.token_list) - 1)
    with (exp / "config.yaml").open("w", encoding="utf-8") as f:
        yaml_no_alias_safe_dump(vars(args), f, indent=4, sort_keys=False)
    torch.save(model.state_dict(), exp / "valid.acc.ave.pth")
    return model.eval(), yaml.safe_load((exp / "config.yaml").read_text())


def collect_stats(args, path: Path) -> None:
    """asr.sh stage 10: feats_stats.npz from ESPnet's frontend over the training audio."""
    from espnet2.asr.frontend.default import DefaultFrontend

    frontend = DefaultFrontend(**args.frontend_conf).eval()
    rate = sample_rate(args.frontend_conf.get("fs", 16000))
    waves = [read(p) for p in write_audio(path.parent / "train_audio", (1.1, 0.8, 1.4), rate, seed=50)]
    frames = []
    with torch.no_grad():
        for w in waves:
            feats, n = frontend(w[None], torch.tensor([len(w)]))
            frames.append(feats[0, : int(n[0])])
    real = torch.cat(frames).double().numpy()
    np.savez(path, count=len(real), sum=real.sum(0), sum_square=(real**2).sum(0))


def sample_rate(fs) -> int:
    text = str(fs)
    return int(float(text[:-1]) * 1000) if text[-1:] in "kK" else int(text)
