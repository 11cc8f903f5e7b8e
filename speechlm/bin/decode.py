"""Decode a data dir with a trained model; write sclite trn files.

    python -m speechlm.bin.decode checkpoint=exp/conformer/model.avg.ckpt data_dir=data/test \
        out_dir=exp/conformer/decode_test search.beam_size=10 search.ctc_weight=0.3

The search is the model's own (`default_search`: joint CTC/attention beam search for a
CTC/attention model, modified beam search for a transducer) unless `search=NAME` picks one
of conf/search/ (`search=ctc_greedy`, `search=transducer_greedy`, ...); `search.*` sets its
options. `speechlm.search.decoding` is the code path decode and transcribe share.

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
from speechlm.scoring.trn import trn_rows, write_trn
from speechlm.search.decoding import build_search, decode_batch
from speechlm.train.pretrained import load_pretrained

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
log = logging.getLogger("speechlm.decode")


def decode_data_dir(cfg) -> dict[str, str]:
    model, tokenizer, config = load_pretrained(cfg.checkpoint, cfg.device)
    search = build_search(model, cfg.get("search"), config.get("search"), tokenizer)
    sample_rate = int(config["frontend"]["sample_rate"])
    ds = AudioDataset(cfg.data_dir, sample_rate=sample_rate)
    sampler = DurationBucketSampler(ds.durations, cfg.batch_seconds, shuffle=False)
    hyps, start = {}, time.time()
    for batch_ids in sampler:
        batch = collate_audio([ds[i] for i in batch_ids])
        for utt, tokens in zip(batch["ids"], decode_batch(model, search, batch, cfg.get("encode_each", True))):
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
