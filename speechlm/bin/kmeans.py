"""K-means on dumped features, and its labels as a per-utterance table: HuBERT's offline
targets, step 2 (after `speechlm.bin.dump_features`).

    python -m speechlm.bin.kmeans learn dump/mfcc_10pc exp/km_mfcc100 --clusters 100
    python -m speechlm.bin.kmeans apply dump/mfcc exp/km_mfcc100 data/train          # -> data/train/km
    python -m speechlm.bin.kmeans apply dump/mfcc exp/km_mfcc100 exp/labels --table km.train

`learn` fits scikit-learn's `MiniBatchKMeans` to FEATS_DIR/feats.npy with the settings of
fairseq's `examples/hubert/simple_kmeans/learn_kmeans.py` (batch 10000, 100 iterations,
k-means++ with 20 initialisations, no reassignment, stop after 100 batches without
improvement) and a fixed seed, and saves KM_DIR/centroids.npy ((k, dims) float32) and
KM_DIR/info.json (k, dims, inertia, settings, the features' info.json): plain arrays and
JSON, no pickle.

`apply` gives each frame its nearest centroid (Euclidean, as `MiniBatchKMeans.predict`), a
chunk of frames at a time, and writes `utt c1 c2 ...` lines, one per utterance in the data
dir's order, atomically: into a data dir (a directory with wav.scp) as its `km` table, which
`data.tables: {km: km}` turns into items' LongTensor `km` (padded batches: `km`,
`km_lens`); into any other directory as the file `--table` names. It prints how many
clusters the labels use and the perplexity of their distribution.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from speechlm.atomic import atomic_path, atomic_write_text
from speechlm.data.kaldi_dir import DataDir, DataDirError, read_table

PROG = "kmeans"


class FeaturesError(ValueError):
    """A features or k-means dir that cannot be used; the message names the file."""


def load_features(feats_dir: Path, mmap: bool = False) -> tuple[np.ndarray, dict[str, int], dict]:
    """(feats (frames, dims), {utt: frames} in order, info) of a `dump_features` dir,
    checked against each other."""
    try:
        feats = np.load(feats_dir / "feats.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        num_frames = {u: int(n) for u, n in read_table(feats_dir / "utt2num_frames").items()}
        info = json.loads((feats_dir / "info.json").read_text())
    except (OSError, ValueError) as e:
        raise FeaturesError(f"{feats_dir}: not a dump_features dir ({e})") from None
    if feats.ndim != 2 or sum(num_frames.values()) != len(feats):
        raise FeaturesError(f"{feats_dir}: utt2num_frames counts {sum(num_frames.values())} frames, "
                            f"feats.npy has shape {feats.shape}")
    return feats, num_frames, info


def learn(feats: np.ndarray, clusters: int, batch_size: int = 10000, max_iter: int = 100, seed: int = 0,
          init: str = "k-means++", n_init: int = 20, max_no_improvement: int = 100, reassignment_ratio: float = 0.0,
          tol: float = 0.0):
    """A fitted `sklearn.cluster.MiniBatchKMeans` (fairseq's HuBERT settings by default)."""
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=clusters, init=init, max_iter=max_iter, batch_size=batch_size, tol=tol,
                         max_no_improvement=max_no_improvement, init_size=None, n_init=n_init,
                         reassignment_ratio=reassignment_ratio, compute_labels=False, random_state=seed)
    return km.fit(feats)


def nearest_centroid(feats: np.ndarray, centroids: torch.Tensor, chunk_frames: int = 50000) -> np.ndarray:
    """(frames,) int64 index of each frame's nearest centroid, `chunk_frames` at a time so
    memory stays bounded: argmin over k of |c_k|^2 - 2 x.c_k (|x|^2 is the same for every
    k), computed in float32 as scikit-learn's `predict` does."""
    c = centroids.float()
    c_sq = (c * c).sum(1)
    out = np.empty(len(feats), dtype=np.int64)
    for s in range(0, len(feats), chunk_frames):
        # np.array copies: feats may be a read-only memmap, which torch will not wrap
        x = torch.from_numpy(np.array(feats[s : s + chunk_frames], dtype=np.float32)).to(c.device)
        out[s : s + len(x)] = (c_sq - 2 * x @ c.T).argmin(1).cpu().numpy()
    return out


def usage(counts: np.ndarray) -> tuple[int, float]:
    """(clusters used, perplexity exp(H) of the label distribution)."""
    p = counts[counts > 0] / counts.sum()
    return int((counts > 0).sum()), float(np.exp(-(p * np.log(p)).sum()))


