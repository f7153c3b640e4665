"""New sentence pairs made from a training file's own sentences, for a teacher to score
(knowledge distillation: nnlab.tasks.similarity_teacher).

A small Siamese LSTM learns more from many pairs labelled by a stronger model than from the
4,500 human-scored pairs of SICK alone (Tang et al. 2019, "Distilling task-specific knowledge
from BERT into simple neural networks", did the same with word masking and sampling). The
pairs come in three kinds, all from training sentences only, so no validation or test text
is ever read:

- neighbours: two sentences that were each paired with a third one (SICK builds its pairs
  around shared sentences, so these span the whole range from paraphrase to contrast);
- word dropped: a sentence beside itself less one word (near paraphrases, scored high);
- random: two unrelated sentences (the low end of the scale).

The draw is seeded by the data, so a resumed or repeated run gets the same pairs.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict

from nnlab.data.pairs import PairData

SHARES = {"neighbours": 0.6, "word dropped": 0.25, "random": 0.15}  # of the pairs drawn


def extra_pairs(train: PairData, count: int, seed: str) -> PairData:
    """`count` new pairs (score 0: the teacher's to fill) of `train`'s sentences, none of
    them a pair of `train` itself (either order), each at most once."""
    rng = random.Random(hashlib.sha256(f"{seed}:{count}".encode()).hexdigest())
    sentences: dict[str, list[str]] = {}  # text -> tokens
    neighbours: dict[str, set[str]] = defaultdict(set)
    for (ta, tb), a, b in zip(train.texts, train.a, train.b, strict=True):
        sentences.setdefault(ta, a)
        sentences.setdefault(tb, b)
        neighbours[ta].add(tb)
        neighbours[tb].add(ta)
    texts = sorted(sentences)
    taken = {frozenset(p) for p in train.texts}
    out: list[tuple[str, str]] = []
    tokens: dict[str, list[str]] = dict(sentences)

    def add(x: str, y: str) -> None:
        key = frozenset((x, y))
        if x != y and key not in taken:
            taken.add(key)
            out.append((x, y))

    # each sentence with 2+ partners, and its partners, sorted: the draw is reproducible
    hubs = {t: sorted(neighbours[t]) for t in texts if len(neighbours[t]) >= 2}
    hub_texts = list(hubs)
    share_so_far = 0.0
    for kind, share in SHARES.items():  # a kind that runs short leaves its share to the next
        share_so_far += share
        goal = count if kind == "random" else round(count * share_so_far)
        tries = 0
        while len(out) < goal and tries < 20 * count:
            tries += 1
            if kind == "neighbours" and hubs:
                x, y = rng.sample(hubs[rng.choice(hub_texts)], 2)
                add(x, y)
            elif kind == "word dropped":
                text = rng.choice(texts)
                words = tokens[text]
                if len(words) < 3:
                    continue
                drop = rng.randrange(len(words))
                kept = words[:drop] + words[drop + 1:]
                shorter = " ".join(kept)
                tokens.setdefault(shorter, kept)
                add(text, shorter)
            else:
                add(rng.choice(texts), rng.choice(texts))
    return PairData(f"{train.path} (+{len(out)} pairs for a teacher)", [tokens[x] for x, _ in out],
                    [tokens[y] for _, y in out], [0.0] * len(out), train.score_range, train.layout,
                    [0] * len(out), out)
