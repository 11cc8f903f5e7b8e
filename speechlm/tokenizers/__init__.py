"""Text <-> token ids in ESPnet's token-list layout: <blank>=0, <unk>=1, ..., <sos/eos>=last;
or with Whisper's multitask special tokens (multitask.py, whisper.py); or a Hugging Face
tokenizer.json with a chat template, for LLMs (hf.py)."""

from speechlm.tokenizers.base import (
    BLANK,
    SOS_EOS,
    UNK,
    Tokenizer,
    load_tokenizer,
    tokenizer_from_dict,
)
from speechlm.tokenizers.char import SPACE, CharTokenizer
from speechlm.tokenizers.hf import HFTokenizer
from speechlm.tokenizers.multitask import MultitaskVocabulary
from speechlm.tokenizers.sentencepiece import (
    MultitaskSentencePieceTokenizer,
    SentencePieceTokenizer,
)
from speechlm.tokenizers.whisper import WhisperTokenizer
from speechlm.tokenizers.word import WordTokenizer

__all__ = [
    "BLANK",
    "SOS_EOS",
    "SPACE",
    "UNK",
    "CharTokenizer",
    "HFTokenizer",
    "MultitaskSentencePieceTokenizer",
    "MultitaskVocabulary",
    "SentencePieceTokenizer",
    "Tokenizer",
    "WhisperTokenizer",
    "WordTokenizer",
    "load_tokenizer",
    "tokenizer_from_dict",
]
