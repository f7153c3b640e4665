"""Muon on convolution filters (nnlab.muon): the orthogonalisation, the step, the SGD groups."""

import pytest
import torch
from torch import nn

from nnlab.config import OptimConfig
from nnlab.errors import NnlabError
from nnlab.muon import Muon, orthogonalize
from nnlab.optim import build_optimizer, param_groups


@pytest.mark.parametrize("shape", [(32, 144), (144, 32), (48, 48)])
def test_orthogonalize_evens_out_the_singular_values(shape):
    torch.manual_seed(0)
    rows, cols = shape
    k = min(shape)
    u, _ = torch.linalg.qr(torch.randn(rows, k))
    v, _ = torch.linalg.qr(torch.randn(cols, k))
    spread = torch.logspace(0, -2, k)  # condition number 100
    g = u @ torch.diag(spread) @ v.T
    out = orthogonalize(g, steps=5).float()
    assert out.shape == g.shape
    s = torch.linalg.svdvals(out)
    assert s.min() > 0.5 and s.max() < 1.5  # Jordan's coefficients: about U(0.7, 1.2)
    # the same singular vectors: out is (close to) u v^T
    assert torch.nn.functional.cosine_similarity((u @ v.T).flatten(), out.flatten(), dim=0) > 0.95


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, bias=False)
        self.norm = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):  # (N, 3, 6, 6) -> (N, 4)
        return self.head(self.norm(self.conv(x)).amax(dim=(2, 3)))


def _grads(net: nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    net.zero_grad()
    net(torch.randn(5, 3, 6, 6)).square().mean().backward()


def test_other_groups_take_torchs_sgd_step_and_filters_the_muon_step():
    cfg = OptimConfig(name="muon", lr=0.1, momentum=0.9, weight_decay=0.01, bias_decay=True,
                      norm_lr_scale=4.0, muon_lr=0.2, muon_momentum=0.6)
    torch.manual_seed(0)
    a = Net()
    b = Net()
    b.load_state_dict(a.state_dict())
    muon = build_optimizer(cfg, a)
    assert isinstance(muon, Muon)
    sgd_groups = [g for g in param_groups(b, cfg) if not g.get("muon")]
    sgd = torch.optim.SGD(sgd_groups, lr=0.1, momentum=0.9, nesterov=True)
    buf = torch.zeros_like(a.conv.weight)
    for step in range(3):
        with torch.no_grad():
            b.conv.weight.copy_(a.conv.weight)  # b's filters follow a's; SGD leaves them alone
        _grads(a, step)
        _grads(b, step)
        w, g = a.conv.weight.detach().clone(), a.conv.weight.grad.clone()
        muon.step()
        sgd.step()
        buf = 0.6 * buf + g
        w = w * (8 ** 0.5 / w.norm())
        expected = w - 0.2 * orthogonalize((g + 0.6 * buf).reshape(8, -1)).float().view_as(w)
        torch.testing.assert_close(a.conv.weight, expected, rtol=0, atol=1e-6)
    for name in ("norm.weight", "norm.bias", "head.weight", "head.bias"):
        torch.testing.assert_close(a.get_parameter(name), b.get_parameter(name))


def test_muon_state_round_trips():
    cfg = OptimConfig(name="muon", lr=0.1, momentum=0.9)
    net = Net()
    opt = build_optimizer(cfg, net)
    _grads(net, 0)
    opt.step()
    again = build_optimizer(cfg, Net())
    again.load_state_dict(opt.state_dict())
    assert [g["muon"] for g in again.param_groups] == [g["muon"] for g in opt.param_groups]
    assert again.state_dict()["state"].keys() == opt.state_dict()["state"].keys()


def test_muon_refuses_a_model_without_convolutions():
    with pytest.raises(NnlabError, match=r"optim\.name=muon"):
        build_optimizer(OptimConfig(name="muon"), nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1)))
