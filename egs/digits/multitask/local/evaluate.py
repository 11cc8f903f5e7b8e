"""Evaluate a multitask (Whisper-style) model on a data dir of egs/digits/multitask: each
utterance is decoded with `speechlm.search.whisper.WhisperSearch`, the language detected, three
times over one encoder pass,

    transcribe           WER per language vs `text`; language ID accuracy vs `utt2lang`
    translate            WER of the English digit words vs `text.en`
    transcribe + times   WER vs `text`, and for each reference word the decoded words align
                         to (sclite alignment, correct words only), the absolute error of its
                         start and end (ms) vs the `ctm`

and, for a model with an auxiliary CTC head, the CTC head's greedy transcript (a diagnostic
of the encoder alone) and with --ctc-weight W, OWSM's joint CTC/attention transcript. The
results go to OUT: `scores.json` (every number), `results.md` (a table: a row per language
and one for all), `hyp_<task>.txt` (Kaldi text of the hypotheses; the timestamped
one as `<|0.10|> word <|0.42|> ...`).

A timestamped hypothesis is read as Whisper writes it: segments `<|start|> text <|end|>`
(the model is trained on one word per segment; a segment of several words shares its span
evenly among them).

    python local/evaluate.py exp/conformer_multitask/model.avg.ckpt data/test --out exp/.../decode_test
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from speechlm.atomic import atomic_write_text
from speechlm.data.collate import collate_audio
from speechlm.data.dataset import AudioDataset
from speechlm.data.kaldi_dir import read_table
from speechlm.data.sampler import DurationBucketSampler
from speechlm.models.encode import encode_each
from speechlm.scoring import ErrorCounts, score_corpus, sum_counts
from speechlm.search.ctc_greedy import ctc_greedy_search
from speechlm.search.whisper import TIME_PRECISION, WhisperSearch
from speechlm.train.pretrained import load_pretrained

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ctm_to_word_times import read_ctm  # noqa: E402  (local/, next to this file)

TASKS = ("transcribe", "translate", "timestamps")
CTC = "ctc_transcribe"  # the CTC head's greedy transcript, when the model has one
JOINT = "joint_transcribe"  # OWSM's joint CTC/attention decoding (--ctc-weight), when it has one
EXTRA = (CTC, JOINT)  # transcripts scored against `text` like transcribe's


def timed_words(ids: list[int], tokenizer) -> list[tuple[str, float | None, float | None]]:
    """(word, start s, end s) of each word of a timestamped hypothesis: segments
    `<|t0|> text <|t1|>` (consecutive timestamps: the later opens the next segment);
    words outside any closed segment get None."""
    ts_begin, first_special = tokenizer.special_ids["timestamp_begin"], tokenizer.special_ids["eot"]
    out: list[tuple[str, float | None, float | None]] = []
    start: float | None = None
    text: list[int] = []

    def flush(end: float | None) -> None:
        words = tokenizer.decode(text).split()
        if start is None or end is None:
            out.extend((w, None, None) for w in words)
            return
        step = (end - start) / max(len(words), 1)
        out.extend((w, start + k * step, start + (k + 1) * step) for k, w in enumerate(words))

    for i in ids:
        if i >= ts_begin and i < ts_begin + 1501:
            t = (i - ts_begin) * TIME_PRECISION
            if start is not None and text:
                flush(t)
                start, text = None, []
            else:
                if text:  # text before any timestamp
                    flush(None)
                    text = []
                start = t
        elif i < first_special:
            text.append(i)
    if text:
        flush(None)
    return out


def timing_errors(ref: list[tuple[float, float, str]], hyp: list[tuple[str, float | None, float | None]]
                  ) -> tuple[list[float], list[float]]:
    """Absolute start and end errors (s) of the reference words that align to a correct,
    timed hypothesis word."""
    score = score_corpus([("u", " ".join(w for _, _, w in ref), " ".join(w for w, _, _ in hyp))])[0]
    starts, ends = [], []
    i = j = 0
    for op in score.ops:
        if op == "C" and hyp[j][1] is not None:
            starts.append(abs(hyp[j][1] - ref[i][0]))
            ends.append(abs(hyp[j][2] - ref[i][1]))
        i += op in "CSD"
        j += op in "CSI"
    return starts, ends


def decode(model, tokenizer, data_dir: Path, beam_size: int | None, sample_len: int | None,
           batch_seconds: float, ctc_weight: float = 0.0, joint_beam_size: int = 5) -> dict:
    """utt -> {lang (detected), transcribe, translate, timestamps (ids)}."""
    sample_rate = int(getattr(model.frontend, "sample_rate", 16000))
    ds = AudioDataset(data_dir, sample_rate=sample_rate)
    # Whisper's suppressed symbols, and the speaker-change token: these models never saw one
    suppress = [-1] + [tokenizer.special_ids[r] for r in ("speaker_change",) if r in tokenizer.special_ids]
    options = dict(beam_size=beam_size, sample_len=sample_len, suppress_tokens=suppress)
    searches = {
        "transcribe": WhisperSearch(tokenizer, task="transcribe", **options),
        "translate": WhisperSearch(tokenizer, task="translate", **options),
        "timestamps": WhisperSearch(tokenizer, task="transcribe", timestamps=True, **options),
    }
    has_ctc = getattr(model, "ctc", None) is not None
    if has_ctc and ctc_weight > 0:
        searches[JOINT] = WhisperSearch(tokenizer, task="transcribe", ctc_weight=ctc_weight,
                                        **{**options, "beam_size": joint_beam_size})
    out: dict[str, dict] = {}
    for batch_ids in DurationBucketSampler(ds.durations, batch_seconds, shuffle=False):
        batch = collate_audio([ds[i] for i in batch_ids])
        with torch.no_grad():
            enc = encode_each(model.encode, batch["audio"], batch["audio_lens"])
        first = searches["transcribe"].decode(model, enc)  # detects the language of each utterance
        languages = [r.language for r in first]
        results = {"transcribe": first, **{task: searches[task].decode(model, enc, languages=languages)
                                           for task in ("translate", "timestamps")}}
        if JOINT in searches:
            results[JOINT] = searches[JOINT].decode(model, enc, languages=languages)
        if has_ctc:
            with torch.no_grad():
                results[CTC] = ctc_greedy_search(model.ctc.log_softmax(enc.output), enc.lengths,
                                                 blank=tokenizer.special_ids["blank"])
        for b, utt in enumerate(batch["ids"]):
            out[utt] = {"lang": languages[b], "lang_probs": first[b].language_probs,
                        **{task: r[b].tokens for task, r in results.items()}}
    return out


def mean_ms(errors: list[float]) -> float | None:
    return 1000 * sum(errors) / len(errors) if errors else None


def evaluate(hyps: dict, tokenizer, data_dir: Path) -> tuple[dict, dict[str, str]]:
    """(scores per language and 'all', hypothesis texts per task)."""
    text, text_en, utt2lang = (read_table(data_dir / f) for f in ("text", "text.en", "utt2lang"))
    ctm = read_ctm(data_dir / "ctm")
    tasks = TASKS + tuple(t for t in EXTRA if all(t in h for h in hyps.values()))
    texts: dict[str, dict[str, str]] = {task: {} for task in tasks}
    counts: dict[str, dict[str, ErrorCounts]] = {task: defaultdict(ErrorCounts) for task in tasks}
    lid: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    starts: dict[str, list[float]] = defaultdict(list)
    ends: dict[str, list[float]] = defaultdict(list)
    for utt in sorted(hyps):
        h, lang = hyps[utt], utt2lang[utt]
        words = timed_words(h["timestamps"], tokenizer)
        texts["transcribe"][utt] = tokenizer.decode(h["transcribe"]).strip()
        texts["translate"][utt] = tokenizer.decode(h["translate"]).strip()
        texts["timestamps"][utt] = tokenizer.decode_with_timestamps(h["timestamps"]).strip()
        refs = {"transcribe": text[utt], "translate": text_en[utt], "timestamps": text[utt],
                **{t: text[utt] for t in EXTRA}}
        plain = {"transcribe": texts["transcribe"][utt], "translate": texts["translate"][utt],
                 "timestamps": " ".join(w for w, _, _ in words)}
        for t in EXTRA:
            if t in tasks:
                texts[t][utt] = plain[t] = tokenizer.decode(h[t]).strip()
        for task in tasks:
            c = sum_counts(score_corpus([(utt, refs[task], plain[task])]))
            for key in (lang, "all"):
                counts[task][key] = counts[task][key] + c
        s, e = timing_errors(ctm.get(utt, []), words)
        for key in (lang, "all"):
            lid[key][0] += h["lang"] == lang
            lid[key][1] += 1
            starts[key] += s
            ends[key] += e
    languages = sorted({utt2lang[u] for u in hyps}) + ["all"]
    scores = {}
    for key in languages:
        scores[key] = {
            "utterances": lid[key][1],
            "lid_accuracy": 100.0 * lid[key][0] / lid[key][1],
            **{f"{task}_wer": counts[task][key].error_rate for task in tasks},
            **{f"{task}_counts": list(counts[task][key].as_row()) for task in tasks},
            "timestamp_start_mae_ms": mean_ms(starts[key]),
            "timestamp_end_mae_ms": mean_ms(ends[key]),
            "timestamp_mae_ms": mean_ms(starts[key] + ends[key]),
            "timed_words": len(starts[key]),
            "reference_words": counts["timestamps"][key].words,
        }
    return scores, {task: "".join(f"{u} {t}\n" for u, t in sorted(texts[task].items())) for task in tasks}


def markdown(scores: dict, title: str) -> str:
    rows = [f"### {title}", "",
            "|language|utts|LID acc %|transcribe WER %|translate WER %|timestamped WER %|"
            "start MAE ms|end MAE ms|mean MAE ms|timed words|CTC greedy WER %|joint CTC/att. WER %|",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    for key, s in scores.items():
        rows.append(f"|{key}|{s['utterances']}|{s['lid_accuracy']:.1f}|{s['transcribe_wer']:.1f}|"
                    f"{s['translate_wer']:.1f}|{s['timestamps_wer']:.1f}|{ms(s['timestamp_start_mae_ms'])}|"
                    f"{ms(s['timestamp_end_mae_ms'])}|{ms(s['timestamp_mae_ms'])}|"
                    f"{s['timed_words']}/{s['reference_words']}|"
                    + "".join(f"{s[t + '_wer']:.1f}|" if t + "_wer" in s else "-|" for t in EXTRA))
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("data_dir", type=Path, help="with text, text.en, utt2lang and ctm")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--beam-size", type=int, default=None, help="default: greedy")
    p.add_argument("--sample-len", type=int, default=None, help="most tokens per answer (default: half the "
                   "decoder's context)")
    p.add_argument("--ctc-weight", type=float, default=0.0, help="> 0, for a model with a CTC head: also "
                   "transcribe by OWSM's joint CTC/attention decoding with this weight")
    p.add_argument("--joint-beam-size", type=int, default=5, help="beam of the joint CTC/attention decoding")
    p.add_argument("--batch-seconds", type=float, default=60.0, help="audio seconds per decoding batch")
    p.add_argument("--title", help="table title (default: the data dir's name)")
    args = p.parse_args(argv)
    model, tokenizer, _ = load_pretrained(args.checkpoint)
    start = time.time()
    hyps = decode(model, tokenizer, args.data_dir, args.beam_size, args.sample_len, args.batch_seconds,
                  args.ctc_weight, args.joint_beam_size)
    elapsed = time.time() - start
    scores, texts = evaluate(hyps, tokenizer, args.data_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    for task, content in texts.items():
        atomic_write_text(args.out / f"hyp_{task}.txt", content)
    meta = {"checkpoint": str(args.checkpoint), "data_dir": str(args.data_dir), "beam_size": args.beam_size,
            "sample_len": args.sample_len, "ctc_weight": args.ctc_weight, "joint_beam_size": args.joint_beam_size,
            "decode_seconds": round(elapsed, 1)}
    atomic_write_text(args.out / "scores.json", json.dumps({**meta, "scores": scores}, indent=1) + "\n")
    table = markdown(scores, args.title or args.data_dir.name)
    atomic_write_text(args.out / "results.md", table)
    print(table + f"\n({len(hyps)} utterances decoded {len(texts)} ways in {elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
