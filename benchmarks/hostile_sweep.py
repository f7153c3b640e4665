"""A hostile user's sweep over the CLI's options and the server's routes: every case must end
in a clean result or a clean refusal (CLI: exit 0, or exit 2 with one line on stderr; HTTP:
a status below 500), never in a traceback, a 5xx, a hang or a file written where it must not.

The CLI cases run in this process through `nnlab.cli.main` (torch is imported once); the HTTP
cases go to a real `nnlab serve` process (uvicorn) on loopback, one without and one with a
token. Runs are tiny ones trained on the generated data. Point PYTHONPATH at another
checkout's `src` to sweep that version (the before/after table of issue 28 came from that).

    python benchmarks/hostile_sweep.py [--out benchmarks/results/hostile_sweep.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from nnlab import cli, experiment
from nnlab.host import cpu_name

TEXT = "We present a neural network controller for wireless sensor networks."
PAIR = ["A man is playing a guitar.", "A man plays the guitar."]


def png(width: int, height: int, noise: bool = False) -> bytes:
    pixels = (np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8) if noise
              else np.zeros((height, width, 3), dtype=np.uint8))
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def run_cli(args: list[str], timeout_note: str = "") -> dict:
    """One CLI case in-process: its exit code, stderr's lines, and whether a traceback escaped."""
    out, err = io.StringIO(), io.StringIO()
    argv, code, escaped = sys.argv, 0, None
    sys.argv = ["nnlab", *args]
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.err.file, cli.out.file = err, out
            cli.main()
    except SystemExit as e:
        code = int(e.code or 0) if not isinstance(e.code, str) else 1
    except BaseException as e:  # escaped main: a traceback the user would see
        escaped = "".join(traceback.format_exception_only(type(e), e)).strip()
        code = 1
    finally:
        sys.argv = argv
        cli.err.file, cli.out.file = sys.stderr, sys.stdout
    text = err.getvalue()
    lines = [line for line in text.splitlines() if line.strip()]
    traceback_seen = escaped is not None or "Traceback" in text
    clean = not traceback_seen and (code == 0 or (code == 2 and len(lines) == 1))
    return {"args": args, "code": code, "stderr": (escaped or text.strip())[:300], "traceback": traceback_seen,
            "clean": clean, "seconds": round(time.perf_counter() - start, 2)}


def run_cli_process(args: list[str], timeout: float = 20.0) -> dict:
    """One CLI case in a process of its own (`serve` blocks when it starts): a command still
    running after `timeout` seconds has started serving, which for a bad option is a failure."""
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "nnlab", *args], capture_output=True, text=True,
                              timeout=timeout, env=os.environ | {"NNLAB_TOKEN": ""})
        code, text = done.returncode, done.stderr
    except subprocess.TimeoutExpired as e:
        code, text = -1, f"still running after {timeout:g} s (it started serving) " + (
            (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or ""))
    lines = [line for line in text.splitlines() if line.strip()]
    traceback_seen = "Traceback" in text
    clean = not traceback_seen and (code == 0 or (code == 2 and len(lines) == 1))
    return {"args": args, "code": code, "stderr": text.strip()[:300], "traceback": traceback_seen,
            "clean": clean, "seconds": round(time.perf_counter() - start, 2)}


