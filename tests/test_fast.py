"""The `fast` recipe's parts: whitening init, alternating flips, TTA, param groups, lookahead."""

import json

import pytest
import torch
from torch import nn

from nnlab import models
from nnlab.config import OptimConfig
from nnlab.data.augment import alternating_flip, cutout, translate
from nnlab.optim import Lookahead, param_groups
from nnlab.runs import RunDir
from nnlab.tasks.image import tta_logits


def make_fast(**args):
    return models.create("fast", "image", args, in_channels=3, num_classes=10, image_size=(32, 32))


def test_whitening_decorrelates_patches():
    torch.manual_seed(0)
    mix = torch.randn(12, 12)
    x = (torch.randn(400, 12, 31, 31).permute(0, 2, 3, 1) @ mix).permute(0, 3, 1, 2)
    x = nn.functional.fold(x.reshape(400, 12, -1), (32, 32), 2)[:, :3]  # correlated pixels
    net = make_fast()
    net.init_from_data(x)
    out = net.whiten(x)[:, :12]  # (N, 12, 31, 31): one sign of each filter
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    cov = flat.T @ flat / flat.shape[0]
    off_diagonal = cov - torch.diag(cov.diagonal())
    assert off_diagonal.abs().max() < 0.05 * cov.diagonal().max()
    assert torch.allclose(net.whiten.weight[12:], -net.whiten.weight[:12])
    assert not net.whiten.weight.requires_grad


def test_whitening_bias_trains_only_first_epochs():
    net = make_fast(whiten_bias_epochs=2)
    net.set_epoch(2)
    assert net.whiten.bias.requires_grad
    net.set_epoch(3)
    assert not net.whiten.bias.requires_grad


def test_alternating_flip_sees_both_orientations_over_two_epochs():
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).reshape(2, 1, 2, 3)
    base = torch.tensor([True, False])
    odd, even = alternating_flip(x, base, 1), alternating_flip(x, base, 2)
    assert torch.equal(odd[0], x[0]) and torch.equal(odd[1], x[1].flip(-1))
    assert torch.equal(even[0], x[0].flip(-1)) and torch.equal(even[1], x[1])


def test_translate_moves_by_at_most_pad():
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 4, 4] = 1
    out = translate(x, torch.Generator().manual_seed(0), pad=2)
    ys, xs = torch.nonzero(out[:, 0] == 1, as_tuple=True)[1:]
    assert ys.min() >= 2 and ys.max() <= 6 and xs.min() >= 2 and xs.max() <= 6
    assert len(set(zip(ys.tolist(), xs.tolist(), strict=True))) > 5


def test_cutout_fills_one_square_per_image_inside_it():
    x = torch.rand(64, 3, 10, 10) + 1  # never equal to the fill
    fill = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    out = cutout(x, torch.Generator().manual_seed(0), 4, fill)
    filled = out == fill  # (N, 3, 10, 10)
    assert torch.equal(filled[:, 0], filled[:, 2])  # all channels of the same pixels
    assert (filled[:, 0].sum(dim=(1, 2)) == 16).all()
    rows = filled[:, 0].any(dim=2).float().argmax(dim=1)  # each image's top row
    assert len(set(rows.tolist())) > 3  # the square moves
    assert torch.equal(out[~filled], x[~filled])


def test_cutout_larger_than_the_images_is_refused(tmp_path, run_cli):
    r = run_cli("train", "image", "--model", "cnn", "--data", "generated", "--epochs", "1",
                "--out", tmp_path / "run", "--set", "data.cutout=40", "--quiet")
    assert r.code != 0 and "data.cutout: 40 pixels is too large for the 32x32 images" in r.err
    assert not (tmp_path / "run").exists()


def test_tta_of_a_flip_invariant_model_is_the_plain_output():
    class Mean(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))  # invariant to mirroring

    x = torch.rand(4, 3, 8, 8)
    assert torch.allclose(tta_logits(Mean(), x, "flip"), Mean()(x), atol=1e-6)
    plain = tta_logits(Mean(), x, "none")
    both = tta_logits(Mean(), x, "flip-translate")
    assert plain.shape == both.shape and not torch.allclose(plain, both)


def test_param_groups_scale_norm_lr_and_keep_decay_per_step():
    net = make_fast()
    cfg = OptimConfig(lr=2.0, weight_decay=0.01, bias_decay=True, norm_lr_scale=64.0)
    groups = param_groups(net, cfg)
    by_lr = {g["lr"]: g for g in groups}
    norm = by_lr[128.0]
    assert all(p.ndim == 1 for p in norm["params"])
    assert norm["lr"] * norm["weight_decay"] == 2.0 * 0.01  # same decay per step as weights
    total = sum(len(g["params"]) for g in groups)
    assert total == len(list(net.parameters()))


def test_lookahead_moves_toward_the_average_and_round_trips():
    net = nn.Linear(2, 1)
    look = Lookahead(net)
    with torch.no_grad():
        net.weight.add_(1.0)
    before = net.weight.clone()
    look.update(net, decay=0.75)
    assert torch.allclose(net.weight, before - 0.75)  # 3/4 of the way back to the old weights
    again = Lookahead(nn.Linear(2, 1))
    again.load_state_dict(look.state_dict())
    assert torch.equal(again.ema["weight"], look.ema["weight"])


@pytest.mark.parametrize("model", ["fast", "fast-sgd"])  # Muon; SGD with lookahead
def test_fast_recipe_trains_and_resumes_exactly(tmp_path, run_cli, monkeypatch, model):
    args = ["train", "image", "--model", model, "--data", "generated", "--epochs", "4",
            "--quiet", "--set", "data.limit=1000", "--set", "data.val_size=500",
            "--set", "data.batch_size=256", "--set", "train.lookahead_start_epoch=1",
            "--set", "train.precision='fp32'", "--set", "model.widths=[16,32,32]"]
    assert run_cli(*args, "--out", tmp_path / "a").code == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["val"]["tta"] == "flip-translate"
    assert summary["val"]["accuracy"] > 0.2  # 10 classes: chance is 0.1

    save = RunDir.save_checkpoint

    def save_then_die(self, checkpoint):  # a kill right after epoch 2's checkpoint
        save(self, checkpoint)
        if checkpoint["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, "save_checkpoint", save_then_die)
    assert run_cli(*args, "--out", tmp_path / "b").code == 130
    monkeypatch.setattr(RunDir, "save_checkpoint", save)
    state = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert (state["lookahead"] is not None) == (model == "fast-sgd")
    assert any(g.get("muon") for g in state["optimizer"]["param_groups"]) == (model == "fast")
    r = run_cli("train", "--resume", tmp_path / "b")
    assert r.code == 0, r.err
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
