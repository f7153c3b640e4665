"""A tokenizer for raw text at prediction time, with character offsets.

Penn-Treebank-like, as the keyphrase corpora are tokenised: punctuation split off,
hyphenated words kept whole (`real-time`), clitics split (`do n't`, `John 's`). Where the
training vocabulary uses PTB escapes (`-LRB-` for `(`, `` `` ``/`''` for double quotes),
the same escapes are applied, so the model sees tokens as it saw them in training; offsets
always point into the original text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TOKEN = re.compile(
    r"""
      \d+(?:[.,]\d+)+           # numbers with separators: 3.14, 1,000
    | \w+(?=n't\b)              # "do" of "don't"
    | n't\b
    | '(?:s|re|ve|ll|d|m)\b     # clitics
    | \w+(?:-\w+)*              # words, hyphenated words
    | \.\.\.|--|``|''           # multi-character punctuation
    | \S                        # any other single character
    """,
    re.VERBOSE | re.IGNORECASE,
)

PTB_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}


@dataclass(frozen=True)
class Token:
    text: str  # as the model sees it (escaped where training data was)
    start: int  # character offsets into the original text
    end: int


@dataclass(frozen=True)
class TokenizerStyle:
    """Conventions read off the training tokens."""

    ptb_brackets: bool = False
    ptb_quotes: bool = False

    @classmethod
    def from_tokens(cls, tokens: set[str]) -> TokenizerStyle:
        return cls(ptb_brackets="-LRB-" in tokens or "-RRB-" in tokens,
                   ptb_quotes="``" in tokens)


def tokenize(text: str, style: TokenizerStyle = TokenizerStyle()) -> list[Token]:
    tokens = []
    open_quote = True
    for m in TOKEN.finditer(text):
        word = m.group()
        if style.ptb_brackets and word in PTB_BRACKETS:
            word = PTB_BRACKETS[word]
        elif style.ptb_quotes and word == '"':
            word = "``" if open_quote else "''"
            open_quote = not open_quote
        tokens.append(Token(word, m.start(), m.end()))
    return tokens


def count_tokens(text: str) -> int:
    """How many tokens `tokenize` makes of `text`, without building them (a served request's
    cost is bounded by this before any model runs)."""
    return sum(1 for _ in TOKEN.finditer(text))
