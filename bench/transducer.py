"""Transducer searches, batched over utterances vs one utterance at a time: throughput.

Greedy search (one symbol per frame) and modified beam search (`speechlm.search`) each
decode the same encoder output twice: the whole set in duration-sorted batches of
--batch utterances, and in a Python loop one utterance at a time (the same function with a
batch of one). Graves beam search, which only exists per utterance, is timed once for
reference. The encoder runs once beforehand: the searches are what is timed. Repetitions
alternate batched and looped runs so that load from other jobs hits both alike; medians
are reported. Every utterance must get the same best hypothesis both ways (exit 1 if not).

Trained model (--checkpoint model.avg.ckpt --data-dir data/test): encoder output of the
data dir's utterances; RTF is search time over seconds of audio. Without --checkpoint: a
random 160-cell LSTM predictor and joiner (conformer_fast_transducer's shape) over random
encoder output for --utts utterances of 2-8 s (60 ms per frame, conformer_fast's x6
subsampling), with the blank logit raised so that ~1 token is emitted per 4 frames.

    .venv/bin/python bench/transducer.py [--utts 64] [--batch 32] [--beam 4] [--reps 3]
    .venv/bin/python bench/transducer.py --checkpoint egs/digits/asr/exp/conformer_fast_transducer/model.avg.ckpt \
        --data-dir egs/digits/asr/data/test
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from speechlm.decoders.transducer import Joiner, LSTMPredictor
from speechlm.search.transducer_beam import graves_beam_search, modified_beam_search
from speechlm.search.transducer_greedy import transducer_greedy_search

FRAME_SECONDS = 0.06


def random_setup(n: int, seed: int = 0):
    torch.manual_seed(seed)
    vocab, dim = 14, 96
    predictor = LSTMPredictor(vocab, 96, 160, dropout_rate=0.0).eval()
    joiner = Joiner(dim, 160, 160, vocab).eval()
    with torch.no_grad():
        joiner.output.bias[0] += 2.0
    lens = torch.randint(int(2 / FRAME_SECONDS), int(8 / FRAME_SECONDS) + 1, (n,))
    encs = [torch.randn(int(t), dim) for t in lens]
    return predictor, joiner, encs, FRAME_SECONDS * float(lens.sum())


def trained_setup(checkpoint: str, data_dir: str):
    from speechlm.data.collate import collate_audio
    from speechlm.data.dataset import AudioDataset
    from speechlm.data.sampler import DurationBucketSampler
    from speechlm.train.pretrained import load_pretrained

    model, _, config = load_pretrained(checkpoint)
    ds = AudioDataset(data_dir, sample_rate=int(config["frontend"]["sample_rate"]))
    encs = []
    with torch.no_grad():
        for ids in DurationBucketSampler(ds.durations, 100.0, shuffle=False):
            batch = collate_audio([ds[i] for i in ids])
            enc = model.encode(batch["audio"], batch["audio_lens"])
            encs += [enc.output[i, : int(enc.lengths[i])] for i in range(len(ids))]
    return model.predictor, model.joiner, encs, sum(ds.durations)


def batches(encs: list[torch.Tensor], size: int):
    order = sorted(range(len(encs)), key=lambda i: encs[i].shape[0])
    for start in range(0, len(order), size):
        ids = order[start : start + size]
        lens = torch.tensor([encs[i].shape[0] for i in ids])
        padded = torch.nn.utils.rnn.pad_sequence([encs[i] for i in ids], batch_first=True)
        yield ids, padded, lens


def best_tokens(search, encs, size: int) -> dict[int, list[int]]:
    out = {}
    for ids, padded, lens in batches(encs, size):
        for i, hyp in zip(ids, search(padded, lens)):
            out[i] = (hyp[0] if isinstance(hyp, list) else hyp).tokens
    return out


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint")
    p.add_argument("--data-dir")
    p.add_argument("--utts", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    if args.checkpoint:
        predictor, joiner, encs, seconds = trained_setup(args.checkpoint, args.data_dir)
    else:
        predictor, joiner, encs, seconds = random_setup(args.utts)
    searches = {
        "greedy": lambda e, l: transducer_greedy_search(predictor, joiner, e, l),
        f"modified beam {args.beam}": lambda e, l: modified_beam_search(predictor, joiner, e, l, beam_size=args.beam),
    }
    print(f"{len(encs)} utterances, {seconds:.1f} s of audio, batch {args.batch}, {args.threads} threads")
    ok = True
    with torch.no_grad():
        for name, search in searches.items():
            times = {"batched": [], "loop": []}
            for _ in range(args.reps):
                t, batched = timed(lambda: best_tokens(search, encs, args.batch))
                times["batched"].append(t)
                t, looped = timed(lambda: best_tokens(search, encs, 1))
                times["loop"].append(t)
            same = batched == looped
            ok &= same
            tb, tl = statistics.median(times["batched"]), statistics.median(times["loop"])
            print(f"{name:>16}: batched {tb:.3f} s ({len(encs) / tb:.0f} utt/s, RTF {tb / seconds:.4f}); "
                  f"per utterance {tl:.3f} s ({len(encs) / tl:.0f} utt/s, RTF {tl / seconds:.4f}); "
                  f"loop / batched {tl / tb:.1f}x; same hypotheses: {same}")
        t, _ = timed(lambda: best_tokens(lambda e, l: graves_beam_search(predictor, joiner, e, l, beam_size=args.beam),
                                         encs, args.batch))
        print(f"{'graves beam ' + str(args.beam):>16}: {t:.3f} s ({len(encs) / t:.1f} utt/s, RTF {t / seconds:.4f}), "
              "per utterance by design")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
