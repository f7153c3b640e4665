"""The CRF against brute-force enumeration of every tag sequence, and against pytorch-crf."""

from __future__ import annotations

import itertools

import pytest
import torch

from nnlab.data.tags import allowed_transitions, tag_set
from nnlab.models.crf import CRF


def random_crf(num_tags: int, seed: int, constrained_tags: list[str] | None = None) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(num_tags, *(allowed_transitions(constrained_tags, "bio") if constrained_tags
                          else (None, None, None)))
    with torch.no_grad():  # bigger than the initial +-0.1, so paths really differ
        for p in crf.parameters():
            p.normal_(0, 1)
    return crf


def brute_force(crf: CRF, emissions: torch.Tensor, length: int):
    """log Z, best path and every path's score for one sequence (emissions (T, N))."""
    start, trans, end = crf._scores()
    scores = {}
    for path in itertools.product(range(crf.num_tags), repeat=length):
        s = start[path[0]] + emissions[0, path[0]] + end[path[-1]]
        for t in range(1, length):
            s = s + trans[path[t - 1], path[t]] + emissions[t, path[t]]
        scores[path] = s
    values = torch.stack(list(scores.values()))
    return torch.logsumexp(values, 0), max(scores, key=lambda p: scores[p].item()), scores


@pytest.mark.parametrize("num_tags,seed", [(2, 0), (3, 1), (4, 2), (5, 3)])
def test_partition_score_and_viterbi_match_enumeration(num_tags, seed):
    crf = random_crf(num_tags, seed)
    lengths = [4, 1, 3, 2]
    emissions = torch.randn(len(lengths), 4, num_tags)
    mask = torch.arange(4).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    log_z = crf.log_partition(emissions, mask)
    paths, best_scores = crf.decode(emissions, mask)
    for b, n in enumerate(lengths):
        want_z, want_path, scores = brute_force(crf, emissions[b], n)
        torch.testing.assert_close(log_z[b], want_z, rtol=1e-5, atol=1e-5)
        assert tuple(paths[b, :n].tolist()) == want_path
        assert paths[b, n:].eq(0).all()  # padding gets the pad tag
        torch.testing.assert_close(best_scores[b], scores[want_path], rtol=1e-5, atol=1e-5)
        # the score of an arbitrary path, padded with junk past the end
        path = list(scores)[len(scores) // 2]
        tags = torch.tensor([*path, *([num_tags - 1] * (4 - n))]).unsqueeze(0)
        got = crf.score(emissions[b : b + 1], tags, mask[b : b + 1])
        torch.testing.assert_close(got[0], scores[path], rtol=1e-5, atol=1e-5)


def test_constraints_restrict_both_partition_and_decoding_to_valid_bio():
    tags = tag_set(["A", "B"], "bio")  # O, B-A, I-A, B-B, I-B
    crf = random_crf(len(tags), 7, tags)
    allowed, start_ok, _ = allowed_transitions(tags, "bio")
    emissions = torch.randn(1, 4, len(tags)) * 3
    emissions[0, :, 2] += 5  # push hard towards I-A everywhere: invalid at the start
    mask = torch.ones(1, 4, dtype=torch.bool)

    def valid(path) -> bool:
        return start_ok[path[0]] and all(allowed[a][b] for a, b in itertools.pairwise(path))

    _, _, scores = brute_force(crf, emissions[0], 4)
    valid_scores = {p: s for p, s in scores.items() if valid(p)}
    want_z = torch.logsumexp(torch.stack(list(valid_scores.values())), 0)
    torch.testing.assert_close(crf.log_partition(emissions, mask)[0], want_z, rtol=1e-5, atol=1e-4)
    best = tuple(crf.decode(emissions, mask)[0][0].tolist())
    assert valid(best)
    assert best == max(valid_scores, key=lambda p: valid_scores[p].item())
    assert best[0] != 2  # I-A cannot open the sequence


def test_nll_is_the_negative_log_probability():
    crf = random_crf(3, 4)
    emissions = torch.randn(1, 3, 3)
    tags = torch.tensor([[2, 0, 1]])
    log_z, _, scores = brute_force(crf, emissions[0], 3)
    torch.testing.assert_close(crf(emissions, tags), log_z - scores[(2, 0, 1)], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_matches_pytorch_crf_on_random_inputs(seed):
    torchcrf = pytest.importorskip("torchcrf")
    gen = torch.Generator().manual_seed(seed)
    num_tags = 3 + seed
    batch, length = 6, 30
    ours = CRF(num_tags)
    ref = torchcrf.CRF(num_tags, batch_first=True)
    ref.load_state_dict({k: v for k, v in ours.state_dict().items() if "penalty" not in k})
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    emissions = torch.randn(batch, length, num_tags, generator=gen, requires_grad=True)
    tags = torch.randint(0, num_tags, (batch, length), generator=gen)
    for reduction in ("none", "sum", "mean", "token_mean"):
        torch.testing.assert_close(ours(emissions, tags, mask, reduction),
                                   -ref(emissions, tags, mask, reduction), rtol=1e-5, atol=1e-4)
    # gradients too: what training actually uses
    ours(emissions, tags, mask, "sum").backward()
    grad_ours = emissions.grad.clone()
    emissions.grad = None
    (-ref(emissions, tags, mask, "sum")).backward()
    torch.testing.assert_close(grad_ours, emissions.grad, rtol=1e-4, atol=1e-5)
    paths = ours.decode(emissions, mask)[0]
    for b, want in enumerate(ref.decode(emissions, mask)):
        assert paths[b, : len(want)].tolist() == want


def test_bad_shapes_are_value_errors():
    crf = CRF(3)
    with pytest.raises(ValueError, match="emissions must be"):
        crf.decode(torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="first time step"):
        crf(torch.randn(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), torch.tensor([[False, True]]))
