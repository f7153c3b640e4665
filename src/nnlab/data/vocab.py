"""Word and character vocabularies built from training data, saved with the run.

Index 0 is padding and index 1 the unknown token in both, so a saved run maps new text the
same way at prediction time. Words can be lower-cased (GloVe 6B is); characters never are,
since capitalisation is what character features are for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from nnlab.errors import NnlabError

PAD, UNK = "<pad>", "<unk>"


@dataclass
class Vocab:
    items: list[str]  # index -> item; items[0] is PAD, items[1] is UNK
    lowercase: bool = False
    trained: int = 0  # items[:trained] come from the training data; later ones only from `extra`

    def __post_init__(self) -> None:
        self.index = {item: i for i, item in enumerate(self.items)}
        if not self.trained:
            self.trained = len(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def key(self, item: str) -> str:
        return item.lower() if self.lowercase else item

    def lookup(self, items: Iterable[str]) -> list[int]:
        return [self.index.get(self.key(x), 1) for x in items]

    def coverage(self, items: Iterable[str]) -> float:
        """Fraction of `items` (with repeats) that are known."""
        seen = [self.key(x) in self.index for x in items]
        return sum(seen) / max(len(seen), 1)

    @classmethod
    def build(cls, items: Iterable[str], min_count: int = 1, lowercase: bool = False,
              extra: Iterable[str] = ()) -> Vocab:
        """Items seen at least `min_count` times, most frequent first, then `extra` items
        (e.g. the most frequent words of pretrained vectors) not already in."""
        counts = Counter(x.lower() if lowercase else x for x in items)
        kept = [x for x, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                if c >= min_count]
        known = set(kept)
        added = [x for x in dict.fromkeys(extra) if x not in known]
        return cls([PAD, UNK, *kept, *added], lowercase, 2 + len(kept))

    def to_dict(self) -> dict:
        return {"items": self.items, "lowercase": self.lowercase, "trained": self.trained}

    @classmethod
    def from_dict(cls, raw: dict, where: str = "config.json: vocabulary") -> Vocab:
        """A saved vocabulary, checked: a hand-edited or damaged run config is one line, not
        a TypeError deep in tokenising (items must be strings, flags of their own types)."""
        items = raw.get("items") if isinstance(raw, dict) else None
        if not isinstance(items, list) or len(items) < 2 or not all(isinstance(x, str) for x in items):
            bad = next((x for x in items if not isinstance(x, str)), None) if isinstance(items, list) \
                else items
            raise NnlabError(f"{where}: items must be a list of at least 2 strings (found {bad!r:.60})")
        lowercase, trained = raw.get("lowercase", False), raw.get("trained", 0)
        if not isinstance(lowercase, bool) or isinstance(trained, bool) or not isinstance(trained, int) \
                or not 0 <= trained <= len(items):
            raise NnlabError(f"{where}: lowercase must be true/false and trained a count up to "
                             f"{len(items)} (found {lowercase!r:.20}, {trained!r:.20})")
        return cls(list(items), lowercase, trained)
