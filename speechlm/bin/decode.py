"""Decode a data dir with a trained model; write sclite trn files.

    python -m speechlm.bin.decode checkpoint=exp/conformer/model.avg.ckpt data_dir=data/test \
        out_dir=exp/conformer/decode_test beam_size=10 ctc_weight=0.3

`method=auto` picks the model's search: joint CTC/attention beam search, or for a transducer
modified beam search (`method=greedy` / `graves_beam` for the others).

Utterances are decoded in duration-bucketed batches: the search is batched over utterances
and hypotheses, while the encoder runs on each utterance alone (`encode_each=true`), so
that an utterance's hypothesis never depends on the batch it is in (and equals ESPnet's,
which decodes one utterance at a time). Writes out_dir/hyp.trn, ref.trn (if the dir has
transcripts) and a Kaldi `text` of hypotheses, and logs the real-time factor.
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
from speechlm.data.collate import collate_audio
from speechlm.data.dataset import AudioDataset
from speechlm.data.sampler import DurationBucketSampler
from speechlm.models.encode import encode_each
from speechlm.scoring.trn import trn_rows, write_trn
from speechlm.search.ctc_greedy import ctc_greedy_search
from speechlm.search.joint_beam import joint_beam_search
from speechlm.search.transducer_beam import graves_beam_search, modified_beam_search
from speechlm.search.transducer_greedy import transducer_greedy_search
from speechlm.train.pretrained import load_pretrained

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
log = logging.getLogger("speechlm.decode")


TRANSDUCER_METHODS = ("greedy", "modified_beam", "graves_beam")
ATTENTION_METHODS = ("joint", "ctc_greedy")


def search_method(model, method: str) -> str:
    """`auto`: joint CTC/attention beam search for a CTC/attention model, modified beam
    search for a transducer; any other name must suit the model."""
    transducer = hasattr(model, "joiner")
    if method == "auto":
        return "modified_beam" if transducer else "joint"
    allowed = TRANSDUCER_METHODS + ("ctc_greedy",) if transducer else ATTENTION_METHODS
    if method not in allowed:
        raise ValueError(f"method={method} does not apply to a {type(model).__name__}; use one of auto, {', '.join(allowed)}")
    return method


@torch.no_grad()
def decode_batch(model, batch: dict, cfg) -> list[list[int]]:
    """Token ids of the best hypothesis of each utterance in a collated batch."""
    method = search_method(model, cfg.method)
    if getattr(cfg, "encode_each", True):  # the batch's results = its utterances' one at a time
        enc = encode_each(model.encode, batch["audio"], batch["audio_lens"])
    else:
        enc = model.encode(batch["audio"], batch["audio_lens"])
    ctc_logp = model.ctc.log_softmax(enc.output) if getattr(model, "ctc", None) is not None else None
    if method == "ctc_greedy":
        if ctc_logp is None:
            raise ValueError("method=ctc_greedy needs a model with a CTC head")
        return [r.tokens for r in ctc_greedy_search(ctc_logp, enc.lengths, blank=model.blank_id)]
    if method == "greedy":
        hyps = transducer_greedy_search(model.predictor, model.joiner, enc.output, enc.lengths, blank=model.blank_id,
                                        max_symbols_per_frame=cfg.max_symbols_per_frame)
        return [h.tokens for h in hyps]
    if method in ("modified_beam", "graves_beam"):
        search = modified_beam_search if method == "modified_beam" else graves_beam_search
        nbest = search(model.predictor, model.joiner, enc.output, enc.lengths, beam_size=cfg.beam_size,
                       blank=model.blank_id)
        return [h[0].tokens if h else [] for h in nbest]
    ctc_weight = cfg.ctc_weight if ctc_logp is not None else 0.0
    hyps = joint_beam_search(
        model.decoder, ctc_logp, enc.output, enc.lengths, sos=model.sos, eos=model.eos, beam_size=cfg.beam_size,
        ctc_weight=ctc_weight, length_penalty=cfg.penalty, maxlenratio=cfg.maxlenratio, minlenratio=cfg.minlenratio,
        blank=model.blank_id,
    )
    return [h[0].tokens if h else [] for h in hyps]


def decode_data_dir(cfg) -> dict[str, str]:
    model, tokenizer, config = load_pretrained(cfg.checkpoint, cfg.device)
    sample_rate = int(config["frontend"]["sample_rate"])
    ds = AudioDataset(cfg.data_dir, sample_rate=sample_rate)
    sampler = DurationBucketSampler(ds.durations, cfg.batch_seconds, shuffle=False)
    hyps, start = {}, time.time()
    for batch_ids in sampler:
        batch = collate_audio([ds[i] for i in batch_ids])
        for utt, tokens in zip(batch["ids"], decode_batch(model, batch, cfg)):
            hyps[utt] = tokenizer.decode(tokens)
    elapsed, audio = time.time() - start, sum(ds.durations)
    log.info("decoded %d utterances (%.1f s of audio) in %.1f s: RTF %.3f", len(hyps), audio, elapsed, elapsed / max(audio, 1e-9))
    out = Path(cfg.out_dir)
    write_trn(out / "hyp.trn", trn_rows(hyps, ds.dd.utt2spk))
    if ds.dd.text is not None:
        write_trn(out / "ref.trn", trn_rows(ds.dd.text, ds.dd.utt2spk))
    atomic_write_text(out / "text", "".join(f"{u} {hyps[u]}\n" for u in sorted(hyps)))
    return hyps


@hydra.main(config_path=str(CONF_DIR), config_name="decode", version_base="1.3")
def main(cfg: DictConfig) -> None:
    torch.set_flush_denormal(True)
    decode_data_dir(cfg)


if __name__ == "__main__":
    sys.exit(main())
