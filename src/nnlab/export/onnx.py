"""`nnlab export RUN --format onnx --out FILE.onnx`: the run's best weights as an ONNX graph
for ONNX Runtime, and beside it FILE.json (classes or tags, vocabulary, preprocessing, the
CRF's scores: what a user needs without nnlab) and, for CRF taggers, FILE.viterbi.py (a
numpy decoder), for MiniLM pair models and taggers on MiniLM features FILE.tokenizer.json
(the word-piece tokenizer, for `tokenizers`), for the latter FILE.pieces.py (their windows).

The graph comes from torch's TorchScript-based exporter, which traces the recurrent models'
packed sequences with dynamic batch and length axes (torch.export, the newer exporter,
refuses their data-dependent lengths). Every export is then checked: onnxruntime runs the
graph on fresh inputs of other sizes (other lengths too), and the export fails unless its
outputs match PyTorch's within 1e-4 and give the same classes or tags.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nnlab import ensemble
from nnlab.errors import NnlabError
from nnlab.fileio import atomic_write, atomic_write_text, make_folder
from nnlab.tasks import Task
from nnlab.tasks.base import ExportSpec
from nnlab.tasks.capabilities import EnsembleExportable, Exportable, require
from nnlab.tasks.loading import load_model, open_run

OPSET = 17
TOLERANCE = 1e-4  # max abs difference between onnxruntime's and PyTorch's outputs (fp32)


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise NnlabError("export: needs the extra: pip install 'nnlab[onnx]'") from None
    return onnxruntime


def export_run(path: str | Path, out: str | Path, fmt: str = "onnx", force: bool = False
               ) -> dict[str, Any]:
    """Export a run's best weights; returns what was written and the parity check."""
    if fmt != "onnx":
        raise NnlabError(f"--format {fmt}: unknown (onnx)")
    out = check_out(out)
    _onnxruntime()
    if ensemble.is_ensemble(path):
        return export_ensemble(ensemble.load(path, "cpu"), out, force)
    run, cfg, task = open_run(path, "cpu")
    require(task, Exportable)
    task.cfg.train.precision = "fp32"
    model = load_model(run, task).float().eval()
    return export_model(task, model, out, force) | {"run": str(run.path), "model": cfg.model.name}


# the longest name written beside FILE.onnx, plus atomic_write's temporary-name padding
LONGEST_SUFFIX = len(".tokenizer.json") + len("..12345678.tmp")
SYSTEM_FOLDERS = ("/dev", "/proc", "/sys")  # virtual file systems: never a place for files


def check_out(out: str | Path) -> Path:
    """`--out` as a path export may write: FILE.onnx, a name the file system takes with every
    suffix written beside it, in an ordinary folder (not /dev, /proc, /sys)."""
    out = Path(out)
    if out.suffix != ".onnx" or out.name == ".onnx":
        raise NnlabError(f"--out {out}: give a file name ending in .onnx")
    folder = out.parent.resolve()
    if any(folder == Path(s) or Path(s) in folder.parents for s in SYSTEM_FOLDERS):
        raise NnlabError(f"--out {out}: {folder} is a system folder, not a place for files")
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    size = len(out.stem.encode("utf-8", "surrogateescape")) + LONGEST_SUFFIX
    if size > name_max:
        raise NnlabError(f"--out {out.name[:60]}...: file name too long for the file system "
                         f"({size - LONGEST_SUFFIX} bytes before .onnx; at most "
                         f"{name_max - LONGEST_SUFFIX})")
    if out.exists() and out.is_dir():
        raise NnlabError(f"--out {out}: a folder; give a file name ending in .onnx")
    return out


