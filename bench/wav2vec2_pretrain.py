"""wav2vec 2.0 pretraining step: our Wav2Vec2PretrainModel vs transformers'
Wav2Vec2ForPreTraining, the same network (BASE: CNN 7 x 512, 12 x 768 post-LN blocks, 2 x 320
codes, 256 dims, 100 negatives), the same weights and the same masks.

Our model is built at fairseq's BASE settings; `speechlm.interop.hf_wav2vec2.speechlm_to_hf`
gives the HF config and state dict (loaded strictly), so the two are one network. Both run in
training mode with the same dropouts (fairseq's: 0.1 after the feature projection, on the
blocks, in attention and on the quantizer input; layer drop 0 in both, so every step does
the same work). One span mask (our `span_mask`, mask_prob 0.65, length 10, same count in
every utterance) is drawn per run and used by both: HF gets it as `mask_time_indices` with
`sampled_negative_indices` from transformers' `_sample_negative_indices`; ours gets the same
mask and the same negatives by replacing, for the run, the two random draws its forward
makes (`span_mask` and `sample_negatives`), so neither side spends time drawing them.

Timed: forward + backward + zero_grad of one step on a batch of random audio (default
4 utterances x 10 s, all full length), `--steps` steps after a warm-up step, best of `--reps`
(ours and HF alternate, so load from other jobs hits both alike). Printed: per-step seconds
and ours / HF (lower is better). Benchmarks print ratios against a peer measured in the same
run: on a shared machine the absolute times say little.

Not the same work, by design of the implementations:
- HF quantizes every frame and scores every frame against its negatives (1 + 100 cosine
  similarities per frame), then keeps the masked ones in the loss; ours (fairseq's way)
  quantizes and scores the masked frames only (about half of them at mask_prob 0.65).
- ours adds fairseq's feature penalty (mean square of the CNN output); HF has none.
- the losses are scaled differently (ours per masked frame, HF summed); the gradient's
  cost is the same.
- ours reads the contrastive logits off a (B, M, M) cosine-similarity matrix (a batched
  matmul) instead of a (.., 1 + K, D) tensor of gathered candidates (see
  `speechlm.models.ssl.contrastive`); HF's CNN also computes the gradient with respect to the
  audio (it sets requires_grad on its input in training, for gradient checkpointing).

Before timing, in eval mode on a small batch (2 x 2 s; eval: no dropout, argmax codes) the
two must agree: the context vectors and quantized targets at the masked frames (max |diff|)
and the contrastive loss on the same negatives (relative difference); exits 1 if not.

    .venv/bin/python bench/wav2vec2_pretrain.py [--batch 4] [--seconds 10] [--steps 3] [--reps 1] [--threads N]
        [--profile N (top N ops by self CPU time, one step each, at these shapes)]
        [--layers 12] (fewer blocks for a quick look; BASE is 12)

(Not bench/ssl.py: a script's folder comes first on sys.path, so a bench/ssl.py would stand in
for the standard library's `ssl`, which torch imports, in every script here.)
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager

import numpy as np
import torch

TOLERANCE = 1e-4


def build_pair(num_blocks: int = 12, seed: int = 0):
    """(ours: Wav2Vec2PretrainModel at BASE, HF's Wav2Vec2ForPreTraining with its weights)."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

    from speechlm.encoders.wav2vec2 import ConvFeatureEncoder, Wav2Vec2Encoder
    from speechlm.interop.hf_wav2vec2 import speechlm_to_hf
    from speechlm.models.ssl.wav2vec2 import Wav2Vec2PretrainModel

    torch.manual_seed(seed)
    ours = Wav2Vec2PretrainModel(ConvFeatureEncoder(), Wav2Vec2Encoder(num_blocks=num_blocks, layer_drop_rate=0.0))
    extras = {k: v for k, v in ours.state_dict().items()
              if not k.startswith(("frontend.", "encoder.")) and k != "quantizer.num_updates"}
    config, state = speechlm_to_hf(ours.frontend, ours.encoder, extras, config_overrides=dict(
        feat_quantizer_dropout=ours.dropout_features.p, num_negatives=ours.num_negatives,
        contrastive_logits_temperature=ours.logit_temp, diversity_loss_weight=ours.diversity_weight,
        layerdrop=0.0))
    theirs = Wav2Vec2ForPreTraining(Wav2Vec2Config(**config))
    theirs.load_state_dict(state)  # strict
    theirs.quantizer.temperature = ours.quantizer.temperature
    return ours, theirs


def make_batch(batch: int, seconds: float, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * 16000)
    return {"audio": 0.1 * torch.randn(batch, n, generator=g), "audio_lens": torch.full((batch,), n)}


def draw_masks(ours, batch: dict, seed: int = 0):
    """One span mask and one set of negatives, in both forms:
    (mask (B, T) bool, HF's sampled_negative_indices (B, T, K), ours (B, M, K))."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import _sample_negative_indices

    from speechlm.models.ssl.masking import span_mask

    lengths = ours.frontend.output_lengths(batch["audio_lens"])
    frames = int(lengths.max())
    mask = span_mask(lengths, frames, ours.mask_prob, ours.mask_length, ours.min_masks,
                     generator=torch.Generator().manual_seed(seed), same_count=True)
    np.random.seed(seed)
    theirs = torch.from_numpy(_sample_negative_indices((mask.shape[0], frames), ours.num_negatives,
                                                       mask.numpy())).long()
    # HF: flat indices b*T + t; ours: the rank of t among the row's masked frames
    rank = mask.long().cumsum(1) - 1
    mine = torch.stack([rank[b][theirs[b][mask[b]] - b * frames] for b in range(mask.shape[0])])
    return mask, theirs, mine


@contextmanager
def fixed_draws(mask, negatives):
    """Our forward with `mask` and `negatives` in place of its two random draws."""
    import speechlm.models.ssl.masked_encoding as masked_encoding
    import speechlm.models.ssl.wav2vec2 as wav2vec2

    saved = masked_encoding.span_mask, wav2vec2.sample_negatives
    masked_encoding.span_mask = lambda lengths, max_len, *args, **kwargs: mask
    wav2vec2.sample_negatives = lambda m, k, *args, **kwargs: negatives
    try:
        yield
    finally:
        masked_encoding.span_mask, wav2vec2.sample_negatives = saved


def hf_forward(theirs, batch, mask, negatives):
    return theirs(batch["audio"], mask_time_indices=mask, sampled_negative_indices=negatives)


def parity(ours, theirs, seed: int = 1) -> dict[str, float]:
    """Eval mode, 2 x 2 s: max |diff| of context vectors and targets at masked frames,
    relative difference of the contrastive loss (summed over masked frames) and of the
    diversity loss (eval: from the argmax codes in both)."""
    batch = make_batch(2, 2.0, seed)
    mask, neg_hf, neg_ours = draw_masks(ours, batch, seed)
    got = {}
    hooks = [ours.final_proj.register_forward_hook(lambda m, i, o: got.__setitem__("c", o)),
             ours.project_q.register_forward_hook(lambda m, i, o: got.__setitem__("y", o))]
    ours.eval(), theirs.eval()
    try:
        with torch.no_grad(), fixed_draws(mask, neg_ours):
            mine = ours(batch)
            hf = hf_forward(theirs, batch, mask, neg_hf)
    finally:
        for h in hooks:
            h.remove()
        ours.train(), theirs.train()
    frames = int(mask.sum())
    groups_vars = ours.quantizer.num_groups * ours.quantizer.num_vars
    diversity = (groups_vars - float(mine["code_perplexity"])) / groups_vars * frames
    return {
        "context": (got["c"] - hf.projected_states[mask]).abs().max().item(),
        "targets": (got["y"] - hf.projected_quantized_states[mask]).abs().max().item(),
        "contrastive": abs(float(mine["loss_contrastive"]) * frames / float(hf.contrastive_loss) - 1),
        "diversity": abs(diversity / float(hf.diversity_loss) - 1),
        "loss": float(hf.contrastive_loss) / frames,
    }


def step_ours(ours, batch):
    ours(batch)["loss"].backward()
    ours.zero_grad(set_to_none=True)


def step_hf(theirs, batch, mask, negatives):
    hf_forward(theirs, batch, mask, negatives).loss.backward()
    theirs.zero_grad(set_to_none=True)


def seconds_per_step(step, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def profile(name: str, step, top: int) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    step()  # warm-up
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(f"\n-- {name}: top {top} ops by self CPU time (one step)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=48))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--layers", type=int, default=12, help="context network blocks (BASE: 12)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile one step of each, top N ops by self CPU time")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    ours, theirs = build_pair(args.layers)
    diff = parity(ours, theirs)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; HF attention: "
          f"{theirs.config._attn_implementation}")
    print(f"eval parity (2 x 2 s, same mask and negatives): max|diff| context {diff['context']:.2e}, "
          f"targets {diff['targets']:.2e}; contrastive loss {diff['loss']:.4f}/frame, rel. diff "
          f"{diff['contrastive']:.1e}; diversity loss rel. diff {diff['diversity']:.1e}")
    worst = max(diff["context"], diff["targets"], diff["contrastive"], diff["diversity"])

    batch = make_batch(args.batch, args.seconds)
    mask, neg_hf, neg_ours = draw_masks(ours, batch)
    frames = mask.shape[1]
    print(f"batch {args.batch} x {args.seconds:g} s ({frames} frames each), {int(mask[0].sum())} masked per "
          f"utterance ({mask.float().mean():.0%}); {args.layers} blocks; training mode, dropout as fairseq's "
          f"BASE, layer drop 0; forward + backward + zero_grad")
    print("HF quantizes and scores all frames, ours the masked ones only (fairseq's way); ours also "
          "computes the feature penalty")
    ours.train(), theirs.train()
    run_ours = lambda: step_ours(ours, batch)  # noqa: E731
    run_hf = lambda: step_hf(theirs, batch, mask, neg_hf)  # noqa: E731
    with fixed_draws(mask, neg_ours):
        run_ours(), run_hf()  # warm-up
        t_ours, t_hf = [], []
        for _ in range(args.reps):
            t_ours.append(seconds_per_step(run_ours, args.steps))
            t_hf.append(seconds_per_step(run_hf, args.steps))
        best_ours, best_hf = min(t_ours), min(t_hf)
        print(f"per step (best of {args.reps} x {args.steps} steps): ours {best_ours:.3f} s, "
              f"HF {best_hf:.3f} s; ours / HF = {best_ours / best_hf:.2f}x", flush=True)
        if args.profile:
            profile("ours", run_ours, args.profile)
            profile("HF", run_hf, args.profile)
    if worst > TOLERANCE:
        print(f"ours and HF differ by {worst:.2e} > {TOLERANCE:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
