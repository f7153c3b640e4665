"""CoNLL-style tagged text: `token<TAB or space>tag` per line, a blank line between sequences.

Extra columns between token and tag (CoNLL-2003's POS and chunk columns) are ignored;
`-DOCSTART-` lines are skipped. The tag scheme (BIO, BIOES or binary 0/1) is detected from
the whole file unless given. Every error names the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nnlab.data.split import holdout
from nnlab.data.tags import SCHEMES, Span, detect_scheme, spans_from_tags, split_tag
from nnlab.errors import NnlabError

UNTYPED = "KEY"  # the type given to untyped tags (`B`, `I`) and to binary and collapsed spans


@dataclass
class TaggedText:
    """Token sequences with their gold spans, read from one file (or carved from one)."""

    path: str
    tokens: list[list[str]]
    spans: list[list[Span]]
    lines: list[int]  # line number of each sequence's first token, for messages
    scheme: str  # the scheme the file was written in
    repaired: int = 0  # spans opened by `I-X` with no `B-X`, read as conlleval reads them
    types: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)

    def num_tokens(self) -> int:
        return sum(len(t) for t in self.tokens)

    def subset(self, indices: list[int], path: str | None = None) -> TaggedText:
        return TaggedText(path or self.path, [self.tokens[i] for i in indices],
                          [self.spans[i] for i in indices], [self.lines[i] for i in indices],
                          self.scheme, self.repaired, self.types)


def read_conll(path: str | Path, scheme: str = "auto", collapse_types: bool = False,
               invalid: str = "repair") -> TaggedText:
    """Read a file; `invalid` is `repair` (conlleval's reading, counted) or `error`."""
    path = Path(path)
    if scheme not in ("auto", *SCHEMES):
        raise NnlabError(f"data.tag_scheme: unknown scheme {scheme!r} (auto, {', '.join(SCHEMES)})")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NnlabError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise NnlabError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    sequences: list[tuple[list[str], list[str], list[int]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("-DOCSTART-"):
            if tokens:
                sequences.append((tokens, tags, lines))
                tokens, tags, lines = [], [], []
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 2 or not fields[-1].strip():
            raise NnlabError(f"{path}:{number}: expected 'token<TAB>tag', found no tag in {raw!r}")
        tokens.append(fields[0].strip())
        tags.append(fields[-1].strip())
        lines.append(number)
    if tokens:
        sequences.append((tokens, tags, lines))
    if not sequences:
        raise NnlabError(f"{path}: no tagged tokens (an empty file?)")
    scheme = _check_scheme(path, sequences, scheme)
    result = TaggedText(str(path), [], [], [], scheme)
    types: set[str] = set()
    for toks, tgs, lns in sequences:
        spans, repaired = spans_from_tags(tgs, scheme)
        if repaired and invalid == "error":
            at = repaired[0]
            raise NnlabError(f"{path}:{lns[at]}: {tgs[at]!r} opens no span here (after "
                             f"{tgs[at - 1] if at else 'the start'!r}); fix the file or set "
                             "data.invalid_tags='repair'")
        result.repaired += len(repaired)
        spans = [Span(s.start, s.end, UNTYPED if collapse_types or not s.type else s.type)
                 for s in spans]
        types.update(s.type for s in spans)
        result.tokens.append(toks)
        result.spans.append(spans)
        result.lines.append(lns[0])
    result.types = sorted(types) or [UNTYPED]
    return result


def _check_scheme(path: Path, sequences, scheme: str) -> str:
    found = {t for _, tags, _ in sequences for t in tags}
    detected = detect_scheme(found)
    wanted = detected if scheme == "auto" else scheme
    if wanted is not None and (wanted == detected or (wanted == "bioes" and detected == "bio")):
        return wanted
    # name the first tag that does not belong to the scheme
    for _, tags, lines in sequences:
        for tag, number in zip(tags, lines, strict=True):
            if not _fits(tag, wanted):
                hint = "BIO, BIOES or binary 0/1" if wanted is None else wanted.upper()
                raise NnlabError(f"{path}:{number}: tag {tag!r} is not in the {hint} scheme")
    raise NnlabError(f"{path}: tags are not in the {scheme} scheme")  # pragma: no cover


def _fits(tag: str, scheme: str | None) -> bool:
    if scheme == "binary":
        return tag in ("0", "1")
    prefix, _ = split_tag(tag)
    if scheme == "bio":
        return prefix in ("O", "B", "I")
    return prefix in ("O", "B", "I", "E", "S")


# -- finding and splitting files ------------------------------------------------------------
SPLIT_NAMES = {"train": ("train",), "val": ("valid", "dev", "val"), "test": ("test",)}
SUFFIXES = ("", ".txt", ".conll", ".tsv", ".bio", ".iob", ".iob2", ".bioes")


def find_split_files(folder: Path) -> dict[str, Path]:
    """`train`/`valid`/`dev`/`test` files in a folder, by their usual names."""
    found: dict[str, Path] = {}
    for split, names in SPLIT_NAMES.items():
        for name in names:
            for suffix in SUFFIXES:
                candidate = folder / f"{name}{suffix}"
                if candidate.is_file() and split not in found:
                    found[split] = candidate
    return found


def carve_validation(data: TaggedText, size: float, seed: int) -> tuple[TaggedText, TaggedText]:
    """Hold out whole sequences (documents) for validation: a fraction (< 1) or a count."""
    keep, held = holdout(len(data), size, seed, data.path, "sequences")
    return data.subset(keep), data.subset(held, f"{data.path} (held-out {len(held)})")


SENTENCE_ENDS = frozenset({".", "?", "!"})


def split_sentences(data: TaggedText) -> TaggedText:
    """Each sequence cut after sentence-final punctuation, never inside a span.

    For training only: many short sequences give more updates per epoch than a few long
    documents, and the CRF's per-step loop runs over the batch's longest sequence. Evaluation
    always uses whole documents.
    """
    out = TaggedText(data.path, [], [], [], data.scheme, data.repaired, data.types)
    for tokens, spans, line in zip(data.tokens, data.spans, data.lines, strict=True):
        inside = set()
        for s in spans:
            inside.update(range(s.start, s.end - 1))  # a cut after these would split a span
        cuts = [i + 1 for i, t in enumerate(tokens[:-1]) if t in SENTENCE_ENDS and i not in inside]
        for a, b in zip([0, *cuts], [*cuts, len(tokens)], strict=True):
            out.tokens.append(tokens[a:b])
            out.spans.append([Span(s.start - a, s.end - a, s.type) for s in spans
                              if a <= s.start and s.end <= b])
            out.lines.append(line + a)
    return out
