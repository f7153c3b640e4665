"""Word and character vocabularies built from training data, saved with the run.

Index 0 is padding and index 1 the unknown token in both, so a saved run maps new text the
same way at prediction time. Words can be lower-cased (GloVe 6B is); characters never are,
since capitalisation is what character features are for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

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
    def from_dict(cls, raw: dict) -> Vocab:
        return cls(list(raw["items"]), bool(raw["lowercase"]), int(raw.get("trained", 0)))
