"""Mozilla Common Voice (CC0; any language) -> Kaldi data dirs with 16 kHz audio.

The corpus layout (a manual download from commonvoice.mozilla.org, one tarball per
language and release):

    cv-corpus-<release>/<lang>/{train,dev,test,validated,...}.tsv
    cv-corpus-<release>/<lang>/clips/<name>.mp3          (48 kHz MPEG-1 layer III)

TSV columns are read by their header names: client_id (the speaker), path (the clip's
file name), sentence; other columns (up_votes, age, gender, locale, sentence_id, ...)
differ between releases and are ignored.

Sets, as ESPnet's egs2/commonvoice/asr1: `dev` = dev.tsv, `test` = test.tsv, `train` =
validated.tsv without the dev and test clips (--train-tsv validated, the default; it
shares speakers and sentences with dev/test, which Common Voice's own train.tsv does
not: --train-tsv train uses that). The utterance id is `<client_id>-<clip name without
.mp3>` (speaker first, as ESPnet, so Kaldi's sort orders agree).

Audio: the mp3s are decoded once by libsndfile (>= 1.1 reads MPEG audio), resampled to
16 kHz by torchaudio and written as 16-bit FLAC under --audio-dir, which wav.scp lists.
Training could read the mp3s and resample on every read (the dataset resamples to the
model's rate), but that repeats the decode every epoch and the recipe's validation stage
checks for 16 kHz, so the conversion happens here, once, in --nj processes; files already
converted are kept (a re-run resumes). `--convert false` lists the mp3s as they are.

Text normalisation (documented, conservative): Unicode NFKC (compatibility forms such as
full-width letters and ligatures folded; accents kept), whitespace collapsed, then
--case upper (default, as ESPnet's data_prep.pl) | lower | keep, and with
--remove-punctuation true every Unicode punctuation character (category P*) becomes a
space except an apostrophe or hyphen between two letters (l'uomo, well-known), and
quotes around words go.

Every problem is reported as `file:line: problem` (a row with fewer fields than the
header, an empty path or sentence, a missing, empty or undecodable clip, a clip listed
twice). By default any problem stops the preparation (exit 1) after listing them all;
`--skip-bad true` leaves those rows out, counts them by reason and lists them in
OUT/local/dropped.

    python local/prepare_data.py --cv-dir downloads/cv-corpus-17.0-2024-03-15/it --out data \
        --audio-dir dump/audio_16k --nj 8
"""
from __future__ import annotations

import argparse
import os
import sys
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import soundfile as sf
import torch

from speechlm.data.audio import resample
from speechlm.data.corpus_faults import stop_or_list
from speechlm.data.kaldi_dir import DataDir, DropReport

RATE = 16000
NEEDED = ("client_id", "path", "sentence")


def normalize_text(text: str, case: str = "upper", remove_punctuation: bool = False) -> str:
    text = unicodedata.normalize("NFKC", text)
    if remove_punctuation:
        chars = list(text)
        for i, c in enumerate(chars):
            if not unicodedata.category(c).startswith("P"):
                continue
            inside_word = (c in "'’-" and 0 < i < len(chars) - 1
                           and chars[i - 1].isalpha() and chars[i + 1].isalpha())
            if not inside_word:
                chars[i] = " "
        text = "".join(chars)
    text = " ".join(text.split())
    return text.upper() if case == "upper" else text.lower() if case == "lower" else text


def read_tsv(tsv: Path, clips: Path, report: DropReport, case: str, remove_punctuation: bool) -> dict[str, dict]:
    """Rows of a Common Voice TSV, keyed by clip file name: {utt, spk, text, clip, where}."""
    if not tsv.is_file():
        raise FileNotFoundError(f"{tsv}: missing (is --cv-dir the cv-corpus-*/<lang> folder?)")
    lines = tsv.read_text(encoding="utf-8").split("\n")
    header = lines[0].rstrip("\r").split("\t")
    missing = [c for c in NEEDED if c not in header]
    if missing:
        raise ValueError(f"{tsv}:1: header has no column(s) {', '.join(missing)} (got: {', '.join(header)})")
    col = {c: header.index(c) for c in NEEDED}
    rows = {}
    for n, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line:
            continue
        where = f"{tsv}:{n}"
        fields = line.split("\t")
        if len(fields) < len(header):
            report.drop(where, f"{len(fields)} tab-separated fields, the header has {len(header)}")
            continue
        spk, name = fields[col["client_id"]].strip(), fields[col["path"]].strip()
        text = normalize_text(fields[col["sentence"]], case, remove_punctuation)
        if not spk or not name:
            report.drop(where, "empty client_id or path")
            continue
        if not text:
            report.drop(where, f"'{name}': empty sentence")
            continue
        if name in rows:
            report.drop(where, f"'{name}' listed twice (first at line {rows[name]['where'].rsplit(':', 1)[1]})")
            continue
        clip = clips / name
        if not clip.is_file():
            report.drop(where, f"'{name}': clip {clip} missing")
            continue
        if clip.stat().st_size == 0:
            report.drop(where, f"'{name}': clip {clip} is empty")
            continue
        stem = name[:-4] if name.endswith(".mp3") else Path(name).stem
        rows[name] = {"utt": f"{spk}-{stem}", "spk": spk, "text": text, "clip": clip, "where": where}
    return rows


