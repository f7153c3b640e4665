"""Every registered model of every task: forward, backward, output shape (colour and
grayscale images; text batches of sequences of different lengths, whose padding must not
change any sequence's output)."""

import pytest
import torch

from nnlab import models, tasks
from nnlab.config import RunConfig
from nnlab.data.tags import tag_set
from nnlab.device import make_runtime
from nnlab.errors import NnlabError
from nnlab.tasks.info import DataInfo

VOCAB = {"items": ["<pad>", "<unk>", *[f"w{i}" for i in range(40)]], "trained": 42}
DATA = DataInfo.example().to_json()
TEXT_INFO = {  # what the text tasks learn from data, made up small (as saved in config.json)
    "keyphrase": {"vocab": VOCAB, "types": ["KEY"], "tags": tag_set(["KEY"], "bio"),
                  "encoding": "bio", "chars": {"items": ["<pad>", "<unk>", *"abcdefgh"]},
                  "max_word_chars": 20, "tokenizer": {}, "data": DATA},
    "similarity": {"vocab": VOCAB, "score_range": [1.0, 5.0], "data": DATA},
}
LENGTHS = [7, 3, 1, 5]  # variable lengths, unsorted, one single-token sequence


def text_batch(task: str, gen: torch.Generator) -> dict:
    """A padded batch in the layout the task's collate makes (word ids >= 2, i.e. no <pad>)."""
    t = max(LENGTHS)
    mask = torch.arange(t).unsqueeze(0) < torch.tensor(LENGTHS).unsqueeze(1)  # (B, T)
    words = torch.randint(2, 42, (len(LENGTHS), t), generator=gen) * mask
    if task == "keyphrase":
        chars = torch.randint(2, 10, (len(LENGTHS), t, 4), generator=gen) * mask.unsqueeze(2)
        tags = torch.randint(0, 3, (len(LENGTHS), t), generator=gen) * mask
        return {"words": words, "chars": chars, "tags": tags, "mask": mask, "tokens": sum(LENGTHS)}
    lengths = torch.tensor(LENGTHS)
    flipped = torch.tensor(LENGTHS[::-1])
    b = torch.stack([torch.roll(row, 1) for row in words]) * (torch.arange(t) < flipped.unsqueeze(1))
    return {"a": words, "a_len": lengths, "b": b, "b_len": flipped,
            "score": torch.rand(len(LENGTHS), generator=gen) * 4 + 1}


def outputs(task: str, model: torch.nn.Module, batch: dict) -> list[torch.Tensor]:
    """Each example's output: a tagger's emissions over its own tokens, a pair's score."""
    if task == "keyphrase":
        emissions = model(batch["words"], batch["chars"] if model.chars is not None else None,
                          batch["mask"])
        return [emissions[i, :n] for i, n in enumerate(batch["mask"].sum(1).tolist())]
    return list(model(batch["a"], batch["a_len"], batch["b"], batch["b_len"]))


def row(task: str, batch: dict, i: int) -> dict:
    """Example i alone, without the batch's padding."""
    if task == "keyphrase":
        n = int(batch["mask"][i].sum())
        return {k: (v[i : i + 1, :n] if torch.is_tensor(v) else n) for k, v in batch.items()}
    na, nb = int(batch["a_len"][i]), int(batch["b_len"][i])
    return {"a": batch["a"][i : i + 1, :na], "a_len": batch["a_len"][i : i + 1],
            "b": batch["b"][i : i + 1, :nb], "b_len": batch["b_len"][i : i + 1],
            "score": batch["score"][i : i + 1]}


