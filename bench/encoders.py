"""Our encoders vs ESPnet's: training-step speed (forward + backward) at the recipe configs.

For each family, conf/encoder/<family>.yaml (12 blocks, d=256) is built twice, ours and
ESPnet's, with ESPnet's weights copied into ours so the two are the same network. A batch of
8 x 1000 frames x 80 (lengths 70-100 % of the longest) runs forward + backward in training
mode (dropout on, as a recipe trains). Repetitions alternate ours / ESPnet's (A B A B) so load
from other jobs hits both alike; medians are printed with the ratio ours/ESPnet (lower is
better), and the ratio of the best (fastest) steps, the one to quote on a shared machine.

Also printed: the FLOPs of one step (FlopCounterMode, counted once), the GFLOP/s each side
achieves, and the machine's fp32 matmul GFLOP/s measured here (a large square matmul), i.e.
how close each is to what this CPU can do; and, in eval mode on a small batch, the largest
output difference between the two (exits 1 if above 1e-4).

    .venv/bin/python bench/encoders.py [--families conformer,e_branchformer,transformer]
        [--reps 5] [--batch 8] [--frames 1000] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from speechlm.bin.model_info import flop_counter
from speechlm.interop.espnet import espnet_encoder_state_dict_to_ours
from speechlm.models.build import build_model

CONF = Path(__file__).resolve().parents[1] / "conf" / "encoder"
FAMILIES = ("conformer", "e_branchformer", "transformer")
TOLERANCE = 1e-4


def espnet_class(family: str):
    """ESPnet's class for one of our families (a test-only peer, imported on demand)."""
    if family == "conformer":
        from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
        return ConformerEncoder
    elif family == "e_branchformer":
        from espnet2.asr.encoder.e_branchformer_encoder import EBranchformerEncoder
        return EBranchformerEncoder
    elif family == "transformer":
        from espnet2.asr.encoder.transformer_encoder import TransformerEncoder
        return TransformerEncoder
    raise ValueError(f"unknown family {family!r} (choose from {', '.join(FAMILIES)})")


def build_pair(family: str):
    """(ours, ESPnet's) from conf/encoder/<family>.yaml, ours holding ESPnet's weights."""
    cfg = OmegaConf.load(CONF / f"{family}.yaml")
    kwargs = OmegaConf.to_container(cfg)
    kwargs.pop("_target_")
    kwargs.pop("init_from", None)  # ours only: where to load weights from
    torch.manual_seed(0)
    theirs = espnet_class(family)(**kwargs)
    ours = build_model(cfg, initialize=False)
    ours.load_state_dict(espnet_encoder_state_dict_to_ours(theirs.state_dict()), strict=True)
    return ours, theirs


def output_of(result):
    """Our EncoderOutput or ESPnet's (xs, olens, states) -> (B, T', D)."""
    return result.output if hasattr(result, "output") else result[0]


def make_batch(batch: int, frames: int, feat_dim: int = 80, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = (frames * (0.7 + 0.3 * torch.rand(batch, generator=g))).long()
    lengths[0] = frames
    lengths = lengths.sort(descending=True).values
    xs = torch.randn(batch, frames, feat_dim, generator=g)
    return xs.masked_fill((torch.arange(frames) >= lengths[:, None])[..., None], 0.0), lengths


def train_step(model, xs, lengths, clock=time.perf_counter) -> float:
    """Seconds for one forward + backward (gradients cleared outside the timing)."""
    model.zero_grad(set_to_none=True)
    start = clock()
    output_of(model(xs, lengths)).square().mean().backward()
    return clock() - start


def step_flops(model, xs, lengths) -> int:
    model.zero_grad(set_to_none=True)
    with flop_counter() as counter:
        output_of(model(xs, lengths)).square().mean().backward()
    return counter.get_total_flops()


def max_eval_difference(ours, theirs) -> float:
    """Largest |ours - ESPnet's| over valid output frames, eval mode, 3 utterances."""
    xs, lengths = make_batch(3, 300, seed=1)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        a, b = ours(xs, lengths), theirs(xs, lengths)
    ours.train(), theirs.train()
    if not torch.equal(a.lengths.long(), b[1].long()):
        return float("inf")
    return max((a.output[i, :n] - b[0][i, :n]).abs().max().item() for i, n in enumerate(b[1].tolist()))


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    """fp32 GFLOP/s of an n x n matmul: the practical ceiling for this CPU and thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time steps by the process's CPU seconds, not wall-clock: with --threads 1 on a "
                             "machine other jobs load, what the step costs rather than how long it waited")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time and torch.get_num_threads() > 1:
        parser.error("--cpu-time needs --threads 1 (idle OpenMP threads spin and would count)")
    clock = time.process_time if args.cpu_time else time.perf_counter

    peak = matmul_gflops()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"fp32 matmul (2048^2): {peak:.1f} GFLOP/s")
    xs, lengths = make_batch(args.batch, args.frames)
    print(f"batch {args.batch} x {args.frames} frames x 80, lengths {lengths.tolist()}; "
          f"forward + backward, training mode; {args.reps} reps after 1 warm-up; "
          f"{'CPU' if args.cpu_time else 'wall-clock'} seconds\n")

    header = f"{'family':<15} {'ours s':>8} {'ESPnet s':>9} {'ratio':>6} {'GFLOP':>7} " \
             f"{'ours GF/s':>10} {'ESPnet GF/s':>12} {'of peak':>8} {'eval max|diff|':>15} {'best ratio':>11}"
    rows, worst = [], 0.0
    for family in args.families.split(","):
        ours, theirs = build_pair(family)
        diff = max_eval_difference(ours, theirs)
        worst = max(worst, diff)
        ours.train(), theirs.train()
        flops_ours, flops_theirs = step_flops(ours, xs, lengths), step_flops(theirs, xs, lengths)
        train_step(ours, xs, lengths), train_step(theirs, xs, lengths)  # warm-up
        t_ours, t_theirs = [], []
        for _ in range(args.reps):
            t_ours.append(train_step(ours, xs, lengths, clock))
            t_theirs.append(train_step(theirs, xs, lengths, clock))
        m_ours, m_theirs = statistics.median(t_ours), statistics.median(t_theirs)
        gf_ours, gf_theirs = flops_ours / m_ours / 1e9, flops_theirs / m_theirs / 1e9
        rows.append(f"{family:<15} {m_ours:>8.3f} {m_theirs:>9.3f} {m_ours / m_theirs:>6.2f} "
                    f"{flops_ours / 1e9:>7.1f} {gf_ours:>10.1f} {gf_theirs:>12.1f} "
                    f"{100 * gf_ours / peak:>7.0f}% {diff:>15.2e} {min(t_ours) / min(t_theirs):>11.2f}")
        if flops_ours != flops_theirs:
            rows[-1] += f"  (ESPnet counts {flops_theirs / 1e9:.1f} GFLOP)"
        print(rows[-1] if len(rows) > 1 else header + "\n" + rows[-1], flush=True)
        del ours, theirs
    if worst > TOLERANCE:
        print(f"outputs differ by {worst:.2e} > {TOLERANCE:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
