"""Whisper-style multitask special tokens, for any vocabulary and any language list.

A multitask decoder is prompted with `<|startoftranscript|> <|lang|> <|task|>`, may predict
`<|notimestamps|>` or timestamp tokens, and ends with `<|endoftext|>`. The special tokens
follow the text tokens in Whisper's order (`multitask_special_tokens`)::

    <|endoftext|>  <|startoftranscript|>  <|en|> <|zh|> ... (one per language)
    <|translate|>  <|transcribe|>  <|startoflm|>  <|startofprev|>  <|nospeech|>
    <|notimestamps|>  <|0.00|> <|0.02|> ... <|30.00|>  [<|sc|>: speaker change]

and are named by role in `special_ids`: sot, eot, sos (= sot), eos (= eot), translate,
transcribe, sot_lm, sot_prev, no_speech, no_timestamps, timestamp_begin (<|0.00|>),
speaker_change, lang_<code>. `MultitaskVocabulary` gives a tokenizer with these roles
Whisper's helpers (`sot_sequence`, `non_speech_ids`, ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# Whisper's language codes in token order (whisper.tokenizer.LANGUAGES); its models have the
# first 99 (large-v3: all 100).
WHISPER_LANGUAGES = (
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it",
    "id", "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur",
    "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn",
    "et", "mk", "br", "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si",
    "km", "sn", "yo", "so", "af", "oc", "ka", "be", "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo",
    "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln", "ha",
    "ba", "jw", "su", "yue",
)

TIME_PRECISION = 0.02  # seconds per timestamp step
NUM_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|>
TASKS = ("transcribe", "translate")

EOT = "<|endoftext|>"
SOT = "<|startoftranscript|>"
SPEAKER_CHANGE = "<|sc|>"


SPEAKER_CHANGE_MARK = "<sc>"  # how text writes the speaker-change token


def timestamp_token(index: int) -> str:
    """"<|0.02|>" for index 1 (Whisper's formatting, float rounding included)."""
    return f"<|{index * TIME_PRECISION:.2f}|>"


def multitask_special_tokens(languages: Sequence[str], speaker_change: bool = False
                             ) -> tuple[list[str], dict[str, str]]:
    """The special tokens that follow the text tokens, in id order, and role -> token.

    Args:
        languages: language codes, in the order of their tokens (e.g. WHISPER_LANGUAGES[:99]).
        speaker_change: append <|sc|> after <|30.00|>.
    """
    languages = [str(code) for code in languages]
    bad = [c for c in languages if not c or "|" in c or any(ch.isspace() for ch in c)]
    if bad or len(set(languages)) != len(languages):
        raise ValueError(f"languages must be distinct codes without '|' or whitespace, got {languages}")
    roles = {"eot": EOT, "eos": EOT, "sot": SOT, "sos": SOT}
    roles.update({f"lang_{code}": f"<|{code}|>" for code in languages})
    roles.update({
        "translate": "<|translate|>",
        "transcribe": "<|transcribe|>",
        "sot_lm": "<|startoflm|>",
        "sot_prev": "<|startofprev|>",
        "no_speech": "<|nospeech|>",
        "no_timestamps": "<|notimestamps|>",
        "timestamp_begin": timestamp_token(0),
    })
    tokens = [t for role, t in roles.items() if role not in ("eos", "sos")]  # role order is token order
    tokens += [timestamp_token(i) for i in range(1, NUM_TIMESTAMPS)]
    if speaker_change:
        roles["speaker_change"] = SPEAKER_CHANGE
        tokens.append(SPEAKER_CHANGE)
    if len(set(tokens)) != len(tokens):  # a language "translate", "0.00", ...
        clashes = [code for code in languages if tokens.count(f"<|{code}|>") > 1]
        raise ValueError(f"language codes {clashes} name other special tokens")
    return tokens, roles


class MultitaskVocabulary:
    """Whisper's tokenizer helpers over a `Tokenizer` whose special tokens are
    `multitask_special_tokens` (the text tokens before them, `eot` the first special).

    Mixed into a `Tokenizer` subclass (`class X(MultitaskVocabulary, Tokenizer)`), which
    provides `special_ids`, `_role_id`, `encode` and `id_to_token`.
    """

    # A byte-level BPE (Whisper's tiktoken) splits a rare character into byte tokens whose
    # first one is a prefix shared with its neighbours; only then does `non_speech_ids`
    # suppress the first token of a multi-token symbol, as Whisper does.
    byte_level: bool = False

    @property
    def languages(self) -> list[str]:
        """Language codes in token order."""
        ids = self.special_ids
        return sorted((role[5:] for role in ids if role.startswith("lang_")), key=lambda c: ids[f"lang_{c}"])

    def language_id(self, code: str) -> int:
        """Id of <|code|>; KeyError naming the languages if there is none."""
        ids = self.special_ids
        if f"lang_{code}" not in ids:
            raise KeyError(f"no language token <|{code}|> (languages: {' '.join(self.languages)})")
        return ids[f"lang_{code}"]

    def sot_sequence(self, language: str | None = None, task: str | None = None) -> list[int]:
        """[sot, <|language|>, <|task|>], each of the last two left out when None."""
        sequence = [self._role_id("sot")]
        if language is not None:
            sequence.append(self.language_id(language))
        if task is not None:
            if task not in TASKS:
                raise ValueError(f"task must be one of {TASKS}, got {task!r}")
            sequence.append(self._role_id(task))
        return sequence

    def timestamp_id(self, seconds: float) -> int:
        """Id of the timestamp token nearest `seconds` (0 .. 30 in steps of 0.02)."""
        index = round(seconds / TIME_PRECISION)
        if not 0 <= index < NUM_TIMESTAMPS:
            raise ValueError(f"timestamp {seconds} s is outside 0 .. {(NUM_TIMESTAMPS - 1) * TIME_PRECISION:.2f} s")
        return self._role_id("timestamp_begin") + index

    def non_speech_ids(self) -> list[int]:
        """Ids to suppress so that the decoder does not write speaker tags or non-speech
        annotations (♪♪♪, ( SPEAKING FOREIGN LANGUAGE ), [DAVID] ...): Whisper's
        `non_speech_tokens`, computed the same way from this vocabulary's `encode`.

        In a vocabulary that is not byte-level (sentencepiece), a lone word-boundary piece
        ("▁") is not part of a symbol's encoding (it is speech), a multi-piece symbol is
        never suppressed by its first piece, and `unk` is never in the list.
        """
        symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
        symbols += ["<<", ">>", "<<<", ">>>", "--", "---", "-(", "-[", "('", '("', "((", "))", "(((", ")))",
                    "[[", "]]", "{{", "}}", "♪♪", "♪♪♪"]
        # U+2640 .. U+267F: in UTF-8 they share their first two bytes, so a byte-level
        # vocabulary may suppress a first token shared by several of them.
        miscellaneous = set("♩♪♫♬♭♮♯")
        # hyphens and single quotes stay allowed between words, not at the start of a word
        candidates = [(self.encode(" -"), True), (self.encode(" '"), True)]
        for symbol in symbols + sorted(miscellaneous):
            for text in (symbol, " " + symbol):
                candidates.append((self._symbol_ids(text), symbol in miscellaneous))
        result = {ids[0] for ids, prefix_ok in candidates
                  if ids and (len(ids) == 1 or (prefix_ok and self.byte_level))}
        return sorted(result - {self.special_ids.get("unk")})

    def _symbol_ids(self, text: str) -> list[int]:
        """`encode(text)`, less any word-boundary piece if the vocabulary is not byte-level."""
        ids = self.encode(text)
        return ids if self.byte_level else [i for i in ids if self.decode([i]).strip()]

    def decode_with_timestamps(self, ids: Iterable[int]) -> str:
        """Text of `ids` with every multitask special (sot and eot too) rendered as its token,
        e.g. "<|0.00|> Hello<|1.00|>"; blank is skipped. Text ids between two specials are
        decoded together by `decode`."""
        first_special = self._role_id("eot")
        blank = self.special_ids.get("blank")
        pieces, run = [], []
        for i in int_ids(ids, self.vocab_size):
            if i >= first_special:
                pieces.append(self.decode(run) + self.id_to_token(i))
                run = []
            elif i != blank:
                run.append(i)
        return "".join(pieces) + self.decode(run)

    def _by_speaker(self, ids: Iterable[int], decode_text) -> str:
        """`decode_text` of each speaker's ids, joined by " <sc> " (the speaker-change mark
        of serialized-output-training transcripts, which scoring splits on)."""
        ids = int_ids(ids, self.vocab_size)
        change = self.special_ids.get("speaker_change")
        if change is None or change not in ids:
            return decode_text(ids)
        parts, current = [], []
        for i in ids:
            if i == change:
                parts.append(current)
                current = []
            else:
                current.append(i)
        parts.append(current)
        return f" {SPEAKER_CHANGE_MARK} ".join(decode_text(p).strip() for p in parts).strip()

    def _text_ids(self, ids: Iterable[int]) -> list[int]:
        """`ids` without any special: control ids (blank, ...) and every multitask special."""
        first_special = self._role_id("eot")
        return [i for i in self._content_ids(ids) if i < first_special]


def int_ids(ids: Iterable[int], vocab_size: int) -> list[int]:
    """`ids` (a list or a 1-D tensor) as Python ints, each checked to be < vocab_size."""
    ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise IndexError(f"token ids {bad[:5]} out of range for vocab_size {vocab_size}")
    return ids
