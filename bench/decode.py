"""Our batched joint CTC/attention beam search vs ESPnet's BatchBeamSearch: speed and
same hypotheses, on a random model (default) or on a trained one.

ESPnet's `BatchBeamSearch` is built as `espnet2/bin/asr_inference.py` builds it (scorers
decoder, ctc, length_bonus; pre-beam "full") and decodes one utterance at a time, as
asr_inference does; ours (`speechlm.search.joint_beam`) decodes a batch of utterances at
once. Both search the same encoder output, computed once beforehand: the searches are what
is timed. Repetitions alternate the two so load from other jobs hits both alike; medians
are reported.

Random model (no --checkpoint). One random ESPnet `TransformerDecoder`
(conf/decoder/transformer.yaml's shape: 6 blocks, d=256, 4 heads, 2048 FFN units) and `CTC`
head, and our decoder holding the same weights (`espnet_decoder_state_dict_to_ours`).
Random encoder output stands in for 20 utterances of 50-200 frames (2-8 s at 40 ms per
frame), all in one batch. A random decoder never stops on its own: its <eos> logit is pushed
down and maxlenratio fixes the output length (0.3 token per frame by default), so both
searches run the same number of steps as on real speech with that many tokens. Our RTF
counts 40 ms of audio per encoder frame.

Trained model (--checkpoint model.avg.ckpt --data-dir data/test). Our model and tokenizer
come from the checkpoint (`load_pretrained`); ESPnet's `TransformerDecoder` and `CTC` are
built from the checkpoint's decoder config and hold its weights via
`ours_to_espnet_asr_state_dict`. Our encoder runs once over the data dir, in the
duration-bucketed batches `speechlm.bin.decode` uses (--batch-seconds); our search decodes
each of those batches, ESPnet's each utterance of them. The model's own <eos> ends the
hypotheses (no bias), and maxlenratio is 0 by default: up to one token per encoder frame,
with ESPnet's end detection, as `speechlm.bin.decode` and asr_inference decode. Texts come
from the checkpoint's tokenizer (ESPnet's tokens without blanks, as asr_inference does);
WERs are scored against the data dir's `text` with `speechlm.scoring`. Our RTF is the
search time, and encoder + search time, over the seconds of audio.

Printed: whether every utterance's best hypothesis is identical (tokens, and score within
1e-4; exits 1 if not), the wall time of each search, ESPnet / ours, our real-time factor,
and with a trained model the WER of each.

    .venv/bin/python bench/decode.py [--utts 20] [--beam 10] [--ctc-weight 0.3]
        [--vocab 256] [--maxlenratio 0.3] [--reps 3] [--threads N]
    .venv/bin/python bench/decode.py --checkpoint egs/digits/asr/exp/conformer_fast/model.avg.ckpt \
        --data-dir egs/digits/asr/data/test [--beam 10] [--ctc-weight 0.3] [--reps 3]
"""
from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
import time

import torch

from speechlm.decoders.transformer import TransformerDecoder
from speechlm.interop.espnet_asr import espnet_decoder_state_dict_to_ours, ours_to_espnet_asr_state_dict
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


def espnet_search(decoder, ctc, vocab, beam, ctc_weight, eos=None, penalty=0.0):
    """ESPnet's BatchBeamSearch as asr_inference builds it; <sos> = <eos> = the last id
    unless given."""
    from espnet.nets.batch_beam_search import BatchBeamSearch
    from espnet.nets.scorers.ctc import CTCPrefixScorer
    from espnet.nets.scorers.length_bonus import LengthBonus

    eos = vocab - 1 if eos is None else eos
    return BatchBeamSearch(
        scorers={"decoder": decoder, "ctc": CTCPrefixScorer(ctc, eos), "length_bonus": LengthBonus(vocab)},
        weights={"decoder": 1.0 - ctc_weight, "ctc": ctc_weight, "length_bonus": penalty},
        beam_size=beam, vocab_size=vocab, sos=eos, eos=eos, token_list=None,
        pre_beam_score_key=None if ctc_weight == 1.0 else "full",
    ).eval()


def espnet_tokens(hyp, eos: int) -> list[int]:
    """An ESPnet hypothesis's yseq without <sos> and trailing <eos>."""
    tokens = hyp.yseq.tolist()[1:]
    while tokens and tokens[-1] == eos:
        tokens.pop()
    return tokens


def same_hypothesis(h_ref, hyp, eos: int) -> bool:
    """ESPnet's best hypothesis (or None) and ours (or None): same tokens, scores within
    TOLERANCE."""
    if h_ref is None or hyp is None:
        return h_ref is None and hyp is None
    return espnet_tokens(h_ref, eos) == hyp.tokens and abs(float(h_ref.score) - hyp.score) < TOLERANCE


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


