"""Image-folder trees: `root/<class>/*.png|jpg`, or `root/{train,test}/<class>/...`.

Channels and size come from the data: all-grayscale trees give 1 channel, anything with
colour gives 3; every image must have the size of the first one.
"""

from __future__ import annotations

import io
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, UnidentifiedImageError

from nnlab.data.files import FileTree
from nnlab.errors import NnlabError, short

MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
# decode_image refuses these itself, with the file named; Pillow's warning would be a 2nd line
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
SPLIT_NAMES = {"train", "test", "val", "valid", "validation"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}

Arrays = tuple[np.ndarray, np.ndarray]


def image_size(data: bytes, where: str) -> tuple[int, int]:
    """(width, height) of an image file from its header alone: nothing is decoded, so a
    server can refuse a small file of many pixels before it costs memory."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.width, img.height
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError
            ) as e:
        raise NnlabError(f"{where}: not a readable image ({short(e)})") from None


def decode_image(data: bytes, where: str) -> np.ndarray:
    """Bytes of one image file -> (H, W) uint8 for grayscale, (H, W, 3) uint8 for colour."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            # past Pillow's pixel limit (89M pixels) an image is a decompression bomb, not data;
            # Pillow itself only warns below twice that limit
            if img.width * img.height > MAX_PIXELS:
                raise Image.DecompressionBombError(f"{img.width}x{img.height} pixels")
            img.load()
            mode = "L" if img.mode in GRAY_MODES else "RGB"
            return np.asarray(img.convert(mode), dtype=np.uint8)
    except Image.DecompressionBombError as e:
        raise NnlabError(f"{where}: image too large ({short(e, 80)}; at most {MAX_PIXELS:,} "
                         "pixels), refused as a possible decompression bomb") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise NnlabError(f"{where}: not a readable image ({short(e)})") from None


def _group(names: list[str], tree: FileTree, split: str) -> dict[str, list[str]]:
    """class name -> files, for the part of the tree below `split` ("" for the root)."""
    prefix = f"{split}/" if split else ""
    groups: dict[str, list[str]] = defaultdict(list)
    for name in names:
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix) :]
        if "/" not in rest:
            continue  # loose files beside the class folders (README, LICENSE) are not data
        cls, file = rest.split("/", 1)
        if not file.lower().endswith(IMAGE_SUFFIXES):
            raise NnlabError(
                f"{tree.describe(name)}: not an image file (expected {', '.join(IMAGE_SUFFIXES)})"
            )
        groups[cls].append(name)
    return dict(sorted(groups.items()))


def _decode_split(tree: FileTree, groups: dict[str, list[str]], classes: list[str]) -> Arrays:
    index = {c: i for i, c in enumerate(classes)}
    jobs = [(name, index[c]) for c, files in groups.items() for name in files]
    # PIL releases the GIL while decoding, so threads use every core without pickling costs
    with ThreadPoolExecutor() as pool:
        arrays = list(pool.map(lambda job: decode_image(tree.read(job[0]), tree.describe(job[0])), jobs))
    if not arrays:
        raise NnlabError(f"{tree.root}: no images found")
    colour = any(a.ndim == 3 for a in arrays)
    h, w = arrays[0].shape[:2]
    out = np.empty((len(arrays), 3 if colour else 1, h, w), dtype=np.uint8)
    for i, (a, (name, _)) in enumerate(zip(arrays, jobs, strict=True)):
        if a.shape[:2] != (h, w):
            raise NnlabError(
                f"{tree.describe(name)}: image is {a.shape[1]}x{a.shape[0]}, "
                f"but {tree.describe(jobs[0][0])} is {w}x{h}; all images must have one size"
            )
        out[i] = a.transpose(2, 0, 1) if a.ndim == 3 else a[None]
    labels = np.array([label for _, label in jobs], dtype=np.int64)
    return out, labels


def load(tree: FileTree) -> tuple[Arrays, Arrays | None, list[str]]:
    names = tree.names()
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    split_layout = bool(tops) and tops <= SPLIT_NAMES and "train" in tops
    train_groups = _group(names, tree, "train" if split_layout else "")
    if not train_groups:
        raise NnlabError(f"{tree.root}: no class folders found (expected root/<class>/<image>)")
    classes = list(train_groups)
    test = None
    if split_layout and "test" in tops:
        test_groups = _group(names, tree, "test")
        unknown = sorted(set(test_groups) - set(classes))
        if unknown:
            raise NnlabError(f"{tree.describe('test/' + unknown[0])}: class not in train/")
        test = _decode_split(tree, test_groups, classes)
    train = _decode_split(tree, train_groups, classes)
    if test is not None and test[0].shape[1:] != train[0].shape[1:]:
        raise NnlabError(f"{tree.root}: test images differ in size or channels from train images")
    return train, test, classes
