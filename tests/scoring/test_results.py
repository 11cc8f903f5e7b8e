from __future__ import annotations

import re

from speechlm.scoring.results import (
    MD_HEADER,
    append_results_md,
    format_result_txt,
    format_summary,
)
from speechlm.scoring.wer import ErrorCounts, score_corpus


def test_result_txt_has_the_sum_avg_row_espnet_greps():
    scores = score_corpus([("s1-a", "a b c d", "a x c"), ("s2-b", "e f", "e f g")])
    text = format_result_txt(scores, "hyp.trn", notes=["1 missing"])
    assert text.startswith("NOTE: 1 missing\n")
    sum_avg = [l for l in text.splitlines() if "Sum/Avg" in l]
    assert len(sum_avg) == 1
    # | Sum/Avg|    2      6 | Corr Sub Del Ins Err S.Err | in percent
    nums = [float(x) for x in re.findall(r"\d+\.?\d*", sum_avg[0])]
    assert nums == [2, 6, 66.7, 16.7, 16.7, 16.7, 50.0, 100.0]
    raw = [l for l in text.splitlines() if re.match(r"\s*\| Sum\s+\|", l)]
    assert [int(x) for x in re.findall(r"\d+", raw[0])] == [2, 6, 4, 1, 1, 1, 3, 2]
    assert "id: (s1-a)" in text and "Eval:" in text


def test_summary_rows_line_up():
    box = format_summary({"spkA": ErrorCounts(2, 7, 3, 0, 4, 4, 2), "a_long_speaker_name": ErrorCounts(1, 0, 0, 0, 0, 1, 1)},
                         "hyp.trn")
    rows = [l for l in box.splitlines() if l.strip().startswith(("|", ",", "`"))]
    assert len({len(l) for l in rows}) == 1, box


def test_results_md_appends_and_keeps_earlier_rows(tmp_path):
    md = tmp_path / "RESULTS.md"
    md.write_text("# digits\n\nSome notes a person wrote.\n", encoding="utf-8")
    c1, c2 = ErrorCounts(10, 50, 48, 1, 1, 0, 2), ErrorCounts(10, 50, 45, 3, 2, 1, 4)
    append_results_md(md, "exp1", "WER", "decode_dev", c1)
    append_results_md(md, "exp1", "WER", "decode_test", c2)
    append_results_md(md, "exp1", "CER", "decode_test", c2)
    append_results_md(md, "exp2", "WER", "decode_test", c1)
    append_results_md(md, "exp1", "WER", "decode_dev2", c1)
    text = md.read_text(encoding="utf-8")
    assert text.startswith("# digits\n\nSome notes a person wrote.\n")
    exp1 = text.split("## exp1\n")[1].split("## exp2")[0]
    wer = exp1.split("### WER")[1].split("###")[0]
    assert [l.split("|")[1] for l in wer.splitlines() if l.startswith("|") and l != MD_HEADER][1:] == \
        ["decode_dev", "decode_test", "decode_dev2"]
    assert "|decode_dev|10|50|96.0|2.0|2.0|0.0|4.0|20.0|" in wer
    assert "|decode_test|10|50|90.0|6.0|4.0|2.0|12.0|40.0|" in exp1.split("### CER")[1]
    assert text.count("## exp2\n") == 1 and text.count(MD_HEADER) == 3

    # re-scoring replaces that row only
    append_results_md(md, "exp1", "WER", "decode_test", c1)
    new = md.read_text(encoding="utf-8")
    assert new.count("|decode_test|") == 3  # exp1 WER, exp1 CER, exp2 WER
    assert "|decode_test|10|50|96.0|" in new.split("## exp1\n")[1].split("### CER")[0]
    assert new.replace("|decode_test|10|50|96.0|2.0|2.0|0.0|4.0|20.0|", "X", 1) != new
    assert new.startswith("# digits\n\nSome notes a person wrote.\n")
