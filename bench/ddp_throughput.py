"""Training throughput with 1 vs 2 data-parallel gloo processes, at the same global batch.

A Conformer CTC/attention model (conf/encoder/conformer_s.yaml-sized: 12 x d=144 blocks
unless --blocks/--dim say otherwise; a 6-block attention decoder) trains on a fixed
synthetic global batch (--batch utterances of --frames 80-dim fbank frames, --tokens tokens
each) with AdamW: forward, backward, DDP's gradient all-reduce, optimizer step.
- 1 process: the whole batch, --threads torch threads;
- 2 processes (gloo DDP, `torch.multiprocessing.spawn`): half the batch each,
  --threads / 2 threads each, gradients all-reduced every step.
Printed: transcript tokens/s and input frames/s of each, and the ratio (2 procs / 1 proc).
The processes share the machine, so on a 2-core CPU this measures what DDP's gradient
all-reduce and a second process cost against threading inside one; on GPUs the same
code path scales with devices.

    .venv/bin/python bench/ddp_throughput.py [--steps 6] [--batch 16] [--frames 400] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import socket
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from speechlm.models.build import build_model


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def model_config(args) -> dict:
    return {"_target_": "speechlm.models.ctc_attention.CTCAttentionModel", "vocab_size": 300, "ctc_weight": 0.3,
            "encoder": {"_target_": "speechlm.encoders.conformer.ConformerEncoder", "input_size": 80,
                        "output_size": args.dim, "attention_heads": 4, "linear_units": 4 * args.dim,
                        "num_blocks": args.blocks, "cnn_module_kernel": 31},
            "decoder": {"_target_": "speechlm.decoders.transformer.TransformerDecoder", "vocab_size": 300,
                        "encoder_output_size": args.dim, "attention_heads": 4, "linear_units": 4 * args.dim,
                        "num_blocks": 6}}


def global_batch(args) -> dict:
    g = torch.Generator().manual_seed(0)
    lens = torch.linspace(args.frames * 0.7, args.frames, args.batch).long()
    return {"audio": torch.randn(args.batch, args.frames, 80, generator=g), "audio_lens": lens,
            "tokens": torch.randint(1, 298, (args.batch, args.tokens), generator=g),
            "token_lens": torch.full((args.batch,), args.tokens)}


def worker(rank: int, world: int, args, port: int, out: str) -> None:
    torch.set_num_threads(max(1, args.threads // world))
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = build_model(model_config(args), initialize=False)
    step_model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = {k: v[rank::world] for k, v in global_batch(args).items()}  # this rank's share
    times = []
    for i in range(args.steps + 1):  # the first step (allocations, gloo warm-up) is not counted
        if world > 1:
            dist.barrier()
        start = time.perf_counter()
        loss = step_model(batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if world > 1:
            dist.barrier()
        if i:
            times.append(time.perf_counter() - start)
    if rank == 0:
        with open(out, "w") as f:
            f.write(str(sorted(times)[len(times) // 2]))
    if world > 1:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(world: int, args) -> float:
    """Median seconds per training step of the global batch with `world` processes."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "median")
        if world == 1:
            worker(0, 1, args, 0, out)
        else:
            mp.spawn(worker, args=(world, args, free_port(), out), nprocs=world, join=True)
        return float(open(out).read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--dim", type=int, default=144)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    print(f"{cpu_model()}, {os.cpu_count()} CPUs; global batch {args.batch} x {args.frames} frames, "
          f"{args.tokens} tokens each; Conformer {args.blocks} x d={args.dim}; {args.threads} threads in all")
    tokens, frames = args.batch * args.tokens, int(global_batch(args)["audio_lens"].sum())
    rates = {}
    for world in (1, 2, 1, 2):  # alternated, so other load hits both alike; the better of two
        seconds = measure(world, args)
        rates[world] = max(rates.get(world, 0.0), tokens / seconds)
    for world, rate in rates.items():
        print(f"{world} process{'es' if world > 1 else ''}: {rate:8.1f} tokens/s  {rate * frames / tokens:9.0f} frames/s")
    print(f"ratio 2 procs / 1 proc: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
