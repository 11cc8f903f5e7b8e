"""Global CMVN statistics of a data dir's features, as an ESPnet `feats_stats.npz`
(count, sum, sum_square), for `speechlm.features.GlobalCMVN`.

    python -m speechlm.bin.compute_cmvn data/train exp/cmvn.npz experiment=conformer_fast [overrides]
    python -m speechlm.bin.compute_cmvn data/train exp/cmvn.npz --config-dir conf experiment=my_preset
    python -m speechlm.bin.compute_cmvn data/train exp/cmvn.npz --frontend conf/frontend/fbank.yaml
    python -m speechlm.bin.compute_cmvn data/train exp/cmvn.npz [--n-mels 80] [--sample-rate 16000]

With training overrides (the same `experiment=...` and overrides given to
`speechlm.bin.train`; `--config-dir` for a recipe's own presets) the frontend is the one
that training config builds, so the statistics are of exactly the features the model will
see; `--frontend` takes a YAML node with `_target_` (an nn.Module class); without either,
an 80-bin Kaldi fbank.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader

from speechlm.data.collate import collate_audio
from speechlm.data.dataset import AudioDataset
from speechlm.data.sampler import DurationBucketSampler
from speechlm.features import CMVNStats, Fbank
from speechlm.targets import ConfigTargetError, check_module_config, resolved


def build_frontend(args) -> torch.nn.Module:
    import hydra
    from omegaconf import OmegaConf

    if args.overrides or args.config_dir:
        from hydra import compose, initialize_config_dir

        from speechlm.bin.train import CONF_DIR

        search = [f"hydra.searchpath=[file://{Path(args.config_dir).resolve()}]"] if args.config_dir else []
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=search + list(args.overrides))
        return hydra.utils.instantiate(cfg.frontend)
    if args.frontend:  # a file: it may only build a module (speechlm.targets)
        node = resolved(OmegaConf.load(args.frontend))
        check_module_config(node, args.frontend)
        return hydra.utils.instantiate(node)
    return Fbank(sample_rate=args.sample_rate, n_mels=args.n_mels, input_scale=args.input_scale)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m speechlm.bin.compute_cmvn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", type=Path)
    p.add_argument("out", type=Path, help="stats file to write (.npz)")
    p.add_argument("overrides", nargs="*", help="overrides of the training config (conf/train.yaml) whose "
                                                 "frontend to use, e.g. experiment=conformer_fast")
    p.add_argument("--config-dir", help="extra config dir with presets (as speechlm.bin.train --config-dir)")
    p.add_argument("--frontend", help="YAML with a `_target_` feature extractor (overrides the options below)")
    p.add_argument("--sample-rate", type=int, default=16000, help="audio is resampled to this rate")
    p.add_argument("--n-mels", type=int, default=80)
    p.add_argument("--input-scale", type=float, default=1.0, help="32768 for Kaldi's int16-scaled features")
    p.add_argument("--max-seconds", type=float, default=200.0, help="audio seconds per batch")
    p.add_argument("--num-workers", type=int, default=0)
    args = p.parse_intermixed_args(argv)

    try:
        frontend = build_frontend(args).eval()
    except (ConfigTargetError, yaml.YAMLError) as e:  # --frontend: refused, or not safe YAML
        print(f"compute_cmvn: error: {e}", file=sys.stderr)
        return 1
    sample_rate = int(getattr(frontend, "sample_rate", args.sample_rate))
    ds = AudioDataset(args.data_dir, sample_rate=sample_rate)
    batches = DurationBucketSampler(ds.durations, max_seconds=args.max_seconds, shuffle=False)
    loader = DataLoader(ds, batch_sampler=batches, collate_fn=collate_audio, num_workers=args.num_workers)
    stats, start = None, time.time()
    with torch.no_grad():
        for batch in loader:
            feats, lens = frontend(batch["audio"], batch["audio_lens"])
            stats = (stats or CMVNStats.zeros(feats.shape[-1])).accumulate(feats, lens)
    if stats is None or stats.count == 0:
        print(f"{args.data_dir}: no frames to compute statistics from", file=sys.stderr)
        return 1
    stats.save(args.out)
    print(f"{args.out}: {stats.count} frames of dim {stats.dim} from {len(ds)} utterances "
          f"in {time.time() - start:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
