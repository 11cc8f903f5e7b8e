"""Sharded data (speechlm.data.shards): a data dir exported to webdataset shards gives the
same items as the data dir (audio samples, text, tables; segments, pipes, 24-bit, float and
8 kHz audio; bad utterances reported), every utterance once per epoch across 2 ranks x 2
workers, equal batch counts per rank, the same batches over HTTP as from disk, and a
resumed loader continues with exactly the batches the uninterrupted one would have given."""
from __future__ import annotations

import functools
import http.server
import json
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures import make_data_dir, write_wav
from speechlm.bin.export_shards import main as export_main
from speechlm.data.dataset import AudioDataset
from speechlm.data.kaldi_dir import DataDirError
from speechlm.data.shard_plan import rank_order, resume_split
from speechlm.data.shards import ShardIndex, ShardItems, ShardStream
from speechlm.train.shard_data_module import ResumableShardLoader

ITEMS = dict(tables={"spk": "utt2spk"}, bad_utterances="skip")
PLAN = dict(max_seconds=2.6, num_buckets=2, buffer_size=6)


def write_table(path: Path, table: dict) -> None:
    path.write_text("".join(f"{k} {v}\n" for k, v in sorted(table.items())))


def mixed_data_dir(root: Path) -> Path:
    """make_data_dir plus: a `cat |` pipe of a 24-bit wav, a pipe of a float wav, an 8 kHz
    file, an all-silent file (a bad utterance, exported), a missing file and a failing pipe
    (both export failures); tables utt2lang, km (integers), text.en."""
    d = make_data_dir(root)
    rows = {f: dict(line.split(" ", 1) for line in (d / f).read_text().splitlines())
            for f in ("wav.scp", "text", "utt2spk", "utt2dur")}
    wav = root / "wav"
    seconds = {"x-pipe24": 0.9, "x-pipefloat": 0.7, "x-8k": 1.1, "x-silent": 0.5, "x-missing": 1.0, "x-badpipe": 1.0}
    extra = {"x-pipe24": f"cat {write_wav(wav / 'p24.wav', 0.9, seed=5, subtype='PCM_24')} |",
             "x-pipefloat": f"cat {write_wav(wav / 'pf.wav', 0.7, seed=6, subtype='FLOAT')} |",
             "x-8k": str(write_wav(wav / 'n8k.wav', 1.1, sr=8000, seed=7)),
             "x-silent": str(wav / "silent.wav"),
             "x-missing": str(wav / "nowhere.wav"),
             "x-badpipe": "false |"}
    import soundfile as sf
    sf.write(wav / "silent.wav", np.zeros(8000, np.float32), 16000)
    for utt, entry in extra.items():
        rows["wav.scp"][utt], rows["text"][utt], rows["utt2spk"][utt] = entry, f"TEXT OF {utt}", "spkX"
        rows["utt2dur"][utt] = f"{seconds[utt]:.3f}"
    for f, table in rows.items():
        write_table(d / f, table)
    (d / "spk2utt").unlink()
    utts = sorted(rows["utt2spk"])
    write_table(d / "utt2lang", {u: "en" if i % 2 else "de" for i, u in enumerate(utts)})
    write_table(d / "km", {u: " ".join(str(j) for j in range(i + 1)) for i, u in enumerate(utts)})
    write_table(d / "text.en", {u: f"in english {u}" for u in utts})
    return d


def segments_data_dir(root: Path) -> Path:
    """Two recordings (one a pipe) cut into five segments."""
    d = root / "seg"
    d.mkdir(parents=True)
    a, b = write_wav(root / "rec" / "a.wav", 3.0, seed=1), write_wav(root / "rec" / "b.wav", 2.0, seed=2)
    write_table(d / "wav.scp", {"recA": str(a), "recB": f"cat {b} |"})
    segs = {"recA-1": "recA 0.00 1.10", "recA-2": "recA 1.10 2.35", "recA-3": "recA 2.35 3.00",
            "recB-1": "recB 0.20 0.90", "recB-2": "recB 0.90 2.00"}
    write_table(d / "segments", segs)
    write_table(d / "text", {u: f"SEG {u}" for u in segs})
    write_table(d / "utt2spk", {u: u[:4] for u in segs})
    return d


