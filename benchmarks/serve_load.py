"""A bounded load test of `nnlab serve` on loopback: per task, N requests at C concurrent,
then the same with a share of malformed requests mixed in, which the server must survive.

The server is a real `nnlab serve` process (uvicorn); the client (httpx, asyncio) runs in this
process on the same machine, so on 2 cores the two share the CPU: the figures are a floor.
Runs are tiny ones trained on the generated data unless `--runs NAME=DIR ...` names others.

    python benchmarks/serve_load.py [--requests 2000] [--concurrency 16] [--bad 0.1]
    python benchmarks/serve_load.py --mixed [--small 200]

`--mixed`: the latency of small requests (one input) while two clients keep sending
maximum-size requests (inside the server's default limits: 10,000 words, 4 images of 16 M
pixels), to the same model and to another one. The goal: p99 under 1 s on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from nnlab import experiment
from nnlab.host import reference_speeds

TEXT = "We present a neural network controller for wireless sensor networks."
PAIR = ["A man is playing a guitar.", "A man plays the guitar."]


def png() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def request(task: str, bad: bool, image: bytes) -> dict:
    if task == "image":
        content = b"not an image" if bad else image
        return {"files": [("file", ("x.png", content, "image/png"))]}
    if bad:
        return {"content": b"{broken json", "headers": {"content-type": "application/json"}}
    return {"json": {"texts": [TEXT]} if task == "keyphrase" else {"pairs": [PAIR]}}


async def load(url: str, task: str, n: int, concurrency: int, bad_share: float) -> dict:
    rng = random.Random(0)
    plan = [rng.random() < bad_share for _ in range(n)]
    image = png()
    latencies, statuses = [], []
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        async def one(bad: bool) -> None:
            async with gate:
                start = time.perf_counter()
                try:
                    r = await client.post(f"/v1/models/{task}/predict", **request(task, bad, image))
                    statuses.append((bad, r.status_code))
                except httpx.HTTPError:
                    statuses.append((bad, 0))
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(one(b) for b in plan))
        wall = time.perf_counter() - start
        alive = (await client.get("/healthz")).status_code == 200
    errors = sum(1 for bad, code in statuses if (code >= 400 or code == 0) != bad or code >= 500 or code == 0)
    q = statistics.quantiles(latencies, n=100)
    return {"task": task, "requests": n, "concurrency": concurrency, "malformed": sum(plan),
            "p50_ms": q[49] * 1e3, "p99_ms": q[98] * 1e3, "requests_per_s": n / wall,
            "errors": errors, "refused_4xx": sum(1 for _, c in statuses if 400 <= c < 500),
            "alive_after": alive}


def big_request(task: str) -> dict:
    """The largest request the default limits take: 64 inputs, 9,984 words or 64 M pixels."""
    if task == "image":
        out = io.BytesIO()
        Image.fromarray(np.full((4000, 4000, 3), 90, dtype=np.uint8)).save(out, "PNG")
        return {"files": [("file", (f"{i}.png", out.getvalue(), "image/png")) for i in range(4)]}
    words = " ".join(["network"] * 77) + "."  # 78 tokens
    if task == "keyphrase":
        return {"json": {"texts": [words + " " + words] * 64}}
    return {"json": {"pairs": [[words, words]] * 64}}


async def mixed(url: str, big_task: str, small_task: str, n: int) -> dict:
    """Latencies of `n` sequential one-input requests to `small_task` while 2 clients send
    maximum-size requests to `big_task` without pause."""
    image, big = png(), big_request(big_task)
    small = request(small_task, False, image)
    latencies, big_done, big_codes = [], 0, []
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        async def hammer() -> None:
            nonlocal big_done
            while not stop.is_set():
                r = await client.post(f"/v1/models/{big_task}/predict", **big)
                big_codes.append(r.status_code)
                big_done += 1

        hammers = [asyncio.create_task(hammer()) for _ in range(2)]
        await asyncio.sleep(1.0)  # the big requests are under way
        start = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            r = await client.post(f"/v1/models/{small_task}/predict", **small)
            assert r.status_code == 200, r.text
            latencies.append(time.perf_counter() - t)
        wall = time.perf_counter() - start
        stop.set()
        await asyncio.gather(*hammers)
    q = statistics.quantiles(latencies, n=100)
    return {"big_to": big_task, "small_to": small_task, "small_requests": n, "p50_ms": q[49] * 1e3,
            "p99_ms": q[98] * 1e3, "max_ms": max(latencies) * 1e3, "big_requests_done": big_done,
            "big_status": sorted(set(big_codes)), "big_per_s": big_done / wall}


def tiny_runs(root: Path) -> list[str]:
    quiet = Console(quiet=True)
    specs = []
    for task, model, sets in (("image", "cnn", ["data.limit=500"]),
                              ("keyphrase", "bilstm-crf", ["data.limit=100"]),
                              ("similarity", "lstm", ["data.limit=500"])):
        cfg = experiment.resolve_config(task, model, data="generated", epochs=1, sets=sets)
        experiment.train_run(cfg, root / task, quiet, progress=False)
        specs.append(f"{task}={root / task}")
    return specs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--bad", type=float, default=0.1, help="share of malformed requests, 2nd pass")
    parser.add_argument("--runs", nargs="*", help="NAME=RUN_DIR, NAME one of image, keyphrase, similarity")
    parser.add_argument("--mixed", action="store_true", help="small requests beside maximum-size ones")
    parser.add_argument("--small", type=int, default=200, help="--mixed: small requests per row")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    args.out = args.out or f"benchmarks/results/serve_load{'_mixed' if args.mixed else ''}.json"
    host = reference_speeds()
    with tempfile.TemporaryDirectory() as tmp:
        specs = args.runs or tiny_runs(Path(tmp))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "nnlab", "serve", *specs, "--port", str(port)],
                                  env=os.environ | {"PYTHONUNBUFFERED": "1"})
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            rows = []
            if args.mixed:
                names = [spec.split("=", 1)[0] for spec in specs]
                for big in names:
                    for small in names:
                        if small == big or small == names[(names.index(big) + 1) % len(names)]:
                            rows.append(asyncio.run(mixed(url, big, small, args.small)))
                batches = httpx.get(f"{url}/v1/models").json()
                return finish_mixed(args, host, rows, batches)
            for spec in specs:
                task = spec.split("=", 1)[0]
                for share in (0.0, args.bad):
                    rows.append(asyncio.run(load(url, task, args.requests, args.concurrency, share)))
            batches = httpx.get(f"{url}/v1/models").json()
        finally:
            server.terminate()
            server.wait(timeout=30)
    table = Table(title=f"nnlab serve on loopback: {args.requests} requests, {args.concurrency} concurrent; "
                        f"{host['cpu']}, {host['threads']} threads")
    for col in ("task", "malformed", "p50 ms", "p99 ms", "requests/s", "refused (4xx)", "errors", "alive"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for r in rows:
        table.add_row(r["task"], str(r["malformed"]), f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
                      f"{r['requests_per_s']:.0f}", str(r["refused_4xx"]), str(r["errors"]),
                      "yes" if r["alive_after"] else "NO")
    Console().print(table)
    for m in batches:
        print(f"{m['name']}: {m['requests']} requests in {m['batches']} batches")
    Console().print(f"host reference: {host}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"host": host, "rows": rows, "batching": [
        {k: m[k] for k in ("name", "requests", "batches")} for m in batches]}, indent=1) + "\n")


def finish_mixed(args, host: dict, rows: list[dict], batches: list[dict]) -> None:
    table = Table(title=f"nnlab serve: one-input requests while 2 clients send maximum-size ones; "
                        f"{host['cpu']}, {host['threads']} threads")
    for col in ("big requests to", "small requests to", "p50 ms", "p99 ms", "max ms", "big done",
                "big status"):
        table.add_column(col, justify="left" if "to" in col else "right")
    for r in rows:
        table.add_row(r["big_to"], r["small_to"], f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}",
                      f"{r['max_ms']:.0f}", str(r["big_requests_done"]), str(r["big_status"]))
    Console().print(table)
    Console().print(f"host reference: {host}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"host": host, "mixed": rows, "batching": [
        {k: m[k] for k in ("name", "requests", "batches")} for m in batches]}, indent=1) + "\n")


if __name__ == "__main__":
    main()
