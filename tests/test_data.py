"""Each image format, written in exactly its real layout, loads to the same kind of tensors."""

import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import tar_folder, write_cifar_binary, write_cifar_python, write_image_folder
from nnlab.data import cache
from nnlab.data.augment import crop_flip, keras_affine
from nnlab.data.images import channel_stats, load_images
from nnlab.data.split import stratified_split
from nnlab.errors import NnlabError


def test_cifar_python_folder_and_archive(tmp_path):
    folder = write_cifar_python(tmp_path / "py")
    src = load_images(str(tmp_path / "py"))  # the lone cifar-10-batches-py/ is looked through
    assert src.format == "cifar-python"
    assert src.train.images.shape == (40, 3, 32, 32) and src.train.images.dtype == torch.uint8
    assert src.train.classes[:2] == ["class0", "class1"]
    assert src.test is not None and len(src.test) == 20
    archive = tar_folder(folder, tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py")
    from_tar = load_images(str(archive))
    assert torch.equal(from_tar.train.images, src.train.images)
    assert torch.equal(from_tar.train.labels, src.train.labels)


def test_cifar_python_pixels_are_in_channel_major_order(tmp_path):
    folder = write_cifar_python(tmp_path / "py", per_batch=5, batches=1)
    import pickle

    batch = pickle.loads((folder / "data_batch_1").read_bytes(), encoding="bytes")
    src = load_images(str(folder))
    first = batch[b"data"][0]
    assert src.train.images[0, 0, 0, :].tolist() == first[:32].tolist()  # red row 0
    assert src.train.images[0, 1, 0, 0].item() == first[1024]  # green plane starts at 1024


def test_cifar_binary(tmp_path):
    folder = write_cifar_binary(tmp_path)
    src = load_images(str(folder))
    assert src.format == "cifar-binary"
    assert src.train.images.shape == (40, 3, 32, 32)
    assert src.train.classes == [f"bin{i}" for i in range(10)]
    record = (folder / "data_batch_1.bin").read_bytes()[:3073]
    assert src.train.labels[0].item() == record[0]
    assert src.train.images[0].flatten()[:5].tolist() == list(record[1:6])


def test_image_folder_grayscale_other_size(tmp_path):
    write_image_folder(tmp_path / "gray", size=(20, 24), mode="L")
    src = load_images(str(tmp_path / "gray"))
    assert src.format == "image-folder"
    assert src.train.images.shape == (18, 1, 24, 20)
    assert src.train.classes == ["cat", "dog", "eel"]
    assert src.train.labels.bincount().tolist() == [6, 6, 6]


def test_image_folder_in_archive_with_splits(tmp_path):
    root = tmp_path / "tree"
    write_image_folder(root / "train", fmt="jpg")
    write_image_folder(root / "test", classes=("dog", "cat"), per_class=2)
    archive = tar_folder(root, tmp_path / "data.tar.gz", "mydata")  # single top-level folder
    src = load_images(str(archive))
    assert src.train.classes == ["cat", "dog", "eel"]
    assert len(src.train) == 18 and src.test is not None and len(src.test) == 4
    # test classes are matched to train classes by name
    assert set(src.test.labels.tolist()) == {0, 1}


def test_cache_makes_second_load_fast_and_identical(tmp_path):
    write_image_folder(tmp_path / "imgs", per_class=30)
    t0 = time.perf_counter()
    first = load_images(str(tmp_path / "imgs"))
    t1 = time.perf_counter()
    cached = list((cache.cache_dir() / "images").glob("*.safetensors"))
    assert len(cached) == 1
    second = load_images(str(tmp_path / "imgs"))
    t2 = time.perf_counter()
    assert torch.equal(first.train.images, second.train.images)
    assert t2 - t1 < max(t1 - t0, 0.2)
    # editing the data changes its key: the new content is decoded, not the stale cache
    (tmp_path / "imgs" / "cat" / "0000.png").unlink()
    assert len(load_images(str(tmp_path / "imgs")).train) == 89


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(2, 40), min_size=2, max_size=6),
       fraction=st.floats(0.05, 0.5), seed=st.integers(0, 5))
def test_stratified_split(counts, fraction, seed):
    labels = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(7))]
    n = len(labels)
    total = round(fraction * n)
    if not 0 < total < n:
        return
    kept, held = stratified_split(labels, fraction, seed)
    assert len(held) == total and len(kept) + len(held) == n
    assert not set(kept.tolist()) & set(held.tolist())
    for i, c in enumerate(counts):  # each class within one of its exact share
        share = (labels[held] == i).sum().item()
        assert abs(share - c * total / n) < 1 + 1e-9
    _again_kept, again_held = stratified_split(labels, fraction, seed)
    assert torch.equal(held, again_held)


def test_cifar_sized_split_is_exact():
    labels = torch.arange(10).repeat_interleave(5000)
    _kept, held = stratified_split(labels, 0.1, 0)
    assert len(held) == 5000 and labels[held].bincount().tolist() == [500] * 10


def test_channel_stats_match_float64():
    imgs = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (50, 3, 8, 8), dtype=np.uint8))
    mean, std = channel_stats(imgs, chunk=7)
    x = imgs.double() / 255
    assert np.allclose(mean, x.mean(dim=(0, 2, 3)).tolist(), atol=1e-6)
    assert np.allclose(std, x.std(dim=(0, 2, 3), correction=0).tolist(), atol=1e-5)


def test_crop_flip_takes_a_window_of_the_padded_image():
    x = torch.rand(16, 3, 32, 32)
    out = crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    for i in range(16):
        found = any(torch.equal(out[i], w) or torch.equal(out[i].flip(-1), w)
                    for dy in range(9) for dx in range(9)
                    for w in [padded[i, :, dy:dy + 32, dx:dx + 32]])
        assert found


def test_keras_affine_keeps_shape_and_range_and_moves_pixels():
    x = torch.rand(8, 3, 32, 32)
    out = keras_affine(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, x)
    ident = keras_affine(x, torch.Generator().manual_seed(0), rotation_deg=0, shift=0,
                         shear_deg=0, zoom=0)
    assert all(torch.allclose(a, x[i], atol=1e-5) or torch.allclose(a, x[i].flip(-1), atol=1e-5)
               for i, a in enumerate(ident))


def test_missing_path_is_clear(tmp_path):
    with pytest.raises(NnlabError, match="no such file or folder"):
        load_images(str(tmp_path / "nope"))
