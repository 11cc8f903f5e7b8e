"""Text <-> token ids in ESPnet's token-list layout: <blank>=0, <unk>=1, ..., <sos/eos>=last."""

from speechlm.tokenizers.base import (
    BLANK,
    SOS_EOS,
    UNK,
    Tokenizer,
    load_tokenizer,
    tokenizer_from_dict,
)
from speechlm.tokenizers.char import SPACE, CharTokenizer
from speechlm.tokenizers.sentencepiece import SentencePieceTokenizer
from speechlm.tokenizers.word import WordTokenizer

__all__ = [
    "BLANK",
    "SOS_EOS",
    "SPACE",
    "UNK",
    "CharTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "WordTokenizer",
    "load_tokenizer",
    "tokenizer_from_dict",
]