def cli_cases(runs: dict[str, Path], tmp: Path) -> list[list[str]]:
    image, tagger, pairs = (str(runs[k]) for k in ("image", "keyphrase", "similarity"))
    train = ["train", "similarity", "--model", "lstm", "--data", "generated", "--epochs", "1"]
    (tmp / "taken").write_text("a file")
    (tmp / "notes.json").write_text("{}")
    cases = [
        # serve: numbers out of range (a bad value must stop it before it binds)
        *[["serve", pairs, *a] for a in (["--port", "70000"], ["--port", "-1"], ["--port", "0"],
                                         ["--max-body-mb", "nan"], ["--max-body-mb", "-1"],
                                         ["--max-body-mb", "inf"], ["--batch-wait-ms", "inf"],
                                         ["--batch-wait-ms", "nan"], ["--batch-wait-ms", "-5"],
                                         ["--max-batch", "0"], ["--max-chars", "-1"], ["--top-k", "0"],
                                         ["--token", " "], ["--token", ""], ["--host", "0.0.0.0"],
                                         ["--host", "not an address"], ["--header-timeout", "0"],
                                         ["--max-words", "0"], ["--max-image-pixels", "-3"])],
        ["serve", str(tmp / "nothing")], ["serve", f"a={pairs}", f"a={pairs}"],
        # predict / evaluate
        ["predict", image, str(tmp / "none.png"), "--top-k", "-1"], ["predict", image, "--top-k", "0"],
        ["predict", image, "x.png", "--top-k", "99999999999999999999"], ["predict", pairs, "one only"],
        ["predict", pairs, "--pairs", str(tmp / "missing.tsv")], ["predict", tagger, "--files", "/nonexistent"],
        ["predict", pairs, "a b", "c d", "--json"], ["predict", pairs, "a", "b", "--device", "tpu"],
        ["evaluate", pairs, "--split", "train"], ["evaluate", pairs, "--tta", "rotate"],
        ["evaluate", str(tmp / ":x: [bold]x[/]")], ["evaluate", image, "--data", "/dev/null"],
        ["evaluate", pairs, "--split", "test"], ["evaluate", pairs, "--json"],
        # models
        *[["models", "cnn", "--input-shape", s] for s in ("-1,32,32", "3,100000,100000", "3,0,0", "a,b,c",
                                                         "3,32", "1,1,1", "3,32,32,3")],
        ["models", "fast", "--input-shape", "3,4,4"], ["models", "cnn", "--classes", "0"],
        ["models", "cnn", "--classes", "-5"], ["models", "nosuch"], ["models", "resnet18", "--classes", "1"],
        # train: --set numbers and types
        *[[*train, "--set", s, "--out", str(tmp / "r")] for s in (
            "train.seed=99999999999999999999999", "train.seed=-1", "data.split_seed=18446744073709551616",
            "data.limit=-5", "data.val_size=1.5", "data.val_size=-0.1", "data.val_size=nan",
            "optim.lr=nan", "optim.lr=-1", "optim.lr=inf", "optim.momentum=7", "train.epochs=0",
            "train.epochs=99999999999", "data.batch_size=0", "data.batch_size=1e30", "schedule.gamma=-1",
            "optim.betas=[2, 3]", "train.threads=-2", "train.threads=100000", "train.grad_clip=nan",
            "data.max_word_chars=0", "nosuch.key=1", "train.seed=abc", "train.seed=", "data.limit=1e400")],
        [*train, "--epochs", "-1", "--out", str(tmp / "r2")], [*train, "--out", str(tmp / "taken")],
        # reproduce
        *[["reproduce", "similarity", "--seeds", s, "--out", str(tmp / "st")] for s in (
            "99999999999999999999999", "-1", "0,0", ",", "1e3", "18446744073709551616")],
        ["reproduce", "nosuch", "--out", str(tmp / "st2")], ["reproduce", "similarity", "--budget", "huge",
                                                             "--out", str(tmp / "st3")],
        # export
        ["export", pairs, "--out", str(Path(pairs) / "config.onnx")],
        ["export", pairs, "--out", str(Path(pairs) / "config.onnx"), "--force"],
        ["export", pairs, "--out", "/dev/full.onnx"], ["export", pairs, "--out", "/proc/x.onnx"],
        ["export", pairs, "--out", str(tmp / ("n" * 300 + ".onnx"))], ["export", pairs, "--out", str(tmp / "x.txt")],
        ["export", pairs, "--out", str(tmp / "notes.onnx")], ["export", pairs, "--out", str(tmp / "e.onnx")],
        ["export", pairs, "--out", str(tmp / "e.onnx")], ["export", pairs, "--out", str(tmp / "e.onnx"), "--force"],
        ["export", pairs, "--out", str(tmp)], ["export", pairs, "--format", "tflite", "--out", str(tmp / "f.onnx")],
        # report
        ["report", pairs, "--out", str(tmp / "taken")], ["report", str(tmp / "nothing"), "--out", str(tmp / "rep")],
        ["report", pairs, image, "--out", str(tmp / "rep2")], ["report", pairs, "--out", str(tmp / "rep3")],
        # cache
        ["cache", "clean", "features"], ["cache", "clean", "--older-than", "nan"],
        ["cache", "clean", "--older-than", "-1"], ["cache", "clean", "--older-than", "1e308"],
        ["cache", "info", "--json"], ["cache", "clean", "--dry-run"],
        # help text and data
        ["serve", "--help"], ["export", "--help"], ["data", "get", "nosuch"], ["nosuch-command"],
    ]
    return cases