def items_by_id(items: ShardItems, index: ShardIndex) -> dict[str, dict]:
    """Every utterance's item read from the shards (one rank, no workers, no shuffle)."""
    stream = ShardStream(items, max_seconds=1e9, shuffle=False, buffer_size=1)
    return {item["id"]: item for batch in stream for item in batch}


def assert_same_item(a: dict, b: dict) -> None:
    assert a.keys() == b.keys(), (a["id"], a.keys(), b.keys())
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), (a["id"], key)
        else:
            assert a[key] == b[key], (a["id"], key)


@pytest.mark.parametrize("make", [mixed_data_dir, segments_data_dir])
def test_export_round_trip_gives_the_data_dirs_items(tmp_path, make, capsys):
    d = make(tmp_path)
    out = tmp_path / "shards"
    assert export_main([str(d), str(out), "--max-count", "3"]) == 0
    err = capsys.readouterr().err
    index = ShardIndex.load(out)
    tables = {"spk": "utt2spk"} if make is segments_data_dir else {
        "spk": "utt2spk", "lang": "utt2lang", "km": "km", "text_en": "text.en"}
    reference = AudioDataset(d, 16000, tables=tables, bad_utterances="skip")
    expected_failures = {"x-missing", "x-badpipe"} if make is mixed_data_dir else set()
    failed = dict(line.split(" ", 1) for line in (out / "failed").read_text().splitlines()) if expected_failures else {}
    assert failed.keys() == expected_failures
    for utt in expected_failures:
        assert f"failed: {utt}: unreadable audio" in err
    assert "x-missing" not in failed or "nowhere.wav" in failed["x-missing"]
    assert f"exported {len(reference) - len(failed)} utterances" in err and f"{len(failed)} failed" in err
    assert len(index) == len(reference) - len(failed) and len(index.shards) == -(-len(index) // 3)
    got = items_by_id(ShardItems(index, 16000, tables=tables, bad_utterances="skip"), index)
    assert got.keys() == set(reference.ids) - failed.keys()
    for i, utt in enumerate(reference.ids):
        if utt in got:
            assert_same_item(got[utt], reference[i])
    if make is mixed_data_dir:
        assert got["x-silent"]["bad"].startswith("all silence")  # exported; left out when training, as from the dir
        assert got["x-8k"]["audio"].shape[0] == round(1.1 * 16000)  # resampled as from the dir
        assert got["spkA-utt0"]["km"].dtype == torch.long and "text_en" in got["spkA-utt0"]
        # a plain file used whole is stored as its own bytes; pipes are decoded, lossless
        wav_scp = dict(line.split(" ", 1) for line in (d / "wav.scp").read_text().splitlines())
        members = {}
        for shard in index.shards:
            with tarfile.open(shard.url) as tar:
                members.update({m.name: tar.extractfile(m).read() for m in tar.getmembers()})
        assert members["spkA-utt0.wav"] == Path(wav_scp["spkA-utt0"]).read_bytes()
        assert "x-pipe24.flac" in members and "x-pipefloat.wav" in members
        assert json.loads(members["x-8k.json"])["tables"]["utt2lang"] in ("en", "de")


def test_table_not_covering_every_utterance_is_named(tmp_path):
    d = make_data_dir(tmp_path)
    write_table(d / "km", {"spkA-utt0": "1 2"})
    export_main([str(d), str(tmp_path / "s")])
    with pytest.raises(DataDirError, match="table 'km' covers 1 of 6 utterances"):
        ShardItems(ShardIndex.load(tmp_path / "s"), tables={"km": "km"})


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """16 utterances (0.5-1.55 s) in 8 shards of 2."""
    root = tmp_path_factory.mktemp("shards")
    d = make_data_dir(root, speakers=("spkA", "spkB", "spkC", "spkD"), per_speaker=4)
    assert export_main([str(d), str(root / "shards"), "--max-count", "2"]) == 0
    return root / "shards"


def rank_loader(where, rank: int, world_size: int, num_workers: int, epoch: int = 0, **plan):
    items = ShardItems(ShardIndex.load(where), **ITEMS)
    stream = ShardStream(items, rank=rank, world_size=world_size, **{**PLAN, **plan})
    loader = ResumableShardLoader(stream, num_workers=num_workers)
    loader.set_epoch(epoch)
    return loader


def test_every_utterance_once_per_epoch_across_2_ranks_x_2_workers(shards):
    everything = set(ShardIndex.load(shards).durations())
    orders = []
    for epoch in (0, 1):
        seen, lengths = [], []
        for rank in (0, 1):
            loader = rank_loader(shards, rank, 2, num_workers=2, epoch=epoch)
            batches = list(loader)
            assert len(batches) == len(loader)
            lengths.append(len(batches))
            seen += [u for b in batches for u in b["ids"]]
        assert len(seen) == len(set(seen)) == len(everything) and set(seen) == everything
        assert lengths[0] == lengths[1]
        orders.append(seen)
    assert orders[0] != orders[1], "two epochs gave the same order"


def test_ranks_get_equal_batch_counts_with_padding(tmp_path):
    # 2 shards of 7 and 2 utterances for 2 ranks: one rank reads far more than the other
    d = make_data_dir(tmp_path, speakers=("spkA", "spkB", "spkC"), per_speaker=3)
    export_main([str(d), str(tmp_path / "s"), "--max-count", "7"])
    runs = [list(rank_loader(tmp_path / "s", r, 2, num_workers=0, max_seconds=1.6)) for r in (0, 1)]
    assert len(runs[0]) == len(runs[1])
    pads = [sum(bool(b.get("pad")) for b in run) for run in runs]
    assert sum(pads) > 0 and min(pads) == 0, pads
    assert all(b == {"ids": [], "pad": True} for run in runs for b in run if b.get("pad"))
    ids = [u for run in runs for b in run for u in b["ids"]]
    assert sorted(ids) == sorted(ShardIndex.load(tmp_path / "s").durations())
    # fewer shards (2) than rank x worker slots (4): idle workers, still every utterance once
    idle = [list(rank_loader(tmp_path / "s", r, 2, num_workers=2, max_seconds=1.6)) for r in (0, 1)]
    assert len(idle[0]) == len(idle[1])
    assert sorted(u for run in idle for b in run for u in b["ids"]) == sorted(ids)
    # the padded-seconds budget holds (an utterance longer than it goes alone)
    durations = ShardIndex.load(tmp_path / "s").durations()
    for b in (b for run in runs for b in run if not b.get("pad")):
        assert len(b["ids"]) == 1 or len(b["ids"]) * max(durations[u] for u in b["ids"]) <= 1.6


def batch_digest(batches) -> list:
    return [(b["ids"], b["audio"].sum().item() if "audio" in b else None) for b in batches]


def test_http_shards_give_the_same_batches_as_local_disk(shards):
    handler = functools.partial(QuietHandler, directory=str(shards))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        for rank in (0, 1):
            remote = list(rank_loader(url, rank, 2, num_workers=2))
            local = list(rank_loader(shards, rank, 2, num_workers=2))
            assert batch_digest(remote) == batch_digest(local)
            for a, b in zip(remote, local):
                assert "audio" not in a or torch.equal(a["audio"], b["audio"])
        assert QuietHandler.requests, "nothing was read over HTTP"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, format, *args):
        QuietHandler.requests.append(self.path)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumed_loader_continues_with_exactly_the_remaining_batches(shards, num_workers):
    for rank in (0, 1):
        full = list(rank_loader(shards, rank, 2, num_workers, epoch=1))
        assert len(full) >= 4
        for stop in sorted({1, 2, len(full) // 2 + 1, len(full) - 1}):
            first = rank_loader(shards, rank, 2, num_workers, epoch=1)
            it = iter(first)
            head = [next(it) for _ in range(stop)]
            state = first.state_dict()
            del it
            assert state["epoch"] == 1 and state["batches_consumed"] == stop
            resumed = rank_loader(shards, rank, 2, num_workers, epoch=0)  # a new run, state restored
            resumed.load_state_dict(state)
            assert len(resumed) == len(full)  # Lightning counts the epoch's batches itself
            rest = list(resumed)
            assert batch_digest(head + rest) == batch_digest(full), (rank, stop)
            assert resumed.dataset.skip == 0 and len(list(resumed)) == len(full)  # next iteration: whole epoch


def test_resume_refuses_another_worker_count(shards):
    loader = rank_loader(shards, 0, 2, num_workers=2)
    state = loader.state_dict()
    with pytest.raises(ValueError, match="2 rank\\(s\\) x 2 data worker\\(s\\)"):
        rank_loader(shards, 0, 2, num_workers=0).load_state_dict(state)


def test_resume_split_reproduces_a_dataloaders_round_robin_order():
    rng = np.random.default_rng(0)
    for _ in range(300):
        lengths = rng.integers(0, 6, size=int(rng.integers(1, 5))).tolist()
        order = rank_order(lengths)
        for consumed in range(len(order) + 1):
            given, rotation = resume_split(lengths, consumed)
            w = len(lengths)
            # a fresh loader: worker i serves slot (i + rotation) % w, from batch given[slot] on
            slots = [(i + rotation) % w for i in range(w)]
            rest = rank_order([lengths[s] - given[s] for s in slots])
            resumed = [(slots[i], given[slots[i]] + j) for i, j in rest]
            assert resumed == order[consumed:], (lengths, consumed)


def test_shard_disagreeing_with_its_index_is_named(tmp_path):
    d = make_data_dir(tmp_path)
    export_main([str(d), str(tmp_path / "s"), "--max-count", "3"])
    index = json.loads((tmp_path / "s/shards.json").read_text())
    index["shards"][0]["ids"][0] = "someone-else"
    (tmp_path / "s/shards.json").write_text(json.dumps(index))
    stream = ShardStream(ShardItems(ShardIndex.load(tmp_path / "s")), max_seconds=100, shuffle=False)
    with pytest.raises(DataDirError, match="shard-000000.tar: holds '.*', which the index .* does not list"):
        list(stream)


def test_resume_neither_opens_consumed_shards_nor_decodes_consumed_items(shards, monkeypatch):
    import speechlm.data.shards as shard_module

    opened, decoded = [], []
    real_iter, real_load = shard_module.iter_shard, ShardItems.load_audio
    monkeypatch.setattr(shard_module, "iter_shard", lambda shard: opened.append(shard.url) or real_iter(shard))
    monkeypatch.setattr(ShardItems, "load_audio", lambda self, utt: decoded.append(utt) or real_load(self, utt))
    full = list(rank_loader(shards, 0, 1, num_workers=0, epoch=2))
    assert len(set(opened)) == 8 and len(decoded) == 16
    opened.clear(), decoded.clear()
    resumed = rank_loader(shards, 0, 1, num_workers=0, epoch=2)
    resumed.load_state_dict({"epoch": 2, "batches_consumed": len(full) - 1, "world_size": 1, "workers": 1})
    (last,) = list(resumed)
    assert last["ids"] == full[-1]["ids"]
    assert sorted(decoded) == sorted(last["ids"]), "audio of consumed batches was decoded"
    assert len(opened) < 8, "every shard was opened again"
