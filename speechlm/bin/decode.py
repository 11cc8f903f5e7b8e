"""Decode a data dir with a trained model; write sclite trn files.

    python -m speechlm.bin.decode checkpoint=exp/conformer/model.avg.ckpt data_dir=data/test \
        out_dir=exp/conformer/decode_test search.beam_size=10 search.ctc_weight=0.3

The search is the model's own (`default_search`: joint CTC/attention beam search for a
CTC/attention model, modified beam search for a transducer) unless `search=NAME` picks one
of conf/search/ (`search=ctc_greedy`, `search=transducer_greedy`, ...); `search.*` sets its
options. `speechlm.search.decoding` is the code path decode and transcribe share.
Shallow fusion of a language model (joint CTC/attention and transducer beam searches):

    python -m speechlm.bin.decode ... search.lm_checkpoint=exp/lm/model.avg.ckpt search.lm_weight=0.3

(a speechlm LM checkpoint or an ESPnet LM .pth with its config.yaml; it must use the ASR
model's tokenizer, which the search checks.)

Utterances are decoded in duration-bucketed batches: the search is batched over utterances
and hypotheses, while the encoder runs on each utterance alone (`encode_each=true`), so
that an utterance's hypothesis never depends on the batch it is in (and equals ESPnet's,
which decodes one utterance at a time). Writes out_dir/hyp.trn, ref.trn (if the dir has
transcripts; `ref_table=NAME`: the references are another per-utterance table of the dir,
e.g. a speech-LLM's answers `qa_count`) and a Kaldi `text` of hypotheses, and logs the
real-time factor.

An utterance whose audio cannot be read (a missing or corrupt file, a failing pipe, no
samples) or whose decoding fails (a batch that fails is retried utterance by utterance) gets
no hypothesis: it is logged, and listed with the reason in out_dir/failed (`utt reason`
lines, in the data dir's order; an empty file when none failed), as `transcribe` names each
file it could not transcribe. The others are decoded and written as usual. ref.trn keeps
every utterance, so `speechlm.bin.score` scores a failed one as all deletions (an empty
hypothesis, as sclite would) and says so. The exit status is 0 unless no utterance at all
could be decoded. A fault of the model or the search rather than of the audio (the first
SYSTEMATIC utterances decoded, before any hypothesis, all fail with the same error, e.g. a
search that needs a part the model lacks) stops the run with that error instead.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from speechlm.atomic import atomic_write_text
from speechlm.data.audio import AudioReadError, audio_info
from speechlm.data.collate import collate_audio
from speechlm.data.dataset import load_item_table, load_utterance
from speechlm.data.kaldi_dir import DataDir, DataDirError
from speechlm.data.sampler import DurationBucketSampler
from speechlm.scoring.trn import FAILED_FILE, trn_rows, write_trn
from speechlm.search.decoding import build_search, decode_batch
from speechlm.train.pretrained import load_pretrained, model_sample_rate

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
log = logging.getLogger("speechlm.decode")
# Decoding failures, all alike and before any hypothesis, that make a fault of the model or
# the search (e.g. a search that needs a part the model lacks) rather than of the audio.
SYSTEMATIC = 3


class NothingDecoded(RuntimeError):
    """Every utterance of the data dir failed (the outputs and `failed` are written)."""


def one_line(reason: str) -> str:
    return " ".join(str(reason).split())


def utterance_seconds(dd: DataDir, failed: dict[str, str]) -> dict[str, float]:
    """Seconds per utterance, for batching: utt2dur, else segments, else the audio header;
    an utterance whose header cannot be read goes to `failed` instead."""
    if dd.utt2dur is not None and all(u in dd.utt2dur for u in dd.utterances):
        return {u: dd.utt2dur[u] for u in dd.utterances}
    if dd.segments is not None:
        return {u: dd.segments[u].end - dd.segments[u].start for u in dd.utterances}
    seconds = {}
    for utt in dd.utterances:
        entry = dd.wav_scp.get(utt)
        if entry is None:
            failed[utt] = f"no wav.scp entry '{utt}'"
            continue
        try:
            frames, sr = audio_info(entry)
        except AudioReadError as e:
            failed[utt] = f"unreadable audio: {e}"
            continue
        seconds[utt] = frames / sr
    return seconds


def read_batch(dd: DataDir, utts: list[str], sample_rate: int, device: str,
               failed: dict[str, str]) -> dict[str, torch.Tensor]:
    """{utt: (T,) audio} of the utterances that could be read; the others go to `failed`."""
    audio = {}
    for utt in utts:
        try:
            wav, _ = load_utterance(dd, utt, sample_rate)
        except (AudioReadError, DataDirError) as e:
            failed[utt] = f"unreadable audio: {e}"
            continue
        except Exception as e:  # noqa: BLE001 - any other reading fault costs this utterance only
            failed[utt] = f"unreadable audio: {type(e).__name__}: {e}"
            continue
        if wav.numel() == 0:
            failed[utt] = "zero-length audio (no samples)"
            continue
        audio[utt] = wav.to(device)
    return audio


def decode_data_dir(cfg) -> dict[str, str]:
    """Decode cfg.data_dir into cfg.out_dir (module docstring); {utt: hypothesis} of the
    utterances that were decoded. NothingDecoded if none was (outputs written first)."""
    model, tokenizer, config = load_pretrained(cfg.checkpoint, cfg.device)
    if tokenizer is None:
        raise ValueError(f"{cfg.checkpoint}: the model has no tokenizer (trained without text): nothing to decode")
    search = build_search(model, cfg.get("search"), config.get("search"), tokenizer)
    sample_rate = model_sample_rate(model, config)
    encode_one_by_one = cfg.get("encode_each", True)
    dd = DataDir.load(cfg.data_dir)
    failed: dict[str, str] = {}
    seconds = utterance_seconds(dd, failed)
    utts = [u for u in dd.utterances if u in seconds]
    hyps: dict[str, str] = {}

    def decode(ids: list[str], audio: dict[str, torch.Tensor]) -> None:
        batch = collate_audio([{"id": u, "audio": audio[u]} for u in ids])
        for utt, tokens in zip(batch["ids"], decode_batch(model, search, batch, encode_one_by_one)):
            hyps[utt] = tokenizer.decode(tokens)

    first_failures: list[str] = []  # decoding failures before the first hypothesis
    start, decoded_seconds = time.time(), 0.0
    if utts:
        for batch_ids in DurationBucketSampler([seconds[u] for u in utts], cfg.batch_seconds, shuffle=False):
            audio = read_batch(dd, [utts[i] for i in batch_ids], sample_rate, cfg.device, failed)
            if not audio:
                continue
            try:
                decode(list(audio), audio)
            except Exception:  # noqa: BLE001 - retried alone, so one bad utterance costs only itself
                for utt in audio:
                    try:
                        decode([utt], audio)
                    except Exception as e:  # noqa: BLE001
                        why = f"{type(e).__name__}: {e}"
                        failed[utt] = f"decoding failed: {why}"
                        if not hyps:
                            first_failures.append(why)
                            if len(first_failures) >= min(SYSTEMATIC, len(utts)) and len(set(first_failures)) == 1:
                                raise  # the model's or the search's fault, not the audio's
            decoded_seconds += sum(len(audio[u]) for u in audio if u in hyps) / sample_rate
    elapsed = time.time() - start
    log.info("decoded %d utterances (%.1f s of audio) in %.1f s%s", len(hyps), decoded_seconds, elapsed,
             f": RTF {elapsed / decoded_seconds:.3f}" if decoded_seconds > 0 else "")

    out = Path(cfg.out_dir)
    write_trn(out / "hyp.trn", trn_rows(hyps, dd.utt2spk))
    ref_table = cfg.get("ref_table") or "text"
    refs = dd.text if ref_table == "text" else load_item_table(dd, ref_table)
    if refs is not None:
        write_trn(out / "ref.trn", trn_rows(refs, dd.utt2spk))
    atomic_write_text(out / "text", "".join(f"{u} {hyps[u]}\n" for u in sorted(hyps)))
    failures = [(u, one_line(failed[u])) for u in dd.utterances if u in failed]
    atomic_write_text(out / FAILED_FILE, "".join(f"{u} {why}\n" for u, why in failures))
    for utt, why in failures:
        log.error("%s: %s", utt, why)
    if failures:
        log.warning("%d of %d utterance(s) failed, listed in %s; %d decoded%s", len(failures), len(dd),
                    out / FAILED_FILE, len(hyps),
                    " (score counts each failed one as all deletions)" if refs is not None else "")
    if not hyps:
        example = f": {failures[0][0]}: {failures[0][1]}" if failures else ""
        raise NothingDecoded(f"no utterance of {cfg.data_dir} could be decoded ({len(failures)} failed, "
                             f"listed in {out / FAILED_FILE}){example}")
    return hyps


@hydra.main(config_path=str(CONF_DIR), config_name="decode", version_base="1.3")
def main(cfg: DictConfig) -> None:
    torch.set_flush_denormal(True)
    try:
        decode_data_dir(cfg)
    except NothingDecoded as e:
        log.error("%s", e)
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(main())