def convert(clip: str, out: str) -> str | None:
    """Decode `clip`, resample to 16 kHz mono, write 16-bit FLAC at `out` (via a temp file,
    so an interrupted run leaves no half file that a re-run would keep). None if done,
    else why not."""
    if os.path.exists(out):
        return None
    try:
        audio, sr = sf.read(clip, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError variants
        return f"cannot decode: {e}"
    if len(audio) == 0:
        return "decodes to no samples"
    wav = resample(torch.from_numpy(audio[:, 0].copy()), sr, RATE)
    tmp = f"{out}.{os.getpid()}.tmp"
    sf.write(tmp, wav.clamp(-1, 1).numpy(), RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, out)
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cv-dir", type=Path, required=True, help="cv-corpus-<release>/<lang> (TSVs and clips/)")
    p.add_argument("--out", type=Path, default=Path("data"))
    p.add_argument("--train-tsv", default="validated", choices=["validated", "train"])
    p.add_argument("--audio-dir", type=Path, default=Path("dump/audio_16k"))
    p.add_argument("--convert", default="true", choices=["true", "false"])
    p.add_argument("--case", default="upper", choices=["upper", "lower", "keep"])
    p.add_argument("--remove-punctuation", default="false", choices=["true", "false"])
    p.add_argument("--nj", type=int, default=4)
    p.add_argument("--skip-bad", default="false", choices=["true", "false"])
    args = p.parse_args(argv)
    clips, skip_bad, punct = args.cv_dir / "clips", args.skip_bad == "true", args.remove_punctuation == "true"

    report = DropReport()  # every TSV's problems, reported together
    sets = {name: read_tsv(args.cv_dir / f"{tsv}.tsv", clips, report, args.case, punct)
            for name, tsv in (("dev", "dev"), ("test", "test"), ("train", args.train_tsv))}
    held_out = set(sets["dev"]) | set(sets["test"])
    train_rows = sets["train"]
    excluded = [k for k in train_rows if k in held_out]
    for k in excluded:
        del train_rows[k]
    if excluded:
        print(f"train: {len(excluded)} clips of {args.train_tsv}.tsv are in dev/test and left out (as ESPnet)")

    listing = args.out / "local" / "dropped"
    if not skip_bad:  # stop on TSV problems before spending time on the audio
        stop_or_list(report, listing, skip_bad, "row(s)")
    if args.convert == "true":
        args.audio_dir.mkdir(parents=True, exist_ok=True)
        jobs = {(name, key): (str(row["clip"]), str(args.audio_dir / f"{Path(key).stem}.flac"))
                for name, rows in sets.items() for key, row in rows.items()}
        with ProcessPoolExecutor(max(1, args.nj)) as pool:
            results = dict(zip(jobs, pool.map(convert, *zip(*jobs.values()), chunksize=64))) if jobs else {}
        for (name, key), why in results.items():
            if why is not None:
                report.drop(sets[name][key]["where"], f"'{key}': {why}")
                del sets[name][key]
            else:
                sets[name][key]["audio"] = str(Path(jobs[(name, key)][1]).resolve())
    stop_or_list(report, listing, skip_bad, "row(s)")

    for name, rows in sets.items():
        dd = DataDir(wav_scp={r["utt"]: r.get("audio", str(r["clip"].resolve())) for r in rows.values()},
                     utt2spk={r["utt"]: r["spk"] for r in rows.values()},
                     text={r["utt"]: r["text"] for r in rows.values()})
        dd.save(args.out / name)
        print(f"{args.out / name}: {len(dd)} utterances, {len(dd.spk2utt)} speakers")
    shared = {r["spk"] for r in sets["train"].values()} & {r["spk"] for s in ("dev", "test") for r in sets[s].values()}
    if shared:
        print(f"note: {len(shared)} train speakers also speak in dev/test (--train-tsv train avoids this)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
