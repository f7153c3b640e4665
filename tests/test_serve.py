"""`nnlab serve`: the API answers as `nnlab predict --json` does, batches concurrent requests,
answers every client mistake with a 4xx JSON error and stays up; the page works in Chromium."""

from __future__ import annotations

import contextlib
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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from rich.console import Console

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient
from test_bad_input import png_of_size
from test_fuzz import mutated
from test_report_browser import REPO, browser_page

from nnlab import experiment
from nnlab.errors import NnlabError
from nnlab.serve.app import Limits, create_app, load_served

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
    with local(create_app(served, limits)) as c:
        yield c


def local(app) -> TestClient:
    """A test client that names the server as a browser on this machine does (Host 127.0.0.1)."""
    return TestClient(app, base_url="http://127.0.0.1:8000")


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
    _, expected = experiment.predict_run(runs["image"], files, {}, "cpu")
    assert [x["top"] for x in r.json()] == [x["top"] for x in expected]

    r = client.post("/v1/models/keyphrase/predict", json={"texts": [TEXT]})
    assert r.status_code == 200, r.text
    assert r.json() == experiment.predict_run(runs["keyphrase"], [TEXT], {}, "cpu")[1]

    r = client.post("/v1/models/similarity/predict", json={"pairs": [PAIR]})
    assert r.status_code == 200, r.text
    assert r.json() == experiment.predict_run(runs["similarity"], PAIR, {}, "cpu")[1]


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
    ("image", {"files": [("file", ("bomb.png", png_of_size(10_000, 10_000), "image/png"))]}, 413,
     "100,000,000 pixels"),
    ("image", {"files": [("file", ("big.png", b"x" * (3 << 20), "image/png"))]}, 413, "limit"),
    ("keyphrase", {"json": {"texts": ["   "]}}, 400, "empty"),
    ("keyphrase", {"json": {"texts": ["word " * 200]}}, 400, "limit of 500"),
    ("nosuch", {"json": {"texts": ["a text"]}}, 404, "no model 'nosuch'"),
    ("image", {"json": {"texts": ["a text"]}}, 400, "multipart"),
    ("keyphrase", {"files": [("file", ("a.png", b"x", "image/png"))]}, 400, '"texts"'),
    ("similarity", {"json": {"pairs": [["only one"]]}}, 400, '"pairs"'),
    ("similarity", {"json": {"pairs": [["", "a sentence"]]}}, 400, "empty"),
    ("similarity", {"json": {"pairs": [PAIR] * 65}}, 413, "limit of 64"),
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
    with local(create_app(served, limits, token="s3cret")) as c:
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