def http_cases() -> list[tuple[str, str, dict]]:
    big_pairs = {"pairs": [["a " * 10_000, "b " * 10_000]] * 64}
    deep = b"[" * 100_000 + b"]" * 100_000
    return [
        ("GET", "/healthz", {}), ("GET", "/v1/models", {}), ("GET", "/", {}), ("GET", "/docs", {}),
        ("GET", "/openapi.json", {}), ("GET", "/nosuch", {}), ("DELETE", "/v1/models", {}),
        ("POST", "/v1/models/nosuch/predict", {"json": {"texts": [TEXT]}}),
        ("POST", "/v1/models/keyphrase/predict", {"json": {"texts": [TEXT]}}),
        ("POST", "/v1/models/similarity/predict", {"json": {"pairs": [PAIR]}}),
        ("POST", "/v1/models/similarity/predict", {"json": big_pairs}),
        ("POST", "/v1/models/keyphrase/predict", {"json": {"texts": ["w " * 9_000] * 64}}),
        ("POST", "/v1/models/keyphrase/predict", {"content": deep, "headers": {"content-type": "application/json"}}),
        ("POST", "/v1/models/keyphrase/predict", {"content": b'{"texts": ["\\ud800"]}',
                                                  "headers": {"content-type": "application/json"}}),
        ("POST", "/v1/models/similarity/predict", {"content": b'{"pairs": [["a", "\\udc00"]]}',
                                                   "headers": {"content-type": "application/json"}}),
        ("POST", "/v1/models/keyphrase/predict", {"content": b'{"texts": [NaN]}',
                                                  "headers": {"content-type": "application/json"}}),
        ("POST", "/v1/models/keyphrase/predict", {"content": json.dumps({"texts": [TEXT]}).encode(),
                                                  "headers": {"content-type": "text/plain"}}),
        ("POST", "/v1/models/keyphrase/predict", {"content": b"{not json",
                                                  "headers": {"content-type": "application/json"}}),
        ("POST", "/v1/models/keyphrase/predict", {"json": {"texts": []}}),
        ("POST", "/v1/models/keyphrase/predict", {"json": {"texts": [" "]}}),
        ("POST", "/v1/models/keyphrase/predict", {"json": {"texts": [1, 2]}}),
        ("POST", "/v1/models/keyphrase/predict", {"json": {"texts": ["x" * 30_000]}}),
        ("POST", "/v1/models/keyphrase/predict", {"json": {"texts": [TEXT] * 65}}),
        ("POST", "/v1/models/keyphrase/predict", {"json": "just a string"}),
        ("POST", "/v1/models/keyphrase/predict", {"json": None}),
        ("POST", "/v1/models/similarity/predict", {"json": {"pairs": [["", ""]]}}),
        ("POST", "/v1/models/similarity/predict", {"json": {"pairs": [[1, 2]]}}),
        ("POST", "/v1/models/similarity/predict", {"json": {"pairs": [["a", "b", "c"]]}}),
        ("POST", "/v1/models/image/predict", {"files": [("file", ("a.png", png(40, 30, True), "image/png"))]}),
        ("POST", "/v1/models/image/predict", {"files": [("file", ("big.png", png(9000, 9000), "image/png"))]}),
        ("POST", "/v1/models/image/predict", {"files": [("file", (f"{i}.png", png(3000, 3000), "image/png"))
                                                        for i in range(10)]}),
        ("POST", "/v1/models/image/predict", {"files": [("file", ("x.png", b"not an image", "image/png"))]}),
        ("POST", "/v1/models/image/predict", {"content": b'--x\r\nContent-Disposition: form-data; name="file"; filename="\xff\xfe.png"\r\n\r\n' + png(8, 8) + b"\r\n--x--\r\n", "headers": {"content-type": "multipart/form-data; boundary=x"}}),
        ("POST", "/v1/models/image/predict", {"json": {"texts": [TEXT]}}),
        ("POST", "/v1/models/image/predict", {"content": b"--x\r\nbroken", "headers": {
            "content-type": "multipart/form-data; boundary=x"}}),
        ("POST", "/v1/models/image/predict", {"content": b"x" * (21 << 20), "headers": {
            "content-type": "application/json"}}),
        ("POST", "/v1/models/keyphrase/predict", {"json": {"texts": [TEXT]}, "headers": {"host": "evil.example"}}),
        ("GET", "/v1/models", {"headers": {"host": "rebind.attacker.test:8000"}}),
        ("GET", "/", {"headers": {"host": "localhost"}}),
        ("POST", "/v1/models/keyphrase/predict", {"json": {"texts": [":x: [bold]t[/]"]}}),
        ("POST", "/v1/models/keyphrase/predict", {"json": {"texts": ["\u202e\u0000 control \U0001f600"]}}),
        ("OPTIONS", "/v1/models/keyphrase/predict", {}),
        ("PUT", "/v1/models/keyphrase/predict", {"json": {"texts": [TEXT]}}),
    ]


def tiny_runs(root: Path) -> dict[str, Path]:
    quiet = Console(quiet=True)
    found = {}
    for task, model, sets in (("image", "cnn", ["data.limit=200"]),
                              ("keyphrase", "bilstm-crf", ["data.limit=60"]),
                              ("similarity", "lstm", ["data.limit=300"])):
        cfg = experiment.resolve_config(task, model, data="generated", epochs=1, sets=sets)
        experiment.train_run(cfg, root / task, quiet, progress=False)
        found[task] = root / task
    return found