@pytest.mark.parametrize("name", models.names("keyphrase") + models.names("similarity"))
def test_text_model_forward_backward_and_padding(name):
    task_name = models.get(name).task
    kind = tasks.get(task_name)
    cfg = RunConfig(task=task_name)
    cfg.model.name = name
    task = kind.for_run(cfg, make_runtime(cfg.train), TEXT_INFO[task_name])
    torch.manual_seed(0)
    model = task.build_model()  # through the task, as training builds it
    batch = text_batch(task_name, torch.Generator().manual_seed(0))
    if task_name == "keyphrase" and model.chars is None:
        batch["chars"] = None
    out = task.step(model, batch)  # the training step: loss and figures
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert out.count == len(LENGTHS)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        together = outputs(task_name, model, batch)
        for i in range(len(LENGTHS)):
            (alone,) = outputs(task_name, model, row(task_name, batch, i))
            assert together[i].shape == alone.shape
            torch.testing.assert_close(together[i], alone, rtol=1e-4, atol=1e-5,
                                       msg=f"{name}: example {i}'s output depends on padding")
    if task_name == "similarity":
        lo, hi = TEXT_INFO["similarity"]["score_range"]
        assert all(lo <= float(s) <= hi for s in together)


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


@pytest.mark.parametrize("model,value,layers", [("bilstm-crf", 64, 1), ("deep-bilstm", 48, 3)])
def test_a_number_for_per_layer_sizes_means_every_layer(model, value, layers):
    """`--set model.hidden_sizes=64` (or a tune choice of numbers) builds layers of that size;
    it once reached the model as an int and ended in a TypeError."""
    args = models.check_args(model, "keyphrase", {"hidden_sizes": value})
    assert args["hidden_sizes"] == (value,) * layers
    default = models.options(model)["hidden_sizes"]
    assert len(default) == layers


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


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_rnn_equals_the_packed_layer(cell, bidirectional):
    """The CPU form (padded, backward direction reversed within each length) gives what the
    layer gives on packed sequences: outputs (zero past each length) and gradients."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from nnlab.models.layers import rnn_layers, rnn_padded

    torch.manual_seed(0)
    lengths = torch.tensor([3, 7, 1, 5])
    x = torch.randn(4, 7, 5)
    (layer,), _ = rnn_layers(cell, 5, (6,), bidirectional)
    packed, _ = layer(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    want = pad_packed_sequence(packed, batch_first=True, total_length=7)[0]
    want.pow(2).sum().backward()
    want_grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    got = rnn_padded(layer, x, lengths)
    got.pow(2).sum().backward()
    torch.testing.assert_close(got, want)
    for p, g in zip(layer.parameters(), want_grads, strict=True):
        torch.testing.assert_close(p.grad, g)


@pytest.mark.parametrize("inputs", ["onehot", "embedding"])
@pytest.mark.parametrize("cell,bidirectional,pooling", [("lstm", False, "last"), ("rnn", False, "last"),
                                                        ("gru", True, "max"), ("lstm", True, "last")])
def test_sentence_encoder_cpu_form_equals_the_packed_form(inputs, cell, bidirectional, pooling):
    """Padded batches with one-hot words looked up (CPU) against packed sequences of real
    one-hot vectors (GPU, ONNX): the same encodings and input-weight gradients."""
    from nnlab.models.siamese import SentenceEncoder

    torch.manual_seed(0)
    enc = SentenceEncoder(30, inputs, 8, cell, (6, 5), (0.0, 0.0), bidirectional, pooling)
    ids, lengths = torch.randint(0, 30, (4, 7)), torch.tensor([3, 7, 1, 5])
    first = enc.layers[0].weight_ih_l0
    grads = []
    for form in (enc._packed, enc._padded):
        first.grad = None
        out = form(ids, lengths)
        out.pow(2).sum().backward()
        grads.append((out.detach(), first.grad.clone()))
    torch.testing.assert_close(grads[1][0], grads[0][0])
    torch.testing.assert_close(grads[1][1], grads[0][1])
    assert enc(ids, lengths).shape == (4, enc.out_dim)


def test_onehot_dropout_acts_in_training_only():
    from nnlab.models.siamese import SentenceEncoder

    torch.manual_seed(0)
    enc = SentenceEncoder(40, "onehot", 0, "lstm", (8,), (0.5,), False, "last")
    ids, lengths = torch.randint(0, 40, (16, 5)), torch.full((16,), 5)
    enc.train()
    a, b = enc(ids, lengths), enc(ids, lengths)
    assert not torch.equal(a, b)  # dropout acts in training
    enc.eval()
    assert torch.equal(enc(ids, lengths), enc(ids, lengths))
