"""What a corpus preparation does with the faults it found (a recipe's local/ scripts):
by default list every one and stop; with `skip_bad` leave them out, count them per reason
and keep the list in a file, so that nothing is dropped silently.

A fault is recorded as `report.drop("file:line", "problem")` in a `DropReport`."""
from __future__ import annotations

import sys
from pathlib import Path

from speechlm.data.kaldi_dir import DropReport


def stop_or_list(report: DropReport, listing: Path, skip_bad: bool, items: str = "utterance(s)") -> None:
    """No faults: nothing. Else print `file:line: problem` for each and exit 1 naming the
    count, or (`skip_bad`) write them to `listing` and print one line per reason and the
    total left out."""
    if not report:
        return
    lines = [f"{key}: {reason}" for reason, keys in sorted(report.dropped.items()) for key in keys]
    if not skip_bad:
        print("\n".join(lines), file=sys.stderr)
        sys.exit(f"{report.total} problem(s) in the corpus (listed above); fix them or re-run "
                 f"with --skip-bad true to leave those {items} out")
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for line in report.summary():
        print(line, file=sys.stderr)
    print(f"{report.total} {items} left out, listed in {listing}", file=sys.stderr)