def random_model(args) -> int:
    maxlenratio = 0.3 if args.maxlenratio is None else args.maxlenratio
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
                                     ctc_weight=args.ctc_weight, maxlenratio=maxlenratio)

    def run_espnet():
        with torch.no_grad():
            return [search(x=memory[b, :n], maxlenratio=maxlenratio)[0]
                    for b, n in enumerate(lengths.tolist())]

    times, results = time_alternating(args.reps, {"ours": run_ours, "espnet": run_espnet})
    ref, got = results["espnet"], results["ours"]

    same = 0
    for b, (h_ref, hyps) in enumerate(zip(ref, got)):
        if same_hypothesis(h_ref, hyps[0] if hyps else None, eos):
            same += 1
        else:
            print(f"utterance {b}: ESPnet {espnet_tokens(h_ref, eos)} {float(h_ref.score):.4f}, ours "
                  f"{hyps[0].tokens if hyps else None} {hyps[0].score if hyps else None}")
    ours_s, espnet_s = times["ours"], times["espnet"]
    audio_s = float(lengths.sum()) * FRAME_SECONDS
    print(f"{args.utts} utterances, {int(lengths.sum())} frames ({audio_s:.1f} s audio), "
          f"beam {args.beam}, ctc_weight {args.ctc_weight}, V={args.vocab}, "
          f"{sum(len(h[0].tokens) for h in got)} tokens out, {torch.get_num_threads()} threads")
    print(f"identical best hypotheses: {same}/{args.utts}")
    print(f"ESPnet BatchBeamSearch (per utterance): {espnet_s:.2f} s   ours (batched): {ours_s:.2f} s   "
          f"ESPnet/ours = {espnet_s / ours_s:.1f}x")
    print(f"our RTF: {ours_s / audio_s:.4f}   ESPnet RTF: {espnet_s / audio_s:.4f}")
    return 0 if same == args.utts else 1


def espnet_decoder_and_ctc(model, config: dict):
    """ESPnet's `TransformerDecoder` and `CTC`, eval mode, holding a trained
    `CTCAttentionModel`'s decoder and CTC weights (through `ours_to_espnet_asr_state_dict`);
    the decoder's shape comes from the training config."""
    from espnet2.asr.ctc import CTC
    from espnet2.asr.decoder.transformer_decoder import TransformerDecoder as EspnetDecoder

    if model.decoder is None or model.ctc is None:
        raise SystemExit("the joint search needs a model with both a decoder and a CTC head")
    if model.blank_id != 0:
        raise SystemExit(f"ESPnet's CTC prefix scorer takes blank id 0; this model's is {model.blank_id}")
    conf = dict(config["model"]["decoder"])
    target = conf.pop("_target_", "")
    if not target.endswith("decoders.transformer.TransformerDecoder"):
        raise SystemExit(f"decoder {target}: only speechlm.decoders.transformer.TransformerDecoder has an ESPnet twin")
    for key in ("vocab_size", "encoder_output_size"):
        conf.pop(key, None)
    unknown = set(conf) - set(inspect.signature(EspnetDecoder).parameters)
    if unknown:
        raise SystemExit(f"decoder options without an ESPnet counterpart: {sorted(unknown)}")
    d = model.encoder.output_size()
    decoder = EspnetDecoder(model.vocab_size, d, use_flash_attn=False, **conf).eval()
    ctc = CTC(model.vocab_size, d).eval()
    state = ours_to_espnet_asr_state_dict(model.state_dict())
    for name, module in (("decoder", decoder), ("ctc", ctc)):
        prefix = name + "."
        module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
    return decoder, ctc


