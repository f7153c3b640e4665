"""Tag schemes for sequence labelling: BIO (IOB2), BIOES and the binary 0/1 scheme.

Everything downstream works on *spans* (start, end exclusive, type): files are read into
spans with conlleval's chunking rules, the model is trained on whichever encoding
(`bio` or `bioes`) suits it, and metrics compare span sets. So a BIOES file, a BIO file
and a binary file of the same keyphrases give the same gold spans.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

SCHEMES = ("bio", "bioes", "binary")
ENCODINGS = ("bio", "bioes")


class Span(NamedTuple):
    start: int  # first token
    end: int  # one past the last token
    type: str


@functools.cache  # a few distinct tags, split for every token of every evaluation
def split_tag(tag: str) -> tuple[str, str]:
    """`B-Material` -> ("B", "Material"); `O` -> ("O", ""). Untyped `B` -> ("B", "")."""
    if tag == "O":
        return "O", ""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def detect_scheme(tags: set[str]) -> str | None:
    """The scheme a set of tags is written in, or None when it is none of them."""
    if tags and tags <= {"0", "1"}:
        return "binary"
    prefixes = set()
    for tag in tags:
        prefix, _ = split_tag(tag)
        if prefix not in ("O", "B", "I", "E", "S"):
            return None
        prefixes.add(prefix)
    return "bioes" if prefixes & {"E", "S"} else "bio"


def spans_from_tags(tags: list[str], scheme: str) -> tuple[list[Span], list[int]]:
    """Spans as conlleval (and seqeval's default mode) reads them, plus the positions where a
    span had no proper opening (`I-X` after `O` or after another type), which conlleval
    silently treats as a `B-X`. For the binary scheme, each run of 1s is one `KEY` span."""
    if scheme == "binary":
        tags = ["O" if t == "0" else ("I-KEY" if i and tags[i - 1] == "1" else "B-KEY")
                for i, t in enumerate(tags)]
    spans: list[Span] = []
    repaired: list[int] = []
    start: int | None = None
    prev_prefix, prev_type = "O", ""
    for i, tag in enumerate([*tags, "O"]):
        if tag == "O" and prev_prefix == "O":  # outside a span: nothing ends, nothing starts
            continue
        prefix, kind = split_tag(tag)
        if start is not None and _chunk_ends(prev_prefix, prefix, prev_type, kind):
            spans.append(Span(start, i, prev_type))
            start = None
        if _chunk_starts(prev_prefix, prefix, prev_type, kind):
            start = i
            if prefix in ("I", "E") and i < len(tags):
                repaired.append(i)
        prev_prefix, prev_type = prefix, kind
    return spans, repaired


def _chunk_ends(prev: str, cur: str, prev_type: str, cur_type: str) -> bool:
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and cur in ("B", "S", "O"):
        return True
    return prev != "O" and prev_type != cur_type


def _chunk_starts(prev: str, cur: str, prev_type: str, cur_type: str) -> bool:
    if cur in ("B", "S"):
        return True
    if cur in ("I", "E") and prev in ("E", "S", "O"):
        return True
    return cur != "O" and prev_type != cur_type


def tags_from_spans(spans: list[Span], length: int, encoding: str) -> list[str]:
    """Encode non-overlapping spans as BIO or BIOES tags."""
    tags = ["O"] * length
    for s in spans:
        if encoding == "bioes" and s.end - s.start == 1:
            tags[s.start] = f"S-{s.type}"
            continue
        tags[s.start] = f"B-{s.type}"
        for i in range(s.start + 1, s.end):
            tags[i] = f"I-{s.type}"
        if encoding == "bioes":
            tags[s.end - 1] = f"E-{s.type}"
    return tags


def tag_set(types: list[str], encoding: str) -> list[str]:
    """All tags of an encoding over `types`, `O` first (index 0 pads nothing: masks do)."""
    prefixes = ("B", "I") if encoding == "bio" else ("B", "I", "E", "S")
    return ["O", *(f"{p}-{t}" for t in sorted(types) for p in prefixes)]


def allowed_transitions(tags: list[str], encoding: str
                        ) -> tuple[list[list[bool]], list[bool], list[bool]]:
    """Which tag may follow which, and which may start and end a sequence, for `encoding`.

    BIO: `I-X` only after `B-X` or `I-X`. BIOES also: after `B-X`/`I-X` only `I-X`/`E-X`;
    `I-X`/`E-X` only after `B-X`/`I-X`; a sequence cannot start inside a span nor end inside one.
    """
    parsed = [split_tag(t) for t in tags]

    def inside(p: str) -> bool:  # the previous tag leaves a span open
        return encoding == "bioes" and p in ("B", "I")

    def ok(a: tuple[str, str], b: tuple[str, str]) -> bool:
        (pa, ta), (pb, tb) = a, b
        if pb in ("I", "E"):
            return pa in ("B", "I") and ta == tb
        return not inside(pa)

    transitions = [[ok(a, b) for b in parsed] for a in parsed]
    start = [p not in ("I", "E") for p, _ in parsed]
    end = [not inside(p) for p, _ in parsed]
    return transitions, start, end
