"""Scored sentence pairs: SICK, the STS Benchmark, or any TSV with a column mapping.

Each format carries its score range (SICK relatedness 1-5, STS 0-5), so models map their
output into the range of the data they were trained on instead of a hard-coded one.
Every error names the file and line.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

from nnlab.data.tokenize import tokenize
from nnlab.errors import NnlabError, short

# layout name -> (required header columns or None for headerless, a column, b column,
#                 score column, score range)
SICK = ("sick", ("pair_ID", "sentence_A", "sentence_B", "relatedness_score"),
        "sentence_A", "sentence_B", "relatedness_score", (1.0, 5.0))
SICK_LABEL = "entailment_judgment"  # SICK's other annotation: ENTAILMENT, CONTRADICTION, NEUTRAL
STS_RANGE = (0.0, 5.0)
STS_COLUMNS = 7  # genre, file, year, id, score, sentence 1, sentence 2 (sometimes more after)


@dataclass
class PairData:
    path: str
    a: list[list[str]]  # tokens of the first sentences
    b: list[list[str]]
    scores: list[float]
    score_range: tuple[float, float]
    layout: str
    lines: list[int] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # SICK's entailment judgments, when read

    def __len__(self) -> int:
        return len(self.scores)

    def subset(self, indices: list[int]) -> PairData:
        return PairData(self.path, [self.a[i] for i in indices], [self.b[i] for i in indices],
                        [self.scores[i] for i in indices], self.score_range, self.layout,
                        [self.lines[i] for i in indices], [self.texts[i] for i in indices],
                        [self.labels[i] for i in indices] if self.labels else [])

    def fingerprint(self) -> str:
        return hashlib.sha256(Path(self.path).read_bytes()).hexdigest()[:16]


def words(text: str) -> list[str]:
    return [t.text for t in tokenize(text)]


def read_pairs(path: str | Path, layout: str = "auto", columns: tuple[str, str, str] | None = None,
               score_range: tuple[float, float] | None = None) -> PairData:
    """Read a pair file. `layout`: auto | sick | sts | tsv (`columns` = names of sentence A,
    sentence B and score in the header; `score_range` then required)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise NnlabError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise NnlabError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise NnlabError(f"{path}: cannot read ({e.strerror})") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise NnlabError(f"{path}: empty file (expected a header line first)")
    header = lines[0].split("\t")
    if layout == "auto":
        layout = "sick" if set(SICK[1]) <= set(header) else ("tsv" if columns else "sts")
    if layout == "sick":
        missing = [c for c in SICK[1] if c not in header]
        if missing:
            raise NnlabError(f"{path}:1: header has no {missing[0]!r} column (SICK header: "
                             f"{' '.join(SICK[1])})")
        spec = (header.index(SICK[2]), header.index(SICK[3]), header.index(SICK[4]))
        label = header.index(SICK_LABEL) if SICK_LABEL in header else None
        return _rows(path, lines[1:], 2, len(header), spec, score_range or SICK[5], "sick", label)
    if layout == "sts":
        return _rows(path, lines, 1, None, (5, 6, 4), score_range or STS_RANGE, "sts")
    if layout == "tsv":
        if not columns or score_range is None:
            raise NnlabError("data.pair_columns and data.score_range: both needed for a generic TSV")
        missing = [c for c in columns if c not in header]
        if missing:
            raise NnlabError(f"{path}:1: header has no {missing[0]!r} column "
                             f"(columns: {', '.join(header)})")
        spec = tuple(header.index(c) for c in columns)
        return _rows(path, lines[1:], 2, len(header), spec, score_range, "tsv")  # type: ignore[arg-type]
    raise NnlabError(f"data.pair_layout: unknown layout {layout!r} (auto, sick, sts, tsv)")


def _rows(path: Path, lines: list[str], first: int, width: int | None, spec: tuple[int, int, int],
          score_range: tuple[float, float], layout: str, label: int | None = None) -> PairData:
    lo, hi = score_range
    if not lo < hi:
        raise NnlabError(f"data.score_range: {score_range} is not a range")
    data = PairData(str(path), [], [], [], (float(lo), float(hi)), layout)
    ia, ib, iscore = spec
    # STS files quote nothing and hold stray quote characters: split on tabs, no quoting (and
    # no csv module, whose field size limit of 131,072 characters is no limit of the format)
    for number, raw in enumerate(lines, start=first):
        if not raw.strip():
            continue
        fields = raw.split("\t")
        need = width if width is not None else STS_COLUMNS
        if (width is not None and len(fields) != width) or len(fields) < need:
            raise NnlabError(f"{path}:{number}: {len(fields)} columns, expected {need}")
        try:
            score = float(fields[iscore])
        except ValueError:
            raise NnlabError(f"{path}:{number}: score {short(fields[iscore], 40)!r} is not a number"
                             ) from None
        if not (math.isfinite(score) and lo <= score <= hi):
            raise NnlabError(f"{path}:{number}: score {score:g} is outside [{lo:g}, {hi:g}]")
        a, b = fields[ia].strip(), fields[ib].strip()
        for name, sentence in (("first", a), ("second", b)):
            if not words(sentence):
                raise NnlabError(f"{path}:{number}: the {name} sentence is empty")
        data.a.append(words(a))
        data.b.append(words(b))
        data.scores.append(score)
        data.lines.append(number)
        data.texts.append((a, b))
        if label is not None:
            if not fields[label].strip():
                raise NnlabError(f"{path}:{number}: the {SICK_LABEL} field is empty")
            data.labels.append(fields[label].strip())
    if not data.scores:
        raise NnlabError(f"{path}: no sentence pairs")
    return data


# -- finding files ----------------------------------------------------------------------------
PAIR_NAMES = {
    "train": ("SICK_train.txt", "sts-train.csv", "sts-train.tsv", "train.tsv", "train.txt"),
    "val": ("SICK_trial.txt", "sts-dev.csv", "sts-dev.tsv", "dev.tsv", "valid.tsv", "dev.txt"),
    "test": ("SICK_test_annotated.txt", "SICK_test.txt", "sts-test.csv", "sts-test.tsv",
             "test.tsv", "test.txt"),
}


def find_pair_files(folder: Path) -> dict[str, Path]:
    found = {}
    for split, names in PAIR_NAMES.items():
        for name in names:
            if (folder / name).is_file():
                found[split] = folder / name
                break
    return found
