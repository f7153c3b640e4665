"""Every registered model: forward, backward, output shape, on colour and grayscale inputs."""

import pytest
import torch

from nnlab import models
from nnlab.errors import NnlabError


@pytest.mark.parametrize("name", models.names("image"))
@pytest.mark.parametrize("shape,classes", [((3, 32, 32), 10), ((1, 28, 28), 7)])
def test_image_model_forward_backward(name, shape, classes):
    torch.manual_seed(0)
    net = models.create(name, "image", {}, in_channels=shape[0], num_classes=classes,
                        image_size=shape[1:])
    x = torch.randn(3, *shape)
    logits = net(x)
    assert logits.shape == (3, classes)
    logits.logsumexp(dim=1).mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_unknown_model_suggests_a_name():
    with pytest.raises(NnlabError, match="did you mean 'resnet18'"):
        models.get("resnet-18", "image")


def test_unknown_model_option_is_named():
    with pytest.raises(NnlabError, match=r"model\.widht: unknown option for cnn"):
        models.create("cnn", "image", {"widht": 3}, in_channels=3, num_classes=10,
                      image_size=(32, 32))


def test_model_option_type_is_checked():
    with pytest.raises(NnlabError, match=r"model\.dropout: expected float"):
        models.create("cnn", "image", {"dropout": "lots"}, in_channels=3, num_classes=10,
                      image_size=(32, 32))


def test_too_small_images_are_a_clear_error():
    with pytest.raises(NnlabError, match="too small"):
        models.create("cnn", "image", {}, in_channels=3, num_classes=10, image_size=(8, 8))


def test_skip_connections_differ():
    res = models.create("resnet18", "image", {}, in_channels=3, num_classes=10, image_size=(32, 32))
    plain = models.create("plain18", "image", {}, in_channels=3, num_classes=10, image_size=(32, 32))
    n_res = sum(p.numel() for p in res.parameters())
    n_plain = sum(p.numel() for p in plain.parameters())
    assert n_res > n_plain  # the projection shortcuts carry parameters
    assert 11_000_000 < n_res < 11_300_000  # the CIFAR ResNet-18 has 11.17M