def serve(runs: dict[str, Path], token: str | None) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    extra = ["--token", token] if token else []
    proc = subprocess.Popen([sys.executable, "-m", "nnlab", "serve", *[f"{k}={v}" for k, v in runs.items()],
                             "--port", str(port), *extra], env=os.environ | {"PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"nnlab serve exited: {proc.stderr.read().decode(errors='replace')}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code < 500:  # an old server: 200
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return proc, url


def sweep_http(runs: dict[str, Path], token: str | None) -> list[dict]:
    proc, url = serve(runs, token)
    results = []
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            for method, path, kwargs in http_cases():
                kw = dict(kwargs)
                if token:
                    kw["headers"] = {**kw.get("headers", {}), "authorization": f"Bearer {token}"}
                start = time.perf_counter()
                try:
                    r = client.request(method, path, **kw)
                    status, body = r.status_code, r.text[:160]
                except httpx.HTTPError as e:
                    status, body = 0, f"{type(e).__name__}: {e}"[:160]
                results.append({"server": "token" if token else "open", "method": method, "path": path,
                                "case": json.dumps({k: (v if k != "files" else len(v)) for k, v in kwargs.items()
                                                    if k != "content"} | ({"content": kwargs["content"][:40].decode(
                                                        "latin-1")} if "content" in kwargs else {}))[:120],
                                "status": status, "body": body, "seconds": round(time.perf_counter() - start, 2)})
            checks = [("/v1/models", "no token"), ("/openapi.json", "no token"), ("/docs", "no token"),
                      ("/", "no token")] if token else []
            for path, case in [*checks, ("/healthz", "alive after the sweep")]:
                try:  # without the token, every route but /healthz and the page's shell
                    r = client.get(path, headers={"authorization": f"Bearer {token}"} if token and case != "no token" else {})
                    status, body = r.status_code, r.text[:160]
                except httpx.HTTPError as e:
                    status, body = 0, f"{type(e).__name__}: {e}"[:160]
                results.append({"server": "token" if token else "open", "method": "GET", "path": path,
                                "case": case, "status": status, "body": body, "seconds": 0.0})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
            stopped = True
        except subprocess.TimeoutExpired:
            proc.kill()
            stopped = False
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    results.append({"server": "token" if token else "open", "method": "SIGTERM", "path": "-",
                    "case": "stops within 20 s", "status": 200 if stopped else 0,
                    "body": "Traceback in server log" if "Traceback" in stderr else "", "seconds": 0.0})
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks/results/hostile_sweep.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NNLAB_CACHE_DIR"] = str(Path(tmp) / "cache")
        runs = tiny_runs(Path(tmp) / "runs")
        work = Path(tmp) / "work"
        work.mkdir()
        copies = {k: Path(shutil.copytree(v, work / "runs" / k)) for k, v in runs.items()}  # the CLI may break them
        cli_results = [run_cli_process(case) if case[0] == "serve" and "--help" not in case else run_cli(case)
                       for case in cli_cases(copies, work)]
        written_in_dev = [p for p in ("/dev/full.json", "/dev/full.onnx") if Path(p).exists()]
        http_results = sweep_http(runs, None) + sweep_http(runs, "s3cret-token")
    tracebacks = [r for r in cli_results if r["traceback"]]
    unclean = [r for r in cli_results if not r["clean"]]
    fives = [r for r in http_results if r["status"] >= 500 or r["status"] == 0]
    table = Table(title=f"hostile sweep: {len(cli_results)} CLI cases, {len(http_results)} HTTP cases; {cpu_name()}")
    for col in ("kind", "case", "result"):
        table.add_column(col)
    for r in cli_results:
        table.add_row("cli", " ".join(a[:40] for a in r["args"])[:90],
                      f"exit {r['code']}" + (" TRACEBACK" if r["traceback"] else "") +
                      ("" if r["clean"] else " UNCLEAN") + f": {r['stderr'][:70]}")
    for r in http_results:
        table.add_row(f"http/{r['server']}", f"{r['method']} {r['path']} {r['case'][:60]}",
                      f"{r['status']}: {r['body'][:70]}")
    Console(width=200).print(table)
    summary = {"cli_cases": len(cli_results), "cli_tracebacks": len(tracebacks), "cli_unclean": len(unclean),
               "http_cases": len(http_results), "http_5xx_or_no_answer": len(fives),
               "files_written_in_dev": written_in_dev, "host": cpu_name()}
    print(json.dumps(summary))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "cli": cli_results, "http": http_results},
                                         indent=1) + "\n")


if __name__ == "__main__":
    main()