def trained_model(args) -> int:
    from speechlm.data.collate import collate_audio
    from speechlm.data.dataset import AudioDataset
    from speechlm.data.sampler import DurationBucketSampler
    from speechlm.scoring import score_corpus, sum_counts
    from speechlm.train.pretrained import load_pretrained

    torch.set_flush_denormal(True)  # as speechlm.bin.decode does (for both searches alike)
    maxlenratio = 0.0 if args.maxlenratio is None else args.maxlenratio
    model, tokenizer, config = load_pretrained(args.checkpoint)
    theirs, ctc = espnet_decoder_and_ctc(model, config)
    eos, blank = model.eos, model.blank_id
    search = espnet_search(theirs, ctc, model.vocab_size, args.beam, args.ctc_weight, eos=eos)

    sample_rate = int(config["frontend"]["sample_rate"])
    ds = AudioDataset(args.data_dir, sample_rate=sample_rate)
    indices = list(range(len(ds)))[: args.utts] if args.utts else list(range(len(ds)))
    sampler = DurationBucketSampler([ds.durations[i] for i in indices], args.batch_seconds, shuffle=False)
    batches = [collate_audio([ds[indices[i]] for i in batch]) for batch in sampler]
    audio_s = sum(float(b["audio_lens"].sum()) for b in batches) / sample_rate

    start = time.perf_counter()
    encoded = []  # (ids, memory (B, T, D), lengths (B,)) per batch
    with torch.no_grad():
        for batch in batches:
            enc = model.encode(batch["audio"], batch["audio_lens"])
            encoded.append((batch["ids"], enc.output, enc.lengths))
    encode_s = time.perf_counter() - start

    def run_ours():
        out = {}
        with torch.no_grad():
            for ids, memory, lengths in encoded:
                hyps = joint_beam_search(model.decoder, model.ctc.log_softmax(memory), memory, lengths, model.sos,
                                         eos, beam_size=args.beam, ctc_weight=args.ctc_weight,
                                         maxlenratio=maxlenratio, blank=blank)
                out.update((utt, h[0] if h else None) for utt, h in zip(ids, hyps))
        return out

    def run_espnet():
        out = {}
        with torch.no_grad():
            for ids, memory, lengths in encoded:
                for b, (utt, n) in enumerate(zip(ids, lengths.tolist())):
                    hyps = search(x=memory[b, :n], maxlenratio=maxlenratio, minlenratio=0.0)
                    out[utt] = hyps[0] if hyps else None
        return out

    times, results = time_alternating(args.reps, {"ours": run_ours, "espnet": run_espnet})
    ref, got = results["espnet"], results["ours"]

    same, ours_text, espnet_text = 0, {}, {}
    for utt in ref:
        h_ref, hyp = ref[utt], got[utt]
        ref_tokens = [] if h_ref is None else [t for t in espnet_tokens(h_ref, eos) if t != blank]
        espnet_text[utt] = tokenizer.decode(ref_tokens)
        ours_text[utt] = tokenizer.decode([] if hyp is None else hyp.tokens)
        if same_hypothesis(h_ref, hyp, eos):
            same += 1
        elif len(ref) - same <= 10:
            print(f"{utt}: ESPnet {espnet_tokens(h_ref, eos) if h_ref else None} "
                  f"{float(h_ref.score) if h_ref else None}, ours {hyp.tokens if hyp else None} "
                  f"{hyp.score if hyp else None}")
    ours_s, espnet_s = times["ours"], times["espnet"]
    n_utts = len(ref)
    print(f"{args.checkpoint} on {args.data_dir}: {n_utts} utterances ({audio_s:.1f} s audio) in "
          f"{len(batches)} batches, beam {args.beam}, ctc_weight {args.ctc_weight}, maxlenratio {maxlenratio}, "
          f"V={model.vocab_size}, {sum(len(h.tokens) for h in got.values() if h)} tokens out, "
          f"{torch.get_num_threads()} threads")
    print(f"identical best hypotheses: {same}/{n_utts}")
    print(f"ESPnet BatchBeamSearch (per utterance): {espnet_s:.2f} s   ours (batched): {ours_s:.2f} s   "
          f"ESPnet/ours = {espnet_s / ours_s:.1f}x")
    print(f"our RTF: search {ours_s / audio_s:.4f}, encoder + search {(encode_s + ours_s) / audio_s:.4f}   "
          f"ESPnet RTF: search {espnet_s / audio_s:.4f}   (encoder {encode_s:.2f} s, once)")
    if ds.dd.text is not None:
        for name, hyps in (("ESPnet", espnet_text), ("ours", ours_text)):
            counts = sum_counts(score_corpus((u, ds.dd.text[u], hyps[u]) for u in hyps))
            print(f"WER {name}: {counts.error_rate:.2f}% ({counts.errors} errors / {counts.words} words, "
                  f"{counts.substitutions} sub, {counts.deletions} del, {counts.insertions} ins)")
    return 0 if same == n_utts else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="a trained model (model.avg.ckpt); default: a random model")
    parser.add_argument("--data-dir", help="with --checkpoint: the Kaldi data dir to decode")
    parser.add_argument("--batch-seconds", type=float, default=100.0,
                        help="with --checkpoint: audio per batch of our search (speechlm.bin.decode's default)")
    parser.add_argument("--utts", type=int, default=None,
                        help="random model: how many (default 20); trained: the first N of the data dir (default all)")
    parser.add_argument("--beam", type=int, default=10)
    parser.add_argument("--ctc-weight", type=float, default=0.3)
    parser.add_argument("--vocab", type=int, default=256, help="random model only")
    parser.add_argument("--min-frames", type=int, default=50, help="random model only")
    parser.add_argument("--max-frames", type=int, default=200, help="random model only")
    parser.add_argument("--maxlenratio", type=float, default=None,
                        help="default 0.3 for the random model, 0.0 (end detection) for a trained one")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="random model only")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        if not args.data_dir:
            parser.error("--checkpoint needs --data-dir")
        for path, what in ((args.checkpoint, "file"), (args.data_dir, "dir")):
            if not (os.path.isfile(path) if what == "file" else os.path.isdir(path)):
                parser.error(f"{path}: no such {what}")
        return trained_model(args)
    if args.data_dir:
        parser.error("--data-dir needs --checkpoint")
    if args.utts is None:
        args.utts = 20
    return random_model(args)


if __name__ == "__main__":
    sys.exit(main())