def _is_earlier_export(path: Path, out: Path) -> bool:
    """Whether `path` (beside `out`) is a regular file that an export to `out` wrote: out's
    meta (FILE.json) names the graph, so a run folder's config.json never passes."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        meta = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("onnx"), dict) and \
        meta["onnx"].get("file") == out.name


def check_clobber(paths: list[Path], out: Path, force: bool) -> None:
    """Refuse to replace any existing file, unless `force`; even then only the files of an
    earlier export to the same name (never a run folder's config, weights or metrics)."""
    for path in paths:
        if not (path.exists() or path.is_symlink()):
            continue
        if not force:
            raise NnlabError(f"{path}: exists; export writes no file over another (--force "
                             "replaces an earlier export of the same name)")
        if not _is_earlier_export(path, out):
            raise NnlabError(f"{path}: exists and is not a file of an earlier export to {out.name}; "
                             "not replaced, even with --force")


def export_ensemble(combined: ensemble.Ensemble, out: Path, force: bool = False) -> dict[str, Any]:
    """One graph of every member, the ensemble's rule inside; parity is checked against the
    PyTorch modules of the members combined by the same rule."""
    task = combined.task
    require(task, Exportable)
    require(task, EnsembleExportable)
    specs = []
    for m in combined.members:
        m.task.cfg.train.precision = "fp32"
        specs.append(m.task.export_spec(m.model.float().eval()))  # type: ignore[attr-defined]
    spec = task.ensemble_spec(specs, combined.weights, combined.rule,  # type: ignore[attr-defined]
                              [str(m.run.path) for m in combined.members])
    spec.meta = spec.meta | {"ensemble": {
        "rule": combined.rule, "members": [{"run": str(m.run.path), "model": m.task.cfg.model.name,
                                            "weight": m.weight} for m in combined.members]}}
    return write_export(task, combined.name, spec, out, force) | {"run": str(combined.path),
                                                                   "model": combined.name}


def export_model(task: Task, model: nn.Module, out: Path, force: bool = False) -> dict[str, Any]:
    """Write `out` (the graph), `out`.json (meta) and the files the task ships beside them;
    refuse (before any work) when one of them exists (see `check_clobber`)."""
    require(task, Exportable)
    return write_export(task, task.cfg.model.name, task.export_spec(model.eval()), out, force)


def write_export(task: Task, model_name: str, spec: ExportSpec, out: Path, force: bool = False
                 ) -> dict[str, Any]:
    """`spec`'s graph written and checked against its module, then its meta and extras."""
    ort = _onnxruntime()
    check_clobber([out, out.with_suffix(".json"), *(out.with_name(out.stem + s) for s in spec.extras)],
                  out, force)
    spec.module.eval()  # a wrapper starts in training mode, and export restores the mode it found
    example = spec.inputs(3, torch.Generator().manual_seed(0))
    names = list(example)

    def write_graph(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad(), _quiet_stderr():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(spec.module, tuple(example.values()), str(tmp), dynamo=False,
                              input_names=names, output_names=spec.outputs,
                              dynamic_axes=spec.dynamic_axes, opset_version=OPSET)

    make_folder(out.parent)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    graph_tmp = Path(name)  # a name of its own: no other file is touched until all is checked
    try:
        atomic_write(graph_tmp, write_graph)
        session = ort.InferenceSession(str(graph_tmp), providers=["CPUExecutionProvider"])
        parity = _parity(spec, session)
    except NnlabError:
        graph_tmp.unlink(missing_ok=True)
        raise
    except Exception as e:  # an op the exporter or onnxruntime cannot handle: a bug to report
        graph_tmp.unlink(missing_ok=True)
        raise NnlabError(f"export: {model_name} could not be exported to ONNX "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:300]})") from None
    meta = spec.meta | {
        "task": task.name, "model": model_name,
        "onnx": {"file": out.name, "opset": OPSET, "inputs": names, "outputs": spec.outputs,
                 "dynamic_axes": spec.dynamic_axes},
        "parity": parity,
    }
    files = [out, out.with_suffix(".json")]
    try:
        atomic_write_text(out.with_suffix(".json"), json.dumps(meta, allow_nan=False) + "\n")
        for suffix, source in spec.extras.items():
            extra = out.with_name(out.stem + suffix)
            atomic_write(extra, lambda tmp, source=source: shutil.copyfile(source, tmp))
            files.append(extra)
        graph_tmp.replace(out)  # last: a graph on disk always has its meta beside it
    finally:
        graph_tmp.unlink(missing_ok=True)
    return {"files": [str(f) for f in files], "parity": parity}


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """The exporter's C++ side prints shape-inference notes for packed sequences straight to
    file descriptor 2 (harmless: the parity check below is what counts); keep them off the
    user's terminal. Errors still raise."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _parity(spec, session) -> dict[str, Any]:
    """Run the graph and the module on fresh inputs (batch 5, other lengths); compare."""
    inputs = spec.inputs(5, torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = spec.module(*inputs.values())
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = session.run(spec.outputs, {k: v.numpy() for k, v in inputs.items()})
    diff = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected, strict=True))
    same = spec.decide(got[0], inputs) == spec.decide(expected[0].numpy(), inputs)
    if not (diff <= TOLERANCE and same):
        raise NnlabError(f"export: onnxruntime disagrees with PyTorch (max abs difference {diff:.2e}, "
                         f"same predictions: {same}); the graph was not written")
    return {"max_abs_diff": diff, "same_predictions": same, "batch": 5}
