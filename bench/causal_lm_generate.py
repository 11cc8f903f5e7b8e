"""Generation speed: speechlm's CausalLM generation (`speechlm.search.causal_lm_generate`) vs
transformers' `generate` on the same tiny random LLaMA; identical outputs required.

A LLaMA-shaped model (4 layers, d=256, 8 query heads sharing 2 key/value heads, SwiGLU 704,
vocabulary 1000) is built by transformers with random weights (N(0, 0.2): peaked next-token
distributions, so that both sides' float rounding cannot flip a choice), saved with
`save_pretrained` and loaded here with `CausalLM.from_hf`. A batch of --batch prompts of
16-24 random tokens (left-padded, as transformers wants them) generates --new-tokens tokens,
greedy and with beam search (--beam, length penalty 1, transformers' default early stopping);
the eos never comes, so every row runs the full length on both sides. Each side's whole call
is timed (prefill, steps, bookkeeping); repetitions alternate the two so load from other jobs
hits both alike; medians are reported. Printed: the CPU, threads, each side's time,
ours / transformers (below 1: ours is faster), and whether every row's output is identical
(exits 1 if not).

    .venv/bin/python bench/causal_lm_generate.py [--batch 8] [--new-tokens 64] [--beam 4] [--reps 5] [--threads N]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time

import torch

from speechlm.decoders.causal_lm import CausalLM
from speechlm.search.causal_lm_generate import beam_generate, prompt_embeds, sample_generate

VOCAB, PAD, EOS = 1000, 0, 2


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def build(seed: int):
    """(transformers' LlamaForCausalLM, our CausalLM loaded from its save_pretrained dir)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=EOS, pad_token_id=PAD, initializer_range=0.2)
    hf = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        hf.lm_head.weight[EOS] = 0.0  # eos logit 0, far below the best (std ~8): every row runs the full length
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = CausalLM.from_hf(tmp).eval()
    return hf, ours


def time_alternating(reps: int, runs: dict):
    """{name: fn} -> ({name: median seconds}, {name: last result}), the runs alternating."""
    times = {name: [] for name in runs}
    results = {}
    for _ in range(reps):
        for name, fn in runs.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hf, ours = build(args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    lens = torch.randint(16, 25, (args.batch,), generator=g).tolist()
    prompts = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in lens]
    L = max(lens)
    ids = torch.tensor([[PAD] * (L - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])
    n = args.new_tokens

    def ours_greedy():
        return sample_generate(ours, *prompt_embeds(ours, prompts), n, EOS).tokens

    def hf_greedy():
        out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n, pad_token_id=PAD,
                          eos_token_id=EOS)
        return out[:, L:].tolist()

    def ours_beam():
        return [h[0][0] for h in beam_generate(ours, *prompt_embeds(ours, prompts), n, EOS, beam_size=args.beam,
                                               length_penalty=1.0)]

    def hf_beam():
        out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=args.beam,
                          max_new_tokens=n, pad_token_id=PAD, eos_token_id=EOS, length_penalty=1.0)
        return out[:, L:].tolist()

    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} threads; LLaMA 4 x d=256, 8/2 heads, V={VOCAB}; "
          f"{args.batch} prompts of {min(lens)}-{max(lens)} tokens, {n} new tokens, {args.reps} reps (medians)")
    ok = True
    for name, mine, theirs in (("greedy", ours_greedy, hf_greedy), (f"beam {args.beam}", ours_beam, hf_beam)):
        mine(), theirs()  # warm-up
        times, results = time_alternating(args.reps, {"ours": mine, "hf": theirs})
        same = sum(a == b for a, b in zip(results["ours"], results["hf"]))
        ok &= same == args.batch
        print(f"{name:>7}: ours {times['ours']:.3f} s   transformers {times['hf']:.3f} s   "
              f"ours/transformers = {times['ours'] / times['hf']:.2f}   identical outputs: {same}/{args.batch}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
