"""What keying the image cache on content costs: FileTree.fingerprint() of CIFAR-10 as the
shared .tar.gz and as an unpacked folder of 50,000 JPEGs, against decoding them.

    python benchmarks/data_fingerprint.py [--archive ../shared/data/cifar10/train.tar.gz]

The folder is unpacked into a temporary directory first (about 200 MB). Prints a table and
writes benchmarks/results/data_fingerprint.json, with the host's CPU name.
"""

from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
import time
from pathlib import Path

from nnlab.data.files import FileTree
from nnlab.data.images import load_images
from nnlab.host import cpu_name

ROOT = Path(__file__).resolve().parents[1]


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", default=str(ROOT.parent / "shared/data/cifar10/train.tar.gz"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(args.archive) as tar:
            tar.extractall(tmp, filter="data")
        for label, path in (("archive (.tar.gz)", args.archive), ("folder of files", tmp)):
            tree = FileTree(path)
            files = len(tree.names())
            seconds, _ = timed(tree.fingerprint)
            decode, _ = timed(lambda p=path: load_images(p, use_cache=False))
            rows.append({"source": label, "files": files, "fingerprint_s": round(seconds, 3),
                         "decode_s": round(decode, 2)})
    print(f"host: {cpu_name()}")
    print(f"{'source':<20} {'files':>7} {'fingerprint s':>14} {'decode s':>9}")
    for r in rows:
        print(f"{r['source']:<20} {r['files']:>7,} {r['fingerprint_s']:>14.3f} {r['decode_s']:>9.2f}")
    out = ROOT / "benchmarks" / "results" / "data_fingerprint.json"
    out.write_text(json.dumps({"host": cpu_name(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
