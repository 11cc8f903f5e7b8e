"""Average the best checkpoints of an experiment into one model file.

    python -m speechlm.bin.average_checkpoints exp/conformer [--num 5] [--out exp/conformer/model.avg.ckpt]
    python -m speechlm.bin.average_checkpoints --checkpoints a.ckpt b.ckpt --out model.avg.ckpt

With an experiment dir, the k best are those Lightning's ModelCheckpoint recorded in
`checkpoints/last.ckpt` (by its monitored metric).
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
    callbacks = load_checkpoint(last).get("callbacks", {})
    for key, state in callbacks.items():
        if key.startswith("ModelCheckpoint") and state.get("best_k_models"):
            # the callback's state key spells out its settings, e.g. "...'mode': 'max'..."
            ranked = sorted(state["best_k_models"].items(), key=lambda kv: float(kv[1]),
                            reverse="'mode': 'max'" in key)
            return [Path(p) for p, _ in ranked[:num] if Path(p).is_file()]
    raise ValueError(f"{last}: records no best checkpoints (was ModelCheckpoint monitoring a metric?)")


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