def run_learn(args) -> int:
    feats, num_frames, feats_info = load_features(args.feats_dir)
    if len(feats) < args.clusters:
        raise FeaturesError(f"{args.feats_dir}: {len(feats)} frames for {args.clusters} clusters")
    start = time.time()
    settings = {k: getattr(args, k) for k in ("batch_size", "max_iter", "seed", "init", "n_init",
                                              "max_no_improvement", "reassignment_ratio", "tol")}
    km = learn(feats, args.clusters, **settings)
    inertia = -float(km.score(feats))  # sum of squared distances to the nearest centroid
    centroids = km.cluster_centers_.astype(np.float32)
    with atomic_path(args.km_dir / "centroids.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, centroids, allow_pickle=False)
    info = {"k": args.clusters, "dims": int(centroids.shape[1]), "inertia": inertia,
            "inertia_per_frame": inertia / len(feats), "frames": len(feats), "utterances": len(num_frames),
            "n_steps": int(km.n_steps_), "settings": settings, "features_dir": str(args.feats_dir),
            "features": feats_info}
    atomic_write_text(args.km_dir / "info.json", json.dumps(info, indent=1) + "\n")
    print(f"{args.km_dir}: {args.clusters} centroids of dim {centroids.shape[1]} from {len(feats)} frames, "
          f"inertia {info['inertia_per_frame']:.4g} per frame, {time.time() - start:.1f}s", file=sys.stderr)
    return 0


def check_compatible(feats_info: dict, km_info: dict, feats_dir: Path, km_dir: Path) -> None:
    """Centroids learnt on other features (another layer, MFCC vs a model) make labels
    that mean nothing: refuse them."""
    learnt = km_info.get("features", {})
    for key in ("dims", "layer", "frame_rate"):
        if key in learnt and learnt.get(key) != feats_info.get(key):
            raise FeaturesError(f"{km_dir} was learnt on features with {key} {learnt.get(key)}, "
                                f"{feats_dir} has {key} {feats_info.get(key)}")
    if (learnt.get("source") == "mfcc") != (feats_info.get("source") == "mfcc"):
        raise FeaturesError(f"{km_dir} was learnt on {learnt.get('source')} features, "
                            f"{feats_dir} holds {feats_info.get('source')} features")


def run_apply(args) -> int:
    feats, num_frames, feats_info = load_features(args.feats_dir, mmap=True)
    try:
        centroids = np.load(args.km_dir / "centroids.npy", allow_pickle=False)
        km_info = json.loads((args.km_dir / "info.json").read_text())
    except (OSError, ValueError) as e:
        raise FeaturesError(f"{args.km_dir}: not a k-means dir of `kmeans learn` ({e})") from None
    if centroids.ndim != 2 or centroids.shape[1] != feats.shape[1]:
        raise FeaturesError(f"{args.km_dir}/centroids.npy has shape {centroids.shape}, "
                            f"{args.feats_dir} features have {feats.shape[1]} dims")
    check_compatible(feats_info, km_info, args.feats_dir, args.km_dir)
    missing = []
    if (args.out / "wav.scp").is_file():  # a data dir: the labels must be of its utterances
        utts = DataDir.load(args.out).utterances
        strangers = sorted(set(num_frames) - set(utts))
        if strangers:
            raise FeaturesError(f"{args.feats_dir} has features of {len(strangers)} utterance(s) that data dir "
                                f"{args.out} lacks, e.g. '{strangers[0]}'")
        missing = sorted(set(utts) - set(num_frames))
    c = torch.from_numpy(centroids).to(args.device)
    counts = np.zeros(len(centroids), dtype=np.int64)
    frame = 0
    with atomic_path(args.out / args.table) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        # utterances in groups of about chunk_frames frames, written as they are labelled
        group, size = [], 0
        for i, (utt, n) in enumerate(num_frames.items()):
            group.append((utt, n))
            size += n
            if size < args.chunk_frames and i < len(num_frames) - 1:
                continue
            labels = nearest_centroid(feats[frame : frame + size], c, args.chunk_frames)
            counts += np.bincount(labels, minlength=len(centroids))
            for (u, m), off in zip(group, np.cumsum([0] + [m for _, m in group])):
                f.write(f"{u} {' '.join(map(str, labels[off : off + m].tolist()))}\n")
            frame += size
            group, size = [], 0
    used, perplexity = usage(counts)
    print(f"{args.out / args.table}: {frame} frames of {len(num_frames)} utterances; {used} of {len(centroids)} "
          f"clusters used, perplexity {perplexity:.1f}", file=sys.stderr)
    if missing:
        print(f"{PROG}: error: {len(missing)} utterance(s) of {args.out} have no features in {args.feats_dir} "
              f"(e.g. '{missing[0]}': a --percent dump, or audio that could not be read); the table lacks them "
              f"and a dataset reading it will refuse the dir until they are removed", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m speechlm.bin.kmeans", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    lp = sub.add_parser("learn", help="fit MiniBatchKMeans to dumped features")
    lp.add_argument("feats_dir", type=Path, help="a dump_features output dir")
    lp.add_argument("km_dir", type=Path, help="where centroids.npy and info.json go")
    lp.add_argument("--clusters", type=int, required=True, help="k (HuBERT: 100 on MFCC, 500 on layer 6/9)")
    lp.add_argument("--batch-size", type=int, default=10000)
    lp.add_argument("--max-iter", type=int, default=100)
    lp.add_argument("--seed", type=int, default=0)
    lp.add_argument("--init", default="k-means++", choices=("k-means++", "random"))
    lp.add_argument("--n-init", type=int, default=20)
    lp.add_argument("--max-no-improvement", type=int, default=100)
    lp.add_argument("--reassignment-ratio", type=float, default=0.0)
    lp.add_argument("--tol", type=float, default=0.0)
    ap = sub.add_parser("apply", help="label every frame with its nearest centroid")
    ap.add_argument("feats_dir", type=Path, help="a dump_features output dir")
    ap.add_argument("km_dir", type=Path, help="a `kmeans learn` output dir")
    ap.add_argument("out", type=Path, help="a data dir (the table goes into it) or any output dir")
    ap.add_argument("--table", default="km", help="file name of the table (default: km)")
    ap.add_argument("--chunk-frames", type=int, default=50000, help="frames labelled at a time")
    ap.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    try:
        return run_learn(args) if args.command == "learn" else run_apply(args)
    except (FeaturesError, DataDirError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
