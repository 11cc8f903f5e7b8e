"""CMU AN4 (alphanumeric: spelled names, numbers, control words; 16 kHz) -> Kaldi data dirs.

The corpus layout (an4_sphere.tar.gz):

    an4/etc/an4_train.transcription   "<s> RUBOUT G M E F THREE NINE </s> (an251-fash-b)"
    an4/etc/an4_test.transcription
    an4/wav/an4_clstk/<spk>/<fileid>.sph       (training speakers)
    an4/wav/an4test_clstk/<spk>/<fileid>.sph   (test speakers)

As ESPnet's egs2/an4/asr1 (local/data_prep.py + data.sh): the file id `an251-fash-b`
becomes the utterance id `fash-an251-b` (speaker first, so Kaldi's sort orders agree),
the speaker is `fash`, the text is the line without `<s>`/`</s>`; `dev` is the first
--ndev (100) utterances of the sorted training list and `train` the rest (ESPnet's
train_dev / train_nodev); `test` is an4_test.

The .sph files are NIST SPHERE with 16-bit PCM, which libsndfile reads, so wav.scp lists
them by path. A file libsndfile cannot open (a shorten-compressed SPHERE from another
copy of the corpus) becomes a `sph2pipe -f wav -p -c 1 FILE |` pipe if sph2pipe is on
PATH, and a reported problem otherwise.

Every problem is reported as `file:line: problem` (a line without `(fileid)`, a file id
that is not `<prefix>-<speaker>-<suffix>`, no text, a duplicate id, missing or unreadable
audio). By default any problem stops the preparation (exit 1) after listing all of them;
`--skip-bad true` leaves those utterances out, counts them by reason and lists them in
OUT/local/dropped.

    python local/prepare_data.py --an4-dir downloads/an4 --out data [--ndev 100]
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import soundfile as sf

from speechlm.data.corpus_faults import stop_or_list
from speechlm.data.kaldi_dir import DataDir, DropReport
from speechlm.data.subset import subset_data_dir

LINE = re.compile(r"(?:<s>\s*)?(?P<text>.*?)\s*(?:</s>)?\s*\((?P<fileid>[^()\s]+)\)")
SPH_DIR = {"train": "an4_clstk", "test": "an4test_clstk"}


def wav_entry(sph: Path) -> str | None:
    """The wav.scp entry for a SPHERE file: its path if libsndfile reads it, else a
    sph2pipe pipe if there is one; None if neither can."""
    try:
        sf.info(str(sph))
        return str(sph.resolve())
    except Exception:  # soundfile raises LibsndfileError / RuntimeError variants
        if shutil.which("sph2pipe"):
            return f"sph2pipe -f wav -p -c 1 {sph.resolve()} |"
        return None


def prepare_set(an4: Path, name: str, report: DropReport) -> DataDir:
    trans = an4 / "etc" / f"an4_{name}.transcription"
    if not trans.is_file():
        raise FileNotFoundError(f"{trans}: missing (is {an4} the unpacked an4/ folder?)")
    wav_scp, text, utt2spk = {}, {}, {}
    for n, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{trans}:{n}"
        if not line.strip():
            continue  # the distributed files end with a blank line
        m = LINE.fullmatch(line.strip())
        if m is None:
            report.drop(where, "not '<s> TEXT </s> (fileid)'")
            continue
        fileid, words = m.group("fileid"), " ".join(m.group("text").split())
        parts = fileid.split("-")
        if len(parts) != 3 or not all(parts):
            report.drop(where, f"file id '{fileid}' is not <prefix>-<speaker>-<suffix>")
            continue
        if not words:
            report.drop(where, f"'{fileid}' has no text")
            continue
        pre, spk, last = parts
        utt = f"{spk}-{pre}-{last}"
        if utt in text:
            report.drop(where, f"'{fileid}' transcribed twice")
            continue
        sph = an4 / "wav" / SPH_DIR[name] / spk / f"{fileid}.sph"
        if not sph.is_file():
            report.drop(where, f"'{fileid}': audio {sph} missing")
            continue
        entry = wav_entry(sph)
        if entry is None:
            report.drop(where, f"'{fileid}': {sph} is not a SPHERE file libsndfile reads, and no sph2pipe on PATH")
            continue
        wav_scp[utt], text[utt], utt2spk[utt] = entry, words, spk
    return DataDir(wav_scp=wav_scp, utt2spk=utt2spk, text=text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--an4-dir", type=Path, required=True, help="the unpacked an4/ folder (etc/, wav/)")
    p.add_argument("--out", type=Path, default=Path("data"))
    p.add_argument("--ndev", type=int, default=100, help="first N sorted training utterances -> dev")
    p.add_argument("--skip-bad", default="false", choices=["true", "false"])
    args = p.parse_args(argv)

    report = DropReport()  # both lists' problems, reported together
    sets = {name: prepare_set(args.an4_dir, name, report) for name in ("train", "test")}
    stop_or_list(report, args.out / "local" / "dropped", args.skip_bad == "true")
    full = sets["train"]
    if len(full) <= args.ndev:
        sys.exit(f"an4 train has {len(full)} utterances, not more than --ndev {args.ndev}")
    sets["dev"], _ = subset_data_dir(full, first=args.ndev)
    sets["train"], _ = subset_data_dir(full, last=len(full) - args.ndev)
    for name in ("train", "dev", "test"):
        sets[name].save(args.out / name)
        print(f"{args.out / name}: {len(sets[name])} utterances, {len(sets[name].spk2utt)} speakers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