@contextlib.contextmanager
def uvicorn_server(app, **config):
    """A real uvicorn server on a free loopback port, in a thread; yields the port."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_page_in_chromium(runs, tmp_path):
    """A person's use of the page: an image's class bars, a text's keyphrases, a pair's score."""

    limits = Limits()
    served = load_served([f"{name}={path}" for name, path in runs.items()], "cpu", limits)
    with uvicorn_server(create_app(served, limits)) as port:
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
    assert json.loads(json.dumps(served[0].describe()))["requests"] >= 1


# -- hostile clients: cost limits, splitting, isolation, guards, malformed bodies ----------------
def test_a_request_costs_what_the_limits_allow(client, runs):
    """64 pairs of 10,000 words fit the body cap but would take minutes: refused before any
    model runs; so are images whose headers promise too many pixels."""
    huge = ["a " * 10_000, "b " * 10_000]
    r = client.post("/v1/models/similarity/predict", json={"pairs": [huge] * 8})
    assert r.status_code == 400 and "characters" in r.json()["error"]
    limits = Limits(max_chars=50_000, max_words=1_000)
    served = load_served([f"similarity={runs['similarity']}"], "cpu", limits)
    with local(create_app(served, limits)) as c:
        r = c.post("/v1/models/similarity/predict", json={"pairs": [huge] * 64})
        assert r.status_code == 400 and "limit of 1,000" in r.json()["error"]
        assert served[0].batcher.batches == 0  # refused before the model saw it
    big = png_of_size(5000, 4000)  # 20 M pixels, a few KB of PNG
    r = client.post("/v1/models/image/predict", files=[("file", ("big.png", big, "image/png"))])
    assert r.status_code == 413 and "20,000,000 pixels" in r.json()["error"]
    small = png_of_size(3000, 3000)  # 9 M pixels each: 8 of them pass one by one, not together
    r = client.post("/v1/models/image/predict",
                    files=[("file", (f"{i}.png", small, "image/png")) for i in range(8)])
    assert r.status_code == 413 and "in one request" in r.json()["error"]


def test_max_batch_splits_a_large_request_fairly(runs):
    from nnlab.serve.batcher import Pending, fair_slices

    loop_future = object()
    big, one = Pending(list(range(64)), loop_future), Pending([0], loop_future)  # type: ignore[arg-type]
    assert [(p is big, a, b) for p, a, b in fair_slices([big, one], 8)] == [(True, 0, 7), (False, 0, 1)]
    assert [(a, b) for _, a, b in fair_slices([big], 8)] == [(0, 8)]

    limits = Limits(max_batch=4, wait=0.0)
    served = load_served([f"similarity={runs['similarity']}"], "cpu", limits)
    pairs = [[f"A man is playing instrument {i}.", "A man plays music."] for i in range(10)]
    with local(create_app(served, limits)) as c:
        r = c.post("/v1/models/similarity/predict", json={"pairs": pairs})
        assert r.status_code == 200 and len(r.json()) == 10
    assert served[0].batcher.batches == 3  # 4 + 4 + 2
    whole = client_scores(runs, pairs)
    assert [x["score"] for x in r.json()] == whole  # split or not, the same answers


def client_scores(runs, pairs) -> list[float]:
    limits = Limits(max_batch=64)
    served = load_served([f"similarity={runs['similarity']}"], "cpu", limits)
    with local(create_app(served, limits)) as c:
        return [x["score"] for x in c.post("/v1/models/similarity/predict", json={"pairs": pairs}).json()]


def test_one_models_slow_batch_does_not_block_another(runs):
    """Each model has its own worker: while the image model is stuck in a batch, the text
    model still answers."""
    limits = Limits(wait=0.0)
    served = load_served([f"{n}={p}" for n, p in runs.items()], "cpu", limits)
    assert len({id(s.batcher.executor) for s in served}) == 3
    release = threading.Event()
    image = next(s for s in served if s.name == "image")
    slow = image.batcher.predict
    image.batcher.predict = lambda inputs: (release.wait(30), slow(inputs))[1]
    with local(create_app(served, limits)) as c, ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(c.post, "/v1/models/image/predict",
                            files=[("file", ("x.png", png(1), "image/png"))])
        time.sleep(0.3)
        r = c.post("/v1/models/keyphrase/predict", json={"texts": [TEXT]})
        assert r.status_code == 200 and not stuck.done()
        release.set()
        assert stuck.result(timeout=30).status_code == 200


@pytest.mark.parametrize("body,words", [
    (b'{"texts": ["\\ud800 a lone surrogate"]}', "surrogate"),
    (b'{"pairs": [["fine", "\\udfff"]]}', "surrogate"),
    (b"[" * 5000 + b"]" * 5000, "nested"),
    (b'{"texts": ' + b"[" * 40 + b'"x"' + b"]" * 40 + b"}", "nested"),
    (b'{"texts": ["NaN"], "x": NaN}', None),
])
def test_malformed_json_is_4xx(client, body, words):
    for model in ("keyphrase", "similarity"):
        r = client.post(f"/v1/models/{model}/predict", content=body,
                        headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, r.text
        assert words is None or words in r.json()["error"]


def test_only_json_or_multipart_bodies(client):
    for kind in ("text/plain", "application/x-www-form-urlencoded", ""):
        r = client.post("/v1/models/keyphrase/predict", content=json.dumps({"texts": [TEXT]}),
                        headers={"content-type": kind} if kind else {})
        assert r.status_code == 415 and "application/json" in r.json()["error"]
    ok = client.post("/v1/models/keyphrase/predict", content=json.dumps({"texts": [TEXT]}),
                     headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


def test_host_header_is_checked(runs):
    """DNS rebinding: a page of evil.example re-pointed at 127.0.0.1 sends its own name."""
    limits = Limits()
    served = load_served([str(runs["similarity"])], "cpu", limits)
    app = create_app(served, limits, allowed_hosts=["127.0.0.1", "localhost", "::1", "models.lan"])
    for base, status in (("http://evil.example", 400), ("http://127.0.0.1:8000", 200),
                         ("http://localhost", 200), ("http://[::1]:9000", 200),
                         ("http://models.lan:8000", 200), ("http://127.0.0.1.evil.example", 400)):
        with TestClient(app, base_url=base) as c:
            r = c.get("/v1/models")
            assert r.status_code == status, (base, r.text)
            if status == 400:
                assert "not served here" in r.json()["error"]


def test_the_token_covers_every_route_and_the_page_holds_no_data(runs):
    limits = Limits()
    served = load_served([f"secret-model={runs['similarity']}"], "cpu", limits)
    with local(create_app(served, limits, token="s3cret")) as c:
        assert c.get("/healthz").status_code == 200
        for path in ("/v1/models", "/openapi.json", "/docs", "/v1/models/secret-model/predict"):
            assert c.get(path).status_code == 401, path
        page = c.get("/")
        assert page.status_code == 200 and "secret-model" not in page.text
        assert str(runs["similarity"]) not in page.text and '{"token": true}' in page.text
        ok = c.get("/openapi.json", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and "/v1/models/{name}/predict" in ok.json()["paths"]
        docs = c.get("/docs", headers={"Authorization": "Bearer s3cret"})
        assert "openapi.json" in docs.text and "http" not in docs.text.split("<p>")[1].split("cdn")[0]
    for blank in ("", " ", "\t\n"):
        with pytest.raises(NnlabError, match="whitespace"):
            create_app(served, limits, token=blank)


def test_serve_options_are_range_checked(run_cli, runs, monkeypatch):
    monkeypatch.delenv("NNLAB_TOKEN", raising=False)
    for args, words in ((["--port", "70000"], "--port"), (["--port", "-1"], "--port"),
                        (["--max-body-mb", "nan"], "--max-body-mb"),
                        (["--max-body-mb", "0"], "--max-body-mb"),
                        (["--batch-wait-ms", "inf"], "--batch-wait-ms"),
                        (["--batch-wait-ms", "-1"], "--batch-wait-ms"),
                        (["--header-timeout", "0"], "--header-timeout"),
                        (["--max-batch", "0"], "--max-batch"), (["--top-k", "0"], "--top-k"),
                        (["--max-words", "0"], "--max-words"), (["--token", "  "], "whitespace")):
        r = run_cli("serve", runs["image"], *args)
        assert r.code == 2 and words in r.err and "Traceback" not in r.err, (args, r.err)
        assert len(r.err.strip().splitlines()) == 1, r.err


def test_slow_header_connections_are_dropped(runs):

    from nnlab.serve.protocol import protocol_class

    limits = Limits()
    served = load_served([str(runs["similarity"])], "cpu", limits)
    with uvicorn_server(create_app(served, limits), http=protocol_class(1.0)) as port:
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        for s in slow:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never ends its headers
            s.settimeout(5)
        time.sleep(1.5)
        assert all(s.recv(100) == b"" for s in slow)  # closed by the server
        with socket.create_connection(("127.0.0.1", port)) as fine:
            fine.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            fine.settimeout(5)
            assert b"200 OK" in fine.recv(1000)


def test_a_run_with_nan_weights_is_refused_in_one_line(runs, tmp_path, run_cli):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "nan-run"
    shutil.copytree(runs["similarity"], broken)
    weights = load_file(str(broken / "best.safetensors"))
    first_float = next(k for k, v in weights.items() if v.is_floating_point())
    weights[first_float].fill_(float("nan"))
    save_file(weights, str(broken / "best.safetensors"))
    with pytest.raises(NnlabError, match="NaN"):
        load_served([str(broken)], "cpu", Limits())
    r = run_cli("predict", broken, "--json", *PAIR)
    assert r.code == 2 and "NaN" in r.err and "Traceback" not in r.err


FUZZ_BODIES = {
    "keyphrase": json.dumps({"texts": [TEXT, "Deep \u00e9t\u00e9 networks \U0001f600."]}).encode(),
    "similarity": json.dumps({"pairs": [PAIR, ["\u00c9t\u00e9", "a b c"]]}).encode(),
}
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "text/plain",
                 "multipart/form-data; boundary=x", "multipart/form-data", "", "application/JSON"]


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_requests_never_get_a_5xx(client, data):
    """Mutated bodies (bytes flipped, cut, inserted), odd content types, methods and paths, on
    every route: each answer is below 500 with a JSON error (the client raises any server
    exception, so a 500 from a fault fails here too)."""
    route = data.draw(st.sampled_from(["keyphrase", "similarity", "image", "nosuch", "healthz",
                                       "models", "page", "docs", "openapi"]))
    method = data.draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS"]))
    kind = data.draw(st.sampled_from(CONTENT_TYPES))
    if route == "image":
        image = data.draw(mutated(png(0)))
        boundary = "fuzz"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
        body = data.draw(mutated(body)) if data.draw(st.booleans()) else body
        kind = data.draw(st.sampled_from([f"multipart/form-data; boundary={boundary}", kind]))
    else:
        body = data.draw(mutated(FUZZ_BODIES.get(route, FUZZ_BODIES["keyphrase"])))
    path = {"healthz": "/healthz", "models": "/v1/models", "page": "/", "docs": "/docs",
            "openapi": "/openapi.json"}.get(route, f"/v1/models/{route}/predict")
    r = client.request(method, path, content=body, headers={"content-type": kind} if kind else {})
    assert r.status_code < 500, (method, path, kind, body[:200], r.text)
    if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
        assert isinstance(r.json().get("error", r.json().get("detail")), str)
