"""The `nnlab` command: train, evaluate, predict, reproduce, tune, report, models, data, cache,
demo, serve, export.

A user mistake (`NnlabError`, a bad flag) prints one line on stderr and exits with 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from nnlab import tasks
from nnlab.errors import NnlabError, short

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,  # help text is plain: `nnlab[onnx]` is no markup tag
                  help="nnlab: train, compare and use classic CNN and RNN models.")
data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Get data sets.")
app.add_typer(data_app, name="data")
cache_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="See and shrink nnlab's cache of decoded data.")
app.add_typer(cache_app, name="cache")

# what the commands print holds user strings (file and class names, sentences): never markup,
# never emoji codes (`:x:` is text); stderr's progress lines style markup and escape user strings
out = Console(soft_wrap=True, markup=False, emoji=False, highlight=False)
err = Console(stderr=True, soft_wrap=True, emoji=False)


@app.command()
def train(
    task: Annotated[str | None, typer.Argument(help=" | ".join(tasks.names()))] = None,
    model: Annotated[str | None, typer.Option(help="registered model name (see `nnlab models`)")] = None,
    data: Annotated[str | None, typer.Option(help="data folder/archive, or 'generated'")] = None,
    epochs: Annotated[int | None, typer.Option(help="number of epochs")] = None,
    embeddings: Annotated[str | None, typer.Option(
        help="word vectors for text tasks: glove-6b-50d or a GloVe text file")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: key=value")] = None,
    config: Annotated[str | None, typer.Option(help="TOML config file")] = None,
    out_dir: Annotated[str | None, typer.Option("--out", help="new run folder")] = None,
    resume: Annotated[str | None, typer.Option(help="run folder to resume")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Train a model into a new run folder, or resume one (--resume RUN_DIR)."""
    from nnlab import experiment

    if resume:
        if any(v is not None for v in (task, model, data, epochs, config, out_dir, embeddings)
               ) or set_:
            raise NnlabError("--resume RUN_DIR takes no other options: the run's config is reused")
        experiment.resume_run(resume, err, progress=not quiet)
        return
    if not out_dir:
        raise NnlabError("--out RUN_DIR: required (a new folder for the run)")
    cfg = experiment.resolve_config(task, model, config, data, epochs, set_, embeddings)
    experiment.train_run(cfg, out_dir, err, progress=not quiet)


def _json(value: object) -> str:
    """One line of strict JSON (no NaN: most parsers refuse it), or one line saying why not."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        raise NnlabError("the model's outputs are not finite numbers (NaN or infinity); "
                         "nothing printed") from None


@app.command()
def evaluate(
    run_dir: Annotated[str, typer.Argument(help="run folder")],
    data: Annotated[str | None, typer.Option(help="other labelled data (classes matched by name)")] = None,
    split: Annotated[str | None, typer.Option(help="val | test | all")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    tta: Annotated[str | None, typer.Option(help="none | flip | flip-translate (default: the run's)")
                   ] = None,
) -> None:
    """Evaluate a run's best weights (validation split by default)."""
    from nnlab import experiment

    result = experiment.evaluate_run(run_dir, data, split, device, tta)
    if as_json:
        print(_json(result))
        return
    kind = tasks.get(result["task"])
    for line in kind.format_evaluation(result):
        out.print(line)
    if "members" in result:  # an ensemble: its members on the same examples
        metric, members = kind.main_metric, result["members"]
        weighed = len({round(m["weight"], 6) for m in members}) > 1

        def member(m: dict) -> str:
            return f"{m['model']} {m[metric]:.4f}" + (f" (weight {m['weight']:.2f})" if weighed else "")

        out.print(f"  members ({result['rule']}): " + ", ".join(member(m) for m in members)
                  + f"; mean {result['mean_member']:.4f}, gain {result['gain']:+.4f}")


