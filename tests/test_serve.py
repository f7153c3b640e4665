"""`nnlab serve`: the API answers as `nnlab predict --json` does, batches concurrent requests,
answers every client mistake with a 4xx JSON error and stays up; the page works in Chromium."""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient
from test_bad_input import png_of_size
from test_report_browser import REPO, browser_page

from nnlab import experiment
from nnlab.serve.app import Limits, create_app, load_served
from nnlab.tasks import PredictOptions

TEXT = "We present a neural network controller for wireless sensor networks."
PAIR = ["A man is playing a guitar.", "A man plays the guitar."]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One tiny run per task, on the generated data."""
    root = tmp_path_factory.mktemp("runs")
    quiet = Console(quiet=True)
    found = {}
    for task, model, sets in (("image", "cnn", ["data.limit=200"]),
                              ("keyphrase", "bilstm-crf", ["data.limit=60"]),
                              ("similarity", "lstm", ["data.limit=300"])):
        cfg = experiment.resolve_config(task, model, data="generated", epochs=1, sets=sets)
        experiment.train_run(cfg, root / task, quiet, progress=False)
        found[task] = root / task
    return found


def png(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def client(runs):
    limits = Limits(max_body=2 << 20, max_chars=500, wait=0.05)
    served = load_served([f"{name}={path}" for name, path in runs.items()], "cpu", limits)
    with TestClient(create_app(served, limits)) as c:
        yield c


def test_answers_match_nnlab_predict(client, runs, tmp_path):
    assert client.get("/healthz").json() == {"status": "ok", "models": 3}
    listed = {m["name"]: m for m in client.get("/v1/models").json()}
    assert set(listed) == {"image", "keyphrase", "similarity"}
    assert listed["image"]["outputs"]["classes"] and listed["similarity"]["outputs"]["score_range"]
    assert listed["keyphrase"]["metric"] == "span_f1" and listed["keyphrase"]["validation"] is not None

    files = []
    for i in range(2):
        (tmp_path / f"{i}.png").write_bytes(png(i))
        files.append(str(tmp_path / f"{i}.png"))
    r = client.post("/v1/models/image/predict",
                    files=[("file", (Path(f).name, Path(f).read_bytes(), "image/png")) for f in files])
    assert r.status_code == 200, r.text
    _, expected = experiment.predict_run(runs["image"], files, PredictOptions(), "cpu")
    assert [x["top"] for x in r.json()] == [x["top"] for x in expected]

    r = client.post("/v1/models/keyphrase/predict", json={"texts": [TEXT]})
    assert r.status_code == 200, r.text
    assert r.json() == experiment.predict_run(runs["keyphrase"], [TEXT], PredictOptions(), "cpu")[1]

    r = client.post("/v1/models/similarity/predict", json={"pairs": [PAIR]})
    assert r.status_code == 200, r.text
    assert r.json() == experiment.predict_run(runs["similarity"], PAIR, PredictOptions(), "cpu")[1]


def test_concurrent_requests_are_batched(client):
    before = {m["name"]: m for m in client.get("/v1/models").json()}["similarity"]
    pairs = [[f"A man is playing instrument {i}.", "A man plays music."] for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda p: client.post("/v1/models/similarity/predict",
                                                      json={"pairs": [p]}), pairs))
    assert all(a.status_code == 200 for a in answers)
    alone = client.post("/v1/models/similarity/predict", json={"pairs": pairs}).json()
    assert [a.json()[0]["score"] for a in answers] == [x["score"] for x in alone]
    after = {m["name"]: m for m in client.get("/v1/models").json()}["similarity"]
    requests, batches = after["requests"] - before["requests"], after["batches"] - before["batches"]
    assert requests == 17 and batches < 17  # 16 concurrent requests shared forward passes


@pytest.mark.parametrize("path,kwargs,status,words", [
    ("keyphrase", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400,
     "not valid JSON"),
    ("image", {"files": [("file", ("notes.png", b"not an image at all", "image/png"))]}, 400,
     "not a readable image"),
    ("image", {"files": [("file", ("bomb.png", png_of_size(10_000, 10_000), "image/png"))]}, 400,
     "decompression bomb"),
    ("image", {"files": [("file", ("big.png", b"x" * (3 << 20), "image/png"))]}, 413, "limit"),
    ("keyphrase", {"json": {"texts": ["   "]}}, 400, "empty"),
    ("keyphrase", {"json": {"texts": ["word " * 200]}}, 400, "limit of 500"),
    ("nosuch", {"json": {"texts": ["a text"]}}, 404, "no model 'nosuch'"),
    ("image", {"json": {"texts": ["a text"]}}, 400, "multipart"),
    ("keyphrase", {"files": [("file", ("a.png", b"x", "image/png"))]}, 400, '"texts"'),
    ("similarity", {"json": {"pairs": [["only one"]]}}, 400, '"pairs"'),
    ("similarity", {"json": {"pairs": [["", "a sentence"]]}}, 400, "empty"),
    ("similarity", {"json": {"pairs": [PAIR] * 65}}, 400, "limit of 64"),
    ("keyphrase", {"json": ["a text"]}, 400, '"texts"'),
])
def test_client_mistakes_are_4xx_json_and_the_server_stays_up(client, path, kwargs, status, words):
    r = client.post(f"/v1/models/{path}/predict", **kwargs)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]
    assert client.post("/v1/models/keyphrase/predict", json={"texts": [TEXT]}).status_code == 200


def test_token_guards_the_api(runs):
    limits = Limits()
    served = load_served([str(runs["similarity"])], "cpu", limits)
    with TestClient(create_app(served, limits, token="s3cret")) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = c.post("/v1/models/similarity/predict", json={"pairs": [PAIR]},
                    headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and 1 <= ok.json()[0]["score"] <= 5


def test_binding_beyond_loopback_needs_a_token(run_cli, runs, monkeypatch):
    monkeypatch.delenv("NNLAB_TOKEN", raising=False)
    r = run_cli("serve", runs["image"], "--host", "0.0.0.0")
    assert r.code == 2 and "needs a token" in r.err and "Traceback" not in r.err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_page_in_chromium(runs, tmp_path):
    """A person's use of the page: an image's class bars, a text's keyphrases, a pair's score."""
    import uvicorn

    limits = Limits()
    served = load_served([f"{name}={path}" for name, path in runs.items()], "cpu", limits)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(served, limits), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        (tmp_path / "cat.png").write_bytes(png(3))
        with browser_page({"width": 1100, "height": 1000}) as (page, errors):
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
            image = page.locator("section[data-model=image]")
            image.locator("input[type=file]").set_input_files(str(tmp_path / "cat.png"))
            image.locator("button").click()
            image.locator(".bar").first.wait_for()
            assert image.locator(".bar").count() == 3
            text = page.locator("section[data-model=keyphrase]")
            text.locator("textarea").fill("   ")
            text.locator("button").click()
            text.locator(".error").wait_for()
            assert "empty" in text.locator(".error").inner_text()
            text.locator("textarea").fill(TEXT)
            text.locator("button").click()
            text.locator(".out").get_by_text("network", exact=False).first.wait_for()
            assert text.locator(".out").inner_text().strip().startswith("We present")
            pair = page.locator("section[data-model=similarity]")
            pair.locator("input").nth(0).fill(PAIR[0])
            pair.locator("input").nth(1).fill(PAIR[1])
            pair.locator("button").click()
            pair.locator(".score").wait_for()
            score = float(pair.locator(".score").inner_text())
            assert 1 <= score <= 5
            shot = Path(os.environ.get("NNLAB_TEST_ARTIFACTS", REPO / "test-artifacts"))
            shot.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot / "serve.png"), full_page=True)
        assert [e for e in errors if "400" not in e] == []  # the empty text's 400 is expected
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert json.loads(json.dumps(served[0].describe()))["requests"] >= 1
