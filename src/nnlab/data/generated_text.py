"""Built-in generated text data for the keyphrase and similarity tasks, in the real file formats.

With no real data at hand (a fresh machine, offline), `--data generated` writes these files
once into the cache and reads them back through the normal readers, so the demo and the
tests exercise exactly the code real data takes.

- Keyphrases (`train.txt`, `valid.txt`, CoNLL with B-KEY/I-KEY/O): abstracts made from
  templates. A keyphrase is a run of one or more modifiers closing on a head noun
  ("adaptive fuzzy controller"); the same heads and modifiers also occur outside
  keyphrases ("the controller is adaptive", "unlike earlier work on adaptive fuzzy
  controllers"), so a tagger must read the context, some words back. About 8% of the
  keyphrases are left untagged, like real annotators' misses: no model reaches 100%.
- Sentence pairs (`SICK_train.txt`, `SICK_trial.txt`, SICK's TSV): events (subject, verb,
  object, place) told with synonyms and different templates. Sentence B shares some slots
  with A; its relatedness score (1-5) drops with each slot that differs and with a
  negation, plus noise. Word overlap alone misleads (synonyms share no words), so a model
  has to learn which words mean the same.
"""

from __future__ import annotations

import random
from pathlib import Path

from nnlab.data.cache import kind_dir
from nnlab.fileio import atomic_write_text

VERSION = "v2"

# -- keyphrases -------------------------------------------------------------------------------
HEADS = ["network", "algorithm", "controller", "protocol", "database", "sensor", "model",
         "system", "filter", "scheduler", "classifier", "estimator", "architecture", "compiler",
         "interface", "signal", "channel", "graph", "kernel", "solver"]
MODIFIERS = ["neural", "adaptive", "fuzzy", "distributed", "linear", "wireless", "parallel",
             "robust", "optimal", "stochastic", "hybrid", "genetic", "real-time", "digital",
             "nonlinear", "sparse", "recursive", "embedded", "semantic", "multi-agent"]
GENERIC = ["method", "approach", "paper", "results", "performance", "problem", "work",
           "analysis", "experiments", "design", "framework", "study"]
VERBS = ["improves", "uses", "extends", "combines", "outperforms", "controls", "supports"]
ADJECTIVES = ["efficient", "simple", "new", "effective", "practical", "fast", "general"]


MISSED = 0.08  # the share of keyphrases left untagged, as annotators miss some


def _phrase(rng: random.Random) -> list[str]:
    mods = rng.sample(MODIFIERS, rng.choice([1, 1, 2, 2, 3]))
    return [*mods, rng.choice(HEADS)]


def _keyphrase_sentence(rng: random.Random) -> list[tuple[str, bool]]:
    """(word, is_key) pairs; True words form keyphrases (contiguous runs are one phrase)."""
    def key() -> list[tuple[str, bool | None]]:
        return [(w, None) for w in _phrase(rng)]  # None: key, tagged later (or missed)

    def other() -> list[tuple[str, bool | None]]:
        return [(w, False) for w in _phrase(rng)]  # a phrase that is not a keyphrase here

    def words(text: str) -> list[tuple[str, bool | None]]:
        return [(w, False) for w in text.split()]

    head, generic, adj = rng.choice(HEADS), rng.choice(GENERIC), rng.choice(ADJECTIVES)
    templates = [
        lambda: words("We propose the") + key() + words("for") + key() + words("."),
        lambda: words(f"The {head} {rng.choice(VERBS)} the") + key() + words("using") + key()
        + words("."),
        lambda: words(f"This {generic} describes") + key() + words("and") + key()
        + words(f"in a {adj} {generic} ."),
        lambda: words(f"Results show that the {head} is {rng.choice(MODIFIERS)} and {adj} ."),
        lambda: words(f"A {adj} {generic} based on") + key() + words("is presented ."),
        lambda: words(f"The {generic} of the {head} {rng.choice(VERBS)} our {generic} ."),
        lambda: key() + words(f"{rng.choice(VERBS)} the {head} ."),
        lambda: words(f"Our {head} is {adj} , {rng.choice(MODIFIERS)} and") + words(
            f"{rng.choice(MODIFIERS)} ."),
        # the same phrases outside keyphrases: only the words a few tokens back tell
        lambda: words("Unlike earlier work on") + other() + words(f", our {generic} is {adj} ."),
        lambda: words("We build on recent work on") + key() + words("."),
        lambda: words(f"Earlier work used a {rng.choice(MODIFIERS)} {generic} and") + other()
        + words(f", which is not {adj} ."),
        lambda: words(f"A {rng.choice(MODIFIERS)} {generic} for") + key() + words(
            f"is {adj} ."),
    ]
    sentence = rng.choice(templates)()
    # a whole phrase is kept or missed together: annotators miss phrases, not half-phrases
    out, i = [], 0
    while i < len(sentence):
        if sentence[i][1] is None:
            j = i
            while j < len(sentence) and sentence[j][1] is None:
                j += 1
            keep = rng.random() >= MISSED
            out += [(w, keep) for w, _ in sentence[i:j]]
            i = j
        else:
            out.append((sentence[i][0], bool(sentence[i][1])))
            i += 1
    out[0] = (out[0][0][0].upper() + out[0][0][1:], out[0][1])
    return out


