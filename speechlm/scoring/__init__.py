"""Scoring: sclite trn files, WER/CER with sclite's counts, result.txt and RESULTS.md."""
from speechlm.scoring.align import levenshtein_align, sclite_align
from speechlm.scoring.results import append_results_md, format_result_txt, format_summary, write_result_txt
from speechlm.scoring.trn import TrnError, read_trn, speaker_of, trn_id, trn_rows, write_trn
from speechlm.scoring.wer import (
    ErrorCounts,
    UtteranceScore,
    char_tokens,
    counts_by_speaker,
    format_alignment,
    score_corpus,
    score_tokens,
    sum_counts,
    word_tokens,
)

__all__ = [
    "ErrorCounts", "TrnError", "UtteranceScore", "append_results_md", "char_tokens", "counts_by_speaker",
    "format_alignment", "format_result_txt", "format_summary", "levenshtein_align", "read_trn", "sclite_align",
    "score_corpus", "score_tokens", "speaker_of", "sum_counts", "trn_id", "trn_rows", "word_tokens",
    "write_result_txt", "write_trn",
]
