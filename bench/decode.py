"""Our batched joint CTC/attention beam search vs ESPnet's BatchBeamSearch: speed and
same hypotheses.

One random ESPnet `TransformerDecoder` (conf/decoder/transformer.yaml's shape: 6 blocks,
d=256, 4 heads, 2048 FFN units) and `CTC` head, and our decoder holding the same weights
(`espnet_decoder_state_dict_to_ours`). Random encoder output stands in for 20 utterances of
50-200 frames (2-8 s at 40 ms per frame). ESPnet's `BatchBeamSearch`, built as
`espnet2/bin/asr_inference.py` builds it (decoder, ctc, length_bonus; pre-beam "full"),
decodes one utterance at a time, as asr_inference does; ours decodes all of them in one
batch. A random decoder never stops on its own: its <eos> logit is pushed down and
maxlenratio fixes the output length (0.3 token per frame by default), so both searches run
the same number of steps as on real speech with that many tokens.

Printed: whether every utterance's best hypothesis is identical (tokens, and score within
1e-4; exits 1 if not), the wall time of each, ESPnet / ours, and our real-time factor
(decode time / audio duration, 40 ms per encoder frame). Repetitions alternate the two so
load from other jobs hits both alike; medians are reported.

    .venv/bin/python bench/decode.py [--utts 20] [--beam 10] [--ctc-weight 0.3]
        [--vocab 256] [--maxlenratio 0.3] [--reps 3] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from speechlm.decoders.transformer import TransformerDecoder
from speechlm.interop.espnet_asr import espnet_decoder_state_dict_to_ours
from speechlm.search.joint_beam import joint_beam_search

DIM, HEADS, UNITS, BLOCKS = 256, 4, 2048, 6
FRAME_SECONDS = 0.04
TOLERANCE = 1e-4


def build(vocab: int, seed: int):
    """(ESPnet decoder, ESPnet CTC, our decoder with ESPnet's weights), eval mode."""
    from espnet2.asr.ctc import CTC
    from espnet2.asr.decoder.transformer_decoder import TransformerDecoder as EspnetDecoder

    torch.manual_seed(seed)
    theirs = EspnetDecoder(vocab, DIM, attention_heads=HEADS, linear_units=UNITS, num_blocks=BLOCKS).eval()
    ctc = CTC(vocab, DIM).eval()
    with torch.no_grad():
        theirs.output_layer.bias[vocab - 1] -= 10.0  # <eos>: let maxlenratio end the search
        theirs.output_layer.bias[0] -= 10.0  # <blank>: a trained decoder never predicts it
        ctc.ctc_lo.bias[0] += 2.0  # CTC posteriors are mostly blank
    ours = TransformerDecoder(vocab, DIM, attention_heads=HEADS, linear_units=UNITS, num_blocks=BLOCKS).eval()
    ours.load_state_dict(espnet_decoder_state_dict_to_ours(theirs.state_dict()), strict=True)
    return theirs, ctc, ours


def espnet_search(decoder, ctc, vocab, beam, ctc_weight):
    from espnet.nets.batch_beam_search import BatchBeamSearch
    from espnet.nets.scorers.ctc import CTCPrefixScorer
    from espnet.nets.scorers.length_bonus import LengthBonus

    eos = vocab - 1
    return BatchBeamSearch(
        scorers={"decoder": decoder, "ctc": CTCPrefixScorer(ctc, eos), "length_bonus": LengthBonus(vocab)},
        weights={"decoder": 1.0 - ctc_weight, "ctc": ctc_weight, "length_bonus": 0.0},
        beam_size=beam, vocab_size=vocab, sos=eos, eos=eos, token_list=None,
        pre_beam_score_key=None if ctc_weight == 1.0 else "full",
    ).eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--utts", type=int, default=20)
    parser.add_argument("--beam", type=int, default=10)
    parser.add_argument("--ctc-weight", type=float, default=0.3)
    parser.add_argument("--vocab", type=int, default=256)
    parser.add_argument("--min-frames", type=int, default=50)
    parser.add_argument("--max-frames", type=int, default=200)
    parser.add_argument("--maxlenratio", type=float, default=0.3)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    theirs, ctc, ours = build(args.vocab, args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    lengths = torch.randint(args.min_frames, args.max_frames + 1, (args.utts,), generator=g)
    memory = torch.randn(args.utts, int(lengths.max()), DIM, generator=g)
    eos = args.vocab - 1
    search = espnet_search(theirs, ctc, args.vocab, args.beam, args.ctc_weight)

    def run_ours():
        with torch.no_grad():
            log_probs = ctc.log_softmax(memory)
            return joint_beam_search(ours, log_probs, memory, lengths, eos, eos, beam_size=args.beam,
                                     ctc_weight=args.ctc_weight, maxlenratio=args.maxlenratio)

    def run_espnet():
        with torch.no_grad():
            return [search(x=memory[b, :n], maxlenratio=args.maxlenratio)[0]
                    for b, n in enumerate(lengths.tolist())]

    times = {"ours": [], "espnet": []}
    for _ in range(args.reps):
        for name, fn in (("ours", run_ours), ("espnet", run_espnet)):
            start = time.perf_counter()
            result = fn()
            times[name].append(time.perf_counter() - start)
            if name == "ours":
                got = result
            else:
                ref = result

    same = 0
    for b, (h_ref, hyps) in enumerate(zip(ref, got)):
        tokens = h_ref.yseq.tolist()[1:]
        while tokens and tokens[-1] == eos:
            tokens.pop()
        if hyps and tokens == hyps[0].tokens and abs(float(h_ref.score) - hyps[0].score) < TOLERANCE:
            same += 1
        else:
            print(f"utterance {b}: ESPnet {tokens} {float(h_ref.score):.4f}, ours "
                  f"{hyps[0].tokens if hyps else None} {hyps[0].score if hyps else None}")
    ours_s, espnet_s = statistics.median(times["ours"]), statistics.median(times["espnet"])
    audio_s = float(lengths.sum()) * FRAME_SECONDS
    print(f"{args.utts} utterances, {int(lengths.sum())} frames ({audio_s:.1f} s audio), "
          f"beam {args.beam}, ctc_weight {args.ctc_weight}, V={args.vocab}, "
          f"{sum(len(h[0].tokens) for h in got)} tokens out, {torch.get_num_threads()} threads")
    print(f"identical best hypotheses: {same}/{args.utts}")
    print(f"ESPnet BatchBeamSearch (per utterance): {espnet_s:.2f} s   ours (batched): {ours_s:.2f} s   "
          f"ESPnet/ours = {espnet_s / ours_s:.1f}x")
    print(f"our RTF: {ours_s / audio_s:.4f}   ESPnet RTF: {espnet_s / audio_s:.4f}")
    return 0 if same == args.utts else 1


if __name__ == "__main__":
    sys.exit(main())