@app.command()
def predict(
    run_dir: Annotated[str, typer.Argument(help="run folder")],
    inputs: Annotated[list[str] | None, typer.Argument(help="; ".join(
        f"{t}: {tasks.get(t).predict_help}" for t in tasks.names()))] = None,
    files: Annotated[bool, typer.Option("--files", help="text runs: inputs are text files")] = False,
    pairs: Annotated[str | None, typer.Option(
        help="similarity: a TSV file of sentence pairs (two columns) to score")] = None,
    top_k: Annotated[int | None, typer.Option(help="images: classes to show per image [default: 3]",
                                              min=1, max=1000)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON (keyphrases: with offsets)")
                       ] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """The run's predictions on new inputs: classes of images, keyphrases of texts, a pair's
    similarity (whatever the run's task predicts)."""
    from nnlab import experiment

    given = {"files": files or None, "pairs": pairs, "top_k": top_k}  # the flags given
    flags = {k: v for k, v in given.items() if v is not None}
    task, results = experiment.predict_run(run_dir, inputs or [], flags, device)
    if as_json:
        print(_json(results))
        return
    for line in task.format_predictions(results):
        out.print(line)


@app.command("ensemble")
def ensemble_runs(
    run_dirs: Annotated[list[str] | None, typer.Argument(help="finished run folders of one task")
                        ] = None,
    out_dir: Annotated[str, typer.Option("--out", help="the ensemble's new folder (no weights are "
                                         "copied; evaluate, predict, serve and export take it)")] = "",
    config: Annotated[str | None, typer.Option(
        help="an ensemble file (member recipes and seeds): members missing under --out/members "
             "are trained first (experiments/keyphrase/ensemble.toml)")] = None,
    data: Annotated[str | None, typer.Option(help="with --config: the members' data")] = None,
    workers: Annotated[int, typer.Option(help="with --config: members trained at a time (Ray)")] = 1,
    threads: Annotated[int, typer.Option(help="with --config: CPU threads per member (0: auto)")] = 0,
    weights: Annotated[str | None, typer.Option(help="w1,w2,...: one per run (default: equal)")] = None,
    select: Annotated[int, typer.Option(
        help="STEPS: choose the members and weights among the runs by that many steps of forward "
             "selection on the validation split (Caruana et al. 2004; 0: every run, as weighted)")
                      ] = 0,
    rule: Annotated[str | None, typer.Option(
        help="images: mean-probabilities; similarity: mean-scores; keyphrase: mean-marginals | "
             "mean-emissions (default: the task's first)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """Combine finished runs into one model, checked (same task, outputs and data) and judged
    on the validation split beside its members."""
    from nnlab import ensemble, ensemble_config
    from nnlab.executor import Resources

    if not out_dir:
        raise NnlabError("--out: the ensemble's folder is required")
    if config is not None:
        if run_dirs or weights or rule or select:
            raise NnlabError("--config: the file names the members, their weights, the rule and "
                             "the selection; give no runs, --weights, --rule or --select beside it")
        result = ensemble_config.build(config, data, out_dir, Resources(workers, threads), err,
                                       progress=not as_json, device=device)
    else:
        if data is not None or workers != 1 or threads:
            raise NnlabError("--data/--workers/--threads: only with --config (runs are already trained)")
        runs = run_dirs or []
        result = ensemble.create(runs, out_dir, ensemble.parse_weights(weights, len(runs)), rule,
                                 device, select=select)
    if as_json:
        print(_json(result))
        return
    kind = tasks.get(result["task"])
    metric, label = kind.main_metric, kind.label(kind.main_metric)
    members = ", ".join(f"{m[metric]:.4f}" for m in result["members"])
    out.print(f"{out_dir}: {result['model']}; validation {label} "
              f"{result[metric]:.4f} (members {members}; mean {result['mean_member']:.4f}, "
              f"gain {result['gain']:+.4f})")
    chosen = result.get("selection")
    if chosen:
        held = chosen["crossfit"]
        weights_text = ", ".join(f"{m['weight']:.2f}" for m in result["members"])
        out.print(f"selected {chosen['chosen']} of {len(chosen['candidates'])} runs in "
                  f"{len(chosen['curve'])} of {chosen['steps']} steps (weights {weights_text}). "
                  f"Chosen on validation, so that figure flatters it; chosen on one half of it and "
                  f"judged on the other: selected {held['selected']:.4f}, every run equally "
                  f"{held['all_equal']:.4f}, the best run {held['best_run']:.4f}")


@app.command()
def export(
    run_dir: Annotated[str, typer.Argument(help="run folder")],
    out_file: Annotated[str, typer.Option("--out", help="FILE.onnx; FILE.json (classes, vocabulary, "
                                          "preprocessing) and a CRF's FILE.viterbi.py go beside it")],
    fmt: Annotated[str, typer.Option("--format", help="onnx")] = "onnx",
    force: Annotated[bool, typer.Option(help="replace the files of an earlier export to --out")] = False,
) -> None:
    """Export a run's best weights to ONNX (needs `nnlab[onnx]`), checked against PyTorch;
    no existing file is replaced (but an earlier export's, with --force)."""
    from nnlab.export.onnx import export_run

    result = export_run(run_dir, out_file, fmt, force)
    parity = result["parity"]
    out.print(f"{result['model']}: {', '.join(result['files'])}; onnxruntime against PyTorch on "
              f"{parity['batch']} fresh inputs: max abs difference {parity['max_abs_diff']:.1e}, "
              "same predictions")


def _in_range(name: str, value: float, lo: float, hi: float) -> float:
    """A numeric option inside [lo, hi] (NaN and infinities refused), or one line naming it."""
    if not lo <= value <= hi:  # False for NaN too
        raise NnlabError(f"{name}: must be from {lo:g} to {hi:g}, got {value}")
    return value


@app.command()
def serve(
    run_dirs: Annotated[list[str], typer.Argument(help="run folders, each RUN_DIR or NAME=RUN_DIR")],
    host: Annotated[str, typer.Option(help="address to bind (beyond loopback, --token is needed)")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port", min=1, max=65535)] = 8000,
    token: Annotated[str | None, typer.Option(
        help="require `Authorization: Bearer TOKEN` on every route but /healthz (default: "
             "$NNLAB_TOKEN)")] = None,
    allowed_host: Annotated[list[str] | None, typer.Option(
        help="a name clients may send in the Host header besides the bound address and "
             "loopback (a proxy's or DNS name; repeat for several)")] = None,
    max_body_mb: Annotated[float, typer.Option(help="largest request body, MiB")] = 20.0,
    max_chars: Annotated[int, typer.Option(help="longest text, characters", min=1, max=10_000_000)
                         ] = 20_000,
    max_words: Annotated[int, typer.Option(help="words across one request's texts", min=1,
                                           max=10_000_000)] = 10_000,
    max_image_pixels: Annotated[int, typer.Option(help="pixels of one image (read from its header)",
                                                  min=1, max=1_000_000_000)] = 16_000_000,
    max_request_pixels: Annotated[int, typer.Option(help="pixels across one request's images", min=1,
                                                    max=10_000_000_000)] = 64_000_000,
    max_batch: Annotated[int, typer.Option(help="inputs per forward pass; larger requests are split",
                                           min=1, max=100_000)] = 32,
    batch_wait_ms: Annotated[float, typer.Option(help="how long a batch waits for more requests (0-1000)")
                             ] = 5.0,
    header_timeout: Annotated[float, typer.Option(help="seconds a connection may take to send a request's "
                                                  "headers (1-600)")] = 10.0,
    top_k: Annotated[int, typer.Option(help="classes per image", min=1, max=1000)] = 3,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """Serve runs over HTTP (needs `nnlab[serve]`): a JSON API and a page to try each model."""
    import ipaddress
    import os

    try:
        import uvicorn

        from nnlab.serve.app import LOOPBACK_NAMES, Limits, create_app, load_served
        from nnlab.serve.protocol import protocol_class
    except ImportError:
        raise NnlabError("serve: needs the extra: pip install 'nnlab[serve]'") from None
    token = token if token is not None else os.environ.get("NNLAB_TOKEN") or None
    if token is not None and not token.strip():
        raise NnlabError("--token: empty or only whitespace; give a real secret (or none)")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and token is None:
        raise NnlabError(f"--host {host}: beyond loopback the API needs a token (--token or $NNLAB_TOKEN)")
    _in_range("--max-body-mb", max_body_mb, 0.001, 4096)
    _in_range("--batch-wait-ms", batch_wait_ms, 0, 1000)
    _in_range("--header-timeout", header_timeout, 1, 600)
    limits = Limits(max_body=int(max_body_mb * (1 << 20)), max_chars=max_chars, max_words=max_words,
                    max_pixels=max_image_pixels, max_request_pixels=max_request_pixels,
                    max_batch=max_batch, wait=batch_wait_ms / 1000, top_k=top_k)
    hosts = [*LOOPBACK_NAMES, host, *(allowed_host or [])]
    served = load_served(run_dirs, device, limits)
    shown = f"[{host}]" if ":" in host else host
    err.print(f"serving {', '.join(s.name for s in served)} on http://{shown}:{port}/ "
              "(API: /v1/models, description: /openapi.json)", markup=False, highlight=False)
    uvicorn.run(create_app(served, limits, token, hosts), host=host, port=port, log_level="warning",
                http=protocol_class(header_timeout), timeout_keep_alive=5, timeout_graceful_shutdown=10)


@app.command("models")
def list_models(
    name: Annotated[str | None, typer.Argument(help="a model to describe")] = None,
    input_shape: Annotated[str, typer.Option(help="C,H,W for images")] = "3,32,32",
    classes: Annotated[int, typer.Option(help="number of classes", min=2, max=100_000)] = 10,
) -> None:
    """List registered models by task, or describe one (options, recipe, parameters)."""
    from rich.table import Table

    from nnlab import models
    from nnlab.config import RunConfig
    from nnlab.device import make_runtime
    from nnlab.tasks.capabilities import ModelExamples, require

    if name is None:
        for task in tasks.names():
            out.print(task, style="bold")
            for n in models.names(task):
                out.print(f"  {n:<24} {models.get(n).description}")
        return
    entry = models.get(name)
    try:
        c, h, w = (int(v) for v in input_shape.split(","))
    except ValueError:
        raise NnlabError(f"--input-shape {short(input_shape, 40)}: expected C,H,W") from None
    if not (1 <= c <= 4 and 1 <= h <= 512 and 1 <= w <= 512):
        raise NnlabError(f"--input-shape {input_shape}: channels 1-4, height and width 1-512")
    kind = tasks.get(entry.task)
    require(kind, ModelExamples)
    cfg = RunConfig(task=kind.name)
    cfg.model.name = name
    task = kind.for_run(cfg, make_runtime(cfg.train), kind.example_info((c, h, w), classes))
    net = task.build_model()
    try:
        header, rows = task.model_table(net)  # runs an example through the model
    except RuntimeError as e:  # a shape the layers cannot take (a 4x4 image through 5 poolings)
        raise NnlabError(f"model {name}: cannot take inputs of shape {c},{h},{w} "
                         f"({short(str(e).splitlines()[0], 160)})") from None
    table = Table(title=f"{name} ({entry.task}): {entry.description}")
    for col in header:
        table.add_column(col, justify="right" if col == "parameters" else "left")
    for row in rows:
        table.add_row(*row)
    out.print(table)
    out.print(f"parameters: {sum(p.numel() for p in net.parameters()):,}")
    out.print(f"options: {models.options(name, kind.supplied)}")
    out.print(f"recipe: {entry.recipe}")


@data_app.command("get")
def data_get(name: Annotated[str, typer.Argument(help="cifar10")]) -> None:
    """Download an official archive into the cache (sha256-checked)."""
    from nnlab.data.download import fetch_with_bar

    path = fetch_with_bar(name, err)
    out.print(f"{name}: {path}")


@cache_app.command("info")
def cache_info(
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Where the cache is, and per kind: entries, size, last use."""
    import time

    from rich.table import Table

    from nnlab.data import cache_usage
    from nnlab.data.cache import KINDS, cache_dir

    found = cache_usage.entries()
    if as_json:
        print(json.dumps({"path": str(cache_dir()), "entries": [
            {"kind": e.kind, "path": str(e.path), "bytes": e.bytes, "last_used": e.last_used,
             "in_progress": e.in_progress} for e in found]}))
        return
    table = Table("kind", "entries", "size", "last used", "holds", title=str(cache_dir()))
    now = time.time()
    for kind, holds in KINDS.items():
        mine = [e for e in found if e.kind == kind]
        last = cache_usage.human_age(now - max(e.last_used for e in mine)) if mine else "-"
        table.add_row(kind, str(len(mine)), cache_usage.human_bytes(sum(e.bytes for e in mine)),
                      last, holds)
    out.print(table)
    out.print(f"total: {cache_usage.human_bytes(sum(e.bytes for e in found))}")


@cache_app.command("clean")
def cache_clean(
    kinds: Annotated[list[str] | None, typer.Argument(
        help="kinds to clean (default: all but downloads): " + ", ".join(
            ("downloads", "images", "contextual", "teacher", "generated")))] = None,
    older_than: Annotated[float | None, typer.Option(
        help="only entries unused for more than this many days")] = None,
    dry_run: Annotated[bool, typer.Option(help="list what would go; remove nothing")] = False,
) -> None:
    """Remove cache entries; each is rebuilt when a run needs it again."""
    from nnlab.data import cache_usage

    chosen = cache_usage.removable(kinds, older_than)
    for entry in chosen:
        if not dry_run:
            cache_usage.remove(entry)
        out.print(f"{'would remove' if dry_run else 'removed'} {entry.kind}/{entry.path.name} "
                  f"({cache_usage.human_bytes(entry.bytes)})")
    total = cache_usage.human_bytes(sum(e.bytes for e in chosen))
    out.print(f"{'would free' if dry_run else 'freed'} {total} in {len(chosen)} entries")


def _seed_list(text: str | None) -> list[int] | None:
    from nnlab.config import SEED_MAX

    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise NnlabError(f"--seeds {short(text, 60)!r}: expected whole numbers separated by commas, "
                         "e.g. 0,1,2") from None
    if not seeds:
        raise NnlabError(f"--seeds {text!r}: no seed given (e.g. 0,1,2)")
    for seed in seeds:
        if not 0 <= seed <= SEED_MAX:
            raise NnlabError(f"--seeds: {short(seed, 30)} is not a seed from 0 to {SEED_MAX:,}")
    if len(set(seeds)) != len(seeds):
        raise NnlabError(f"--seeds {text!r}: a seed given twice")
    return seeds


@app.command()
def reproduce(
    study: Annotated[str, typer.Argument(help="a study name (see --list) or a study TOML file")] = "",
    budget: Annotated[str, typer.Option(
        help="quick (minutes a variant) | cpu (the reports' claims on 2 CPU cores, hours) | "
             "full (the reports' epochs, for a GPU)")] = "quick",
    data: Annotated[str | None, typer.Option(help="data; default: $NNLAB_DATA, else generated")] = None,
    out_dir: Annotated[str | None, typer.Option("--out", help="folder for the runs and the report")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override for every variant")] = None,
    test: Annotated[bool, typer.Option(help="also evaluate on the data's test split")] = False,
    seeds: Annotated[str | None, typer.Option(
        help="train every variant once per seed, e.g. 0,1,2; the report gives mean ± sd and "
             "measures the study's claims over them")] = None,
    list_: Annotated[bool, typer.Option("--list", help="list the studies")] = False,
    workers: Annotated[int, typer.Option(help="runs at a time, on Ray (needs `nnlab[ray]`); 1: in "
                                         "this process", min=1, max=4096)] = 1,
    threads: Annotated[int, typer.Option(help="CPU threads per run (0: the cores over the workers)",
                                         min=0, max=1024)] = 0,
    gpus: Annotated[float, typer.Option(help="GPUs per run, on Ray (0.5: two runs share one)")] = 0.0,
    ray_address: Annotated[str | None, typer.Option(
        help="join a running Ray cluster (HOST:PORT, or auto) instead of starting one here")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    ensemble: Annotated[bool, typer.Option(
        "--ensemble", help="with --seeds: also combine each variant's seeds into an ensemble "
                           "(OUT/ensembles/VARIANT), shown in the report beside the single runs")
                        ] = False,
) -> None:
    """Train every variant of a study (skipping finished ones) and write its report."""
    from nnlab import distributed, studies
    from nnlab.executor import Resources

    if list_ or not study:
        for name in studies.study_names():
            s = studies.load_study(name)
            out.print(f"{name:<16} {s.task:<11} {len(s.variants)} variants: {s.title}")
        return
    if not out_dir:
        raise NnlabError("--out DIR: required (a folder for the study's runs and report)")
    seed_list = _seed_list(seeds)
    if ensemble and (seed_list is None or len(seed_list) < 2):
        raise NnlabError("--ensemble: combines each variant's seeds; give two or more with --seeds")
    resources = Resources(workers, threads, _in_range("--gpus", gpus, 0, 64), ray_address)
    resources.check()
    if not resources.ray and threads:  # one process: its torch threads
        import torch

        torch.set_num_threads(threads)
    loaded = studies.load_study(study)
    report = studies.run_study(loaded, budget, data, Path(out_dir), err, set_, test,
                               progress=not quiet, seeds=seed_list, resources=resources,
                               ensembles=ensemble)
    if distributed.current().main:
        out.print(f"report: {report}")


@app.command()
def tune(
    task: Annotated[str | None, typer.Argument(help=" | ".join(tasks.names()))] = None,
    model: Annotated[str | None, typer.Option(help="registered model name (see `nnlab models`)")] = None,
    space: Annotated[list[str] | None, typer.Option(
        help="a setting to search: KEY=uniform(LO,HI) | loguniform(LO,HI) | int(LO,HI) | "
             "logint(LO,HI) | choice(A,B,...); repeat for several")] = None,
    trials: Annotated[int, typer.Option(help="trials to run (a rerun adds what is missing)")] = 20,
    out_dir: Annotated[str | None, typer.Option("--out", help="folder for the search (trials, report, "
                                                "best.toml, tune.db)")] = None,
    data: Annotated[str | None, typer.Option(help="data folder/archive, or 'generated'")] = None,
    config: Annotated[str | None, typer.Option(help="TOML config file: the fixed settings")] = None,
    epochs: Annotated[int | None, typer.Option(help="epochs per trial (pruning may stop it earlier)")] = None,
    embeddings: Annotated[str | None, typer.Option(
        help="word vectors for text tasks: glove-6b-50d or a GloVe text file")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="a fixed setting: key=value")] = None,
    seed: Annotated[int, typer.Option(help="the sampler's seed (TPE)", min=0, max=2**32 - 1)] = 0,
    pruner: Annotated[str, typer.Option(help="median | hyperband | asha | none")] = "median",
    storage: Annotated[str | None, typer.Option(
        help="Optuna storage URL shared by several drivers (e.g. postgresql://...); default: "
             "OUT/tune.db (SQLite)")] = None,
    heartbeat: Annotated[int, typer.Option(
        help="with --storage: seconds between this driver's heartbeats; a trial silent for 3 is "
             "failed and run again", min=1, max=3600)] = 60,
    test: Annotated[bool, typer.Option(help="evaluate the best trial on the test split, once, at the end")
                    ] = False,
    workers: Annotated[int, typer.Option(help="trials at a time, on Ray (needs `nnlab[ray]`)", min=1,
                                         max=4096)] = 1,
    threads: Annotated[int, typer.Option(help="CPU threads per trial (0: the cores over the workers)",
                                         min=0, max=1024)] = 0,
    gpus: Annotated[float, typer.Option(help="GPUs per trial, on Ray")] = 0.0,
    ray_address: Annotated[str | None, typer.Option(help="join a running Ray cluster (HOST:PORT or auto)")
                           ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress display")] = False,
) -> None:
    """Search a recipe: Optuna's TPE samples --space, each trial is a run folder, weak trials are
    pruned on their validation metric; writes OUT/best.toml and a report (needs `nnlab[tune]`)."""
    from nnlab import experiment
    from nnlab.executor import Resources
    from nnlab.tune import make_search, run_search

    if not out_dir:
        raise NnlabError("--out DIR: required (a folder for the search)")
    resources = Resources(workers, threads, _in_range("--gpus", gpus, 0, 64), ray_address)
    resources.check()
    cfg = experiment.resolve_config(task, model, config, data, epochs, set_, embeddings)
    cfg.data.path = tasks.require_data(tasks.get(cfg.task), cfg.data.path)
    search = make_search(cfg, space or [], trials, seed, pruner, storage, heartbeat)
    if not resources.ray and threads:
        import torch

        torch.set_num_threads(threads)
    report_path = run_search(search, Path(out_dir), resources, err, progress=not quiet, test=test)
    out.print(f"report: {report_path}")
    out.print(f"best config: {Path(out_dir) / 'best.toml'}")


@app.command()
def report(
    run_dirs: Annotated[list[str], typer.Argument(help="run folders (or a study folder)")],
    out_dir: Annotated[str, typer.Option("--out", help="folder for report.html and report.md")],
    title: Annotated[str | None, typer.Option(help="the report's title")] = None,
) -> None:
    """Rebuild a comparative report from finished run folders alone, without training."""
    from nnlab.claims import Claim
    from nnlab.fileio import read_json
    from nnlab.report import build_report

    paths: list[Path] = []
    claims = []
    for d in run_dirs:
        p = Path(d)
        if (p / "runs").is_dir() and not (p / "config.json").exists():  # a study folder
            if (p / "study.json").is_file():
                saved = read_json(p / "study.json").get("claims") or []
                try:
                    claims += [Claim.from_dict(c) for c in saved]
                except (KeyError, TypeError, ValueError):
                    raise NnlabError(f"{p / 'study.json'}: claims are not [{{text, pairs}}]") from None
            runs = [q for q in (p / "runs").iterdir() if (q / "config.json").is_file()]
            paths += sorted(runs, key=lambda q: (str(read_json(q / "config.json").get("created", "")),
                                                 q.name))  # study order
        else:
            paths.append(p)
    html_path = build_report(paths, Path(out_dir), title or f"nnlab report: {len(paths)} runs",
                             command=["nnlab", *sys.argv[1:]], claims=claims)
    out.print(f"report: {html_path}")


@app.command()
def demo(
    out_dir: Annotated[str, typer.Option("--out", help="folder for the runs and the reports")] = "runs/demo",
    data: Annotated[str | None, typer.Option(
        help="a folder laid out like $NNLAB_DATA (cifar10/, keyphrase/inspec/, sick/), "
             "or 'generated'")] = None,
    offline: Annotated[bool, typer.Option(
        help="never download CIFAR-10 (without data found, the image study uses generated images)")
    ] = False,
    workers: Annotated[int, typer.Option(
        help="runs at a time on local Ray workers, a thread each; 0: one per core when the ray "
             "extra is installed; 1: one at a time, here", min=0, max=4096)] = 0,
) -> None:
    """The quick budget of one study per task (images, keyphrases, similarity); three reports."""
    from nnlab import demo as demo_mod
    from nnlab.demo import demo_resources

    index = demo_mod.run_demo(Path(out_dir), data, err, offline=offline,
                              resources=demo_resources(workers))
    out.print(f"report: {index}")


def main() -> None:
    from nnlab import distributed

    ok = False
    try:
        if distributed.launched():  # started by torchrun: join the process group first
            distributed.init()
        # without standalone mode, typer returns exit codes (130 for Ctrl-C) instead of exiting
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            if code == 130:
                err.print("interrupted")
            sys.exit(code)
        ok = True
    except NnlabError as e:
        rank = distributed.current().rank
        # one line, bounded: messages quote user data (file lines, fields, names)
        err.print(f"{f'rank {rank}: ' if rank else ''}error: {short(e, 1000)}", markup=False,
                  highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        err.print("interrupted")
        sys.exit(130)
    except typer.TyperException as e:  # bad flags: one line, not a usage panel
        err.print(f"error: {e.format_message()}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    finally:
        distributed.shutdown(ok)
