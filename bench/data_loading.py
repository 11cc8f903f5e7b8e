"""Data-loading throughput: the same data dir read from webdataset shards
(`speechlm.train.shard_data_module.ShardDataModule`, streamed) and from wav.scp
(`speechlm.train.data_module.SpeechDataModule`, random access), utterances per second.

A synthetic data dir (speech-like 16 kHz 16-bit WAV files, 1-6 s) is written to a temporary
directory and exported with `speechlm.bin.export_shards`. Each side loads whole training
epochs in one process with 2 DataLoader workers, with the same items (audio decoded,
transcripts tokenized, collated) under the same padded-seconds budget; an untimed epoch
each first (page cache warm for both), then repetitions alternate the two so that load from
other jobs hits both alike. Medians are printed, with the ratio shards / wav.scp (higher
is faster). `--http` adds the shards served by a local HTTP server on 127.0.0.1.

    .venv/bin/python bench/data_loading.py [--utts 2000] [--reps 3] [--workers 2] [--http]
"""

import argparse
import contextlib
import functools
import http.server
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from speechlm.bin.export_shards import main as export_main
from speechlm.data.transforms import TokenizeText
from speechlm.tokenizers import CharTokenizer
from speechlm.train.data_module import SpeechDataModule
from speechlm.train.shard_data_module import ShardDataModule, ShardLoader

SAMPLE_RATE = 16000


def write_data_dir(root: Path, utts: int, seed: int = 0) -> Path:
    """`utts` WAV files of 1-6 s, each a random stretch of one of a few speech-like signals
    (a gliding harmonic series under a syllabic envelope): distinct files, cheap to make."""
    rng = np.random.default_rng(seed)
    t = np.arange(8 * SAMPLE_RATE) / SAMPLE_RATE
    bases = []
    for _ in range(8):
        phase = 2 * np.pi * np.cumsum(110 + 40 * rng.random() + 20 * np.sin(2 * np.pi * 0.5 * t)) / SAMPLE_RATE
        x = sum(np.sin(k * phase) / k for k in range(1, 8)) * np.abs(np.sin(np.pi * 3.5 * t)) * 0.1
        bases.append((x + 0.005 * rng.standard_normal(len(t))).astype(np.float32))
    d, wav = root / "data", root / "wav"
    d.mkdir(parents=True)
    wav.mkdir()
    rows = []
    for i in range(utts):
        n, start = int(SAMPLE_RATE * rng.uniform(1, 6)), int(rng.integers(0, 2 * SAMPLE_RATE))
        utt = f"spk{i % 20:02d}-utt{i:05d}"
        sf.write(wav / f"{utt}.wav", bases[i % len(bases)][start:start + n], SAMPLE_RATE, subtype="PCM_16")
        rows.append((utt, utt[:5], str(wav / f"{utt}.wav"), " ".join(rng.choice(["one", "two", "three"], 4))))
    rows.sort()
    (d / "wav.scp").write_text("".join(f"{u} {w}\n" for u, _, w, _ in rows))
    (d / "text").write_text("".join(f"{u} {t}\n" for u, _, _, t in rows))
    (d / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s, _, _ in rows))
    return d


def epoch_rate(loader, epoch: int) -> float:
    """Utterances per second over one whole epoch of `loader`."""
    if isinstance(loader, ShardLoader):
        loader.set_epoch(epoch)
    else:
        loader.batch_sampler.set_epoch(epoch)
    start, n = time.perf_counter(), 0
    for batch in loader:
        n += len(batch["ids"])
    return n / (time.perf_counter() - start)


@contextlib.contextmanager
def http_server(directory: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utts", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=60.0, help="padded seconds per batch")
    parser.add_argument("--http", action="store_true", help="also read the shards over HTTP from 127.0.0.1")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        data = write_data_dir(root, args.utts)
        assert export_main([str(data), str(root / "shards"), "--max-count", "200"]) == 0
        tokenizer = CharTokenizer.train((data / "text").read_text().splitlines())
        options = dict(max_seconds=args.max_seconds, num_workers=args.workers,
                       transforms={"tokens": TokenizeText(tokenizer=tokenizer)})
        sides = {"wav.scp": SpeechDataModule(data, data, **options),
                 "shards": ShardDataModule(str(root / "shards"), str(data), **options)}
        if args.http:
            url = stack.enter_context(http_server(root / "shards"))
            sides["shards over HTTP"] = ShardDataModule(url, str(data), **options)
        loaders = {}
        for name, dm in sides.items():
            dm.setup()
            loaders[name] = dm.train_dataloader()
            epoch_rate(loaders[name], 0)  # warm-up: page cache, worker start-up paths
        rates = {name: [] for name in loaders}
        for rep in range(args.reps):
            for name, loader in loaders.items():
                rates[name].append(epoch_rate(loader, rep + 1))
    median = {name: statistics.median(r) for name, r in rates.items()}
    print(f"{args.utts} utterances (1-6 s, 16 kHz WAV), {args.workers} workers, median of {args.reps} epochs:")
    for name, rate in median.items():
        print(f"  {name:>18}: {rate:8.1f} utterances/s")
    for name in median:
        if name != "wav.scp":
            print(f"  {name} / wav.scp: {median[name] / median['wav.scp']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