def _conll_document(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(3, 6)):
        sentence = _keyphrase_sentence(rng)
        previous_key = False
        for word, is_key in sentence:
            tag = ("I-KEY" if previous_key else "B-KEY") if is_key else "O"
            lines.append(f"{word}\t{tag}")
            previous_key = is_key
    return "\n".join(lines)


# -- sentence pairs ---------------------------------------------------------------------------
SUBJECTS = [["man", "guy", "gentleman"], ["woman", "lady"], ["boy", "kid"], ["girl", "young girl"],
            ["dog", "puppy"], ["cat", "kitten"], ["chef", "cook"], ["player", "athlete"]]
VERB_OBJECTS = [
    (["playing", "strumming"], [["a guitar", "an acoustic guitar"], ["a piano", "a keyboard"]]),
    (["riding", "driving"], [["a bike", "a bicycle"], ["a horse", "a pony"]]),
    (["eating", "chewing"], [["an apple", "a piece of fruit"], ["a sandwich", "some bread"]]),
    (["throwing", "tossing"], [["a ball", "a frisbee"], ["a stick", "a branch"]]),
    (["cutting", "slicing"], [["an onion", "a vegetable"], ["a tomato", "a red tomato"]]),
    (["carrying", "holding"], [["a bag", "a backpack"], ["a box", "a package"]]),
]
PLACES = [["in the park", "outdoors on the grass"], ["on the beach", "by the sea"],
          ["in the kitchen", "inside the house"], ["on the street", "on the road"],
          ["in the snow", "on a snowy field"]]
# how much each differing slot costs in relatedness, and a negation
SLOT_COST = {"place": 0.6, "object": 1.0, "verb": 1.3, "subject": 1.1}
NEGATION_COST = 1.2


def _event(rng: random.Random) -> dict[str, int]:
    verb = rng.randrange(len(VERB_OBJECTS))
    return {"subject": rng.randrange(len(SUBJECTS)), "verb": verb,
            "object": rng.randrange(len(VERB_OBJECTS[verb][1])), "place": rng.randrange(len(PLACES))}


def _tell(event: dict[str, int], rng: random.Random, negated: bool = False) -> str:
    verbs, objects = VERB_OBJECTS[event["verb"]]
    subject = rng.choice(SUBJECTS[event["subject"]])
    verb, obj = rng.choice(verbs), rng.choice(objects[event["object"]])
    place = rng.choice(PLACES[event["place"]])
    article = "An" if subject[0] in "aeiou" else "A"
    if negated:
        return rng.choice([f"There is no {subject} {verb} {obj} {place}",
                           f"{article} {subject} is not {verb} {obj} {place}"])
    return rng.choice([f"{article} {subject} is {verb} {obj} {place}",
                       f"{place[0].upper()}{place[1:]} , {article.lower()} {subject} is {verb} {obj}",
                       f"The {subject} is {verb} {obj} {place}"])


def _pair(rng: random.Random) -> tuple[str, str, float]:
    a = _event(rng)
    b = dict(a)
    changed = rng.sample(list(SLOT_COST), rng.choice([0, 0, 1, 1, 1, 2, 2, 3, 4]))
    for slot in changed:
        if slot == "verb":
            while b["verb"] == a["verb"]:
                b["verb"] = rng.randrange(len(VERB_OBJECTS))
            b["object"] = rng.randrange(len(VERB_OBJECTS[b["verb"]][1]))
        elif slot == "object":
            b["object"] = 1 - b["object"]  # every verb has two object groups
        else:
            options = SUBJECTS if slot == "subject" else PLACES
            while b[slot] == a[slot]:
                b[slot] = rng.randrange(len(options))
    negated = rng.random() < 0.15
    cost = sum(SLOT_COST[s] for s in changed) + (NEGATION_COST if negated else 0.0)
    score = min(5.0, max(1.0, 5.0 - cost + rng.gauss(0.0, 0.3)))
    return _tell(a, rng), _tell(b, rng, negated), round(score, 2)


# -- writing ----------------------------------------------------------------------------------
def _write_keyphrase(folder: Path) -> None:
    rng = random.Random(7)
    for name, n in (("train.txt", 500), ("valid.txt", 150)):
        atomic_write_text(folder / name, "\n\n".join(_conll_document(rng) for _ in range(n)) + "\n")


def _write_pairs(folder: Path) -> None:
    rng = random.Random(11)
    for name, n, start in (("SICK_train.txt", 3000, 1), ("SICK_trial.txt", 500, 5001)):
        rows = ["pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"]
        for i in range(n):
            a, b, score = _pair(rng)
            rows.append(f"{start + i}\t{a}\t{b}\t{score}\tNEUTRAL")
        atomic_write_text(folder / name, "\n".join(rows) + "\n")


WRITERS = {"keyphrase": _write_keyphrase, "similarity": _write_pairs}


def generated_text_folder(task: str) -> Path:
    """The folder of the task's generated files, written on first use (deterministic content)."""
    folder = kind_dir("generated") / f"{task}-{VERSION}"
    if not (folder / ".complete").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        WRITERS[task](folder)
        atomic_write_text(folder / ".complete", VERSION + "\n")
    return folder


def rebuilt_if_generated(path: str, task: str) -> str | None:
    """The task's generated folder, written anew, when `path` is one that was cleaned away
    (`nnlab cache clean`: every entry is rebuilt when missing); None for any other path."""
    folder = Path(path)
    if folder.exists() or folder.parent.name != "generated" or folder.name != f"{task}-{VERSION}":
        return None
    return str(generated_text_folder(task))
