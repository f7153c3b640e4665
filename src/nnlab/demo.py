"""`nnlab demo`: train the quick image variants, evaluate them, write one comparative report.

Uses real CIFAR-10 when it is found (--data, $NNLAB_DATA, the download cache), else the
built-in generated shapes, and says which. Finished variants are skipped and unfinished
ones resumed, so a rerun continues where it stopped. Sized for 2 CPU cores: about 5
minutes on real CIFAR-10, about 1 minute on the generated data.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.console import Console

from nnlab.data.images import GENERATED
from nnlab.data.locate import find_data
from nnlab.experiment import resolve_config, resume_run, train_run
from nnlab.report import build_report
from nnlab.runs import RunDir

# name, model, extra --set overrides; epochs per data kind (real, generated)
VARIANTS = [
    ("cnn", "cnn", []),
    ("cnn-dropout", "cnn-dropout", []),
    ("cnn-augment", "cnn", ["data.augment='crop-flip'"]),
]
EPOCHS = {"real": 6, "generated": 12}


def run_demo(out: Path, data: str | None, console: Console) -> Path:
    found = find_data("image", data)
    kind = "real" if found and found != GENERATED else "generated"
    if found is None:
        console.print("[yellow]No CIFAR-10 found (no --data, no $NNLAB_DATA/cifar10, nothing "
                      "downloaded): using the built-in generated shapes data set.[/]")
        found = GENERATED
    else:
        console.print(f"Using image data at {found}.")
    paths = []
    for name, model, sets in VARIANTS:
        path = out / "runs" / name
        paths.append(path)
        if path.is_dir() and RunDir(path).finished:
            console.print(f"[dim]{name}: already finished, skipped[/]")
            continue
        console.rule(name)
        if (path / "last.pt").is_file():
            resume_run(path, console)
            continue
        if path.exists():  # started but no epoch finished: start it again
            shutil.rmtree(path)
        cfg = resolve_config("image", model, data=found, epochs=EPOCHS[kind], sets=sets)
        train_run(cfg, path, console)
    what = "CIFAR-10" if kind == "real" else "the built-in generated shapes (no CIFAR-10 found)"
    return build_report(paths, out, title="nnlab demo: image classification",
                        notes=[f"Quick budget on {what}: {EPOCHS[kind]} epochs per variant on "
                               "this machine. The first report's figures (Keras, test set, "
                               "more epochs): cnn 70.1%, cnn + dropout 71.1%, cnn + "
                               "augmentation 73.0%."],
                        names=[v[0] for v in VARIANTS])
