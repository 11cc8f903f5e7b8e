"""Average the best checkpoints of an experiment into one model file.

    python -m speechlm.bin.average_checkpoints exp/conformer [--num 5] [--out exp/conformer/model.avg.ckpt]
    python -m speechlm.bin.average_checkpoints --checkpoints a.ckpt b.ckpt --out model.avg.ckpt

With an experiment dir, the k best are those Lightning's ModelCheckpoint recorded in
`checkpoints/last.ckpt`, ranked by the checkpoint criterion training wrote into it
(`speechlm.checkpoint_criterion`: the metric and whether lower or higher is better).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechlm.train.average import average_checkpoints, load_checkpoint


def best_checkpoints(exp: Path, num: int) -> list[Path]:
    last = exp / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise FileNotFoundError(f"{last}: not found (has this experiment trained an epoch?)")
    ckpt = load_checkpoint(last)
    criterion = (ckpt.get("speechlm") or {}).get("checkpoint_criterion")
    if not criterion:
        raise ValueError(f"{last}: no checkpoint criterion in its speechlm block (written by an older speechlm?); "
                         "name the checkpoints with --checkpoints")
    monitor, mode = criterion
    for key, state in ckpt.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and state.get("monitor") == monitor and state.get("best_k_models"):
            ranked = sorted(state["best_k_models"].items(), key=lambda kv: float(kv[1]), reverse=mode == "max")
            return [Path(p) for p, _ in ranked[:num] if Path(p).is_file()]
    raise ValueError(f"{last}: records no best checkpoints by {monitor} (was ModelCheckpoint monitoring it?)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m speechlm.bin.average_checkpoints", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exp", type=Path, nargs="?")
    p.add_argument("--num", type=int, default=5)
    p.add_argument("--checkpoints", type=Path, nargs="+")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.checkpoints:
        paths = args.checkpoints
    elif args.exp:
        paths = best_checkpoints(args.exp, args.num)
    else:
        p.error("give an experiment dir or --checkpoints")
    out = args.out or (args.exp / "model.avg.ckpt")
    average_checkpoints(paths, out)
    print(f"{out}: average of {len(paths)} checkpoints: {', '.join(p.name for p in paths)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
