"""The HTTP API and the try-it page of `nnlab serve`, for any task (each run's task reads its
requests and makes its predictions; nothing here knows one task from another).

    GET  /healthz                      liveness, and how many models are loaded
    GET  /v1/models                    each model: task, outputs (classes, tags, score range),
                                       validation metric, request format, requests and batches
    POST /v1/models/{name}/predict     the same JSON as `nnlab predict --json`
    GET  /                             a page to try each model (no external assets)
    GET  /docs                         OpenAPI (FastAPI's)

Every client mistake is a 4xx answer with a JSON body {"error": "..."}: malformed JSON, a
file that is not an image or is a decompression bomb, a body over the size cap, an empty or
over-long text, an unknown model, another task's input. With a token, /v1 needs the header
`Authorization: Bearer TOKEN`.
"""

from __future__ import annotations

import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import nnlab
from nnlab.errors import NnlabError, short
from nnlab.serve.batcher import Batcher
from nnlab.tasks import PredictOptions, Task

PAGE = Path(__file__).with_name("page.html")


@dataclass
class Limits:
    max_body: int = 20 << 20  # bytes of a request body
    max_chars: int = 20_000  # characters of one text
    max_inputs: int = 64  # images, texts or pairs in one request
    max_batch: int = 32  # inputs per forward pass
    wait: float = 0.005  # seconds a batch waits for more requests
    top_k: int = 3  # classes per image


@dataclass
class Served:
    """One loaded run: its name in the API, its task and model, and its batcher."""

    name: str
    path: str
    task: Task
    model: Any
    summary: dict[str, Any]
    batcher: Batcher

    def describe(self) -> dict[str, Any]:
        task, metric = self.task, self.task.main_metric
        return {"name": self.name, "task": task.name, "model": task.cfg.model.name,
                "outputs": task.public_info(), "metric": metric, "metric_label": task.label(metric),
                "validation": (self.summary.get("val") or {}).get(metric),
                "request": task.request_help, "widget": task.page_widget, "kind": task.request_kind,
                "requests": self.batcher.requests, "batches": self.batcher.batches}


class BodyLimit:
    """Refuse a body over `limit` bytes with 413, whether or not it says its length."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _too_large(send, self.limit)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"request body over the server's limit of {self.limit:,} bytes")
            return message

        await self.app(scope, counted, send)


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"error": f"request body over the server's limit of {limit:,} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(served: list[Served], limits: Limits, token: str | None = None) -> FastAPI:
    by_name = {s.name: s for s in served}
    app = FastAPI(title="nnlab", version=nnlab.__version__,
                  description="Trained nnlab runs: `POST /v1/models/{name}/predict`.")
    app.add_middleware(BodyLimit, limit=limits.max_body)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": short(message, 1000)}, status_code=status)

    @app.exception_handler(NnlabError)
    async def user_mistake(_request: Request, e: NnlabError) -> JSONResponse:
        return error(400, str(e))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, e: HTTPException) -> JSONResponse:
        return error(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, e: RequestValidationError) -> JSONResponse:
        return error(422, "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()))

    def check_token(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "missing or wrong token (send `Authorization: Bearer TOKEN`)")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "models": len(served)}

    @app.get("/v1/models")
    async def list_models(request: Request) -> list[dict[str, Any]]:
        check_token(request)
        return [s.describe() for s in served]

    @app.post("/v1/models/{name}/predict")
    async def predict(name: str, request: Request) -> JSONResponse:
        check_token(request)
        model = by_name.get(name)
        if model is None:
            raise HTTPException(404, f"no model {name!r} (models: {', '.join(by_name)})")
        body, files = await _read_request(request, limits)
        inputs = await run_in_threadpool(model.task.request_inputs, body, files, limits.max_chars)
        if len(inputs) > limits.max_inputs:
            raise NnlabError(f"{len(inputs)} inputs in one request, more than the server's limit of "
                             f"{limits.max_inputs}")
        return JSONResponse(await model.batcher.submit(inputs))

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        config = json.dumps({"models": [s.describe() for s in served], "token": token is not None})
        html = PAGE.read_text().replace("__CONFIG__", config.replace("<", "\\u003c"))
        return HTMLResponse(html)

    return app


async def _read_request(request: Request, limits: Limits) -> tuple[Any, list[tuple[str, bytes]]]:
    """(JSON body, uploaded files): a multipart form's `file` fields, or a JSON body."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=limits.max_inputs, max_fields=limits.max_inputs)
        except HTTPException:
            raise
        except Exception as e:  # a malformed multipart body
            raise NnlabError(f"unreadable multipart body ({short(e, 200)})") from None
        files = [(value.filename or "upload", await value.read())
                 for key, value in form.multi_items() if key == "file" and isinstance(value, UploadFile)]
        return None, files
    raw = await request.body()
    try:
        return json.loads(raw), []
    except (ValueError, UnicodeDecodeError) as e:
        raise NnlabError(f"the body is not valid JSON ({short(e, 200)})") from None


def load_served(specs: list[str], device: str, limits: Limits) -> list[Served]:
    """Each `RUN_DIR` or `NAME=RUN_DIR` loaded, with a batcher on one shared worker thread
    (the model's own ops use torch's threads)."""
    from nnlab.experiment import load_model, open_run
    from nnlab.runs import read_json

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nnlab-model")
    served, names = [], set()
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        run, _cfg, task = open_run(path, device)
        name = name or run.path.name
        if name in names:
            raise NnlabError(f"{spec}: two runs served as {name!r}; name them: NAME=RUN_DIR")
        names.add(name)
        model = load_model(run, task)
        summary = read_json(run.path / "summary.json") if run.finished else {}
        options = PredictOptions(top_k=limits.top_k)

        def predict(inputs: list[Any], task: Task = task, model: Any = model,
                    options: PredictOptions = options) -> list[Any]:
            return task.predict(model, inputs, options)

        served.append(Served(name, str(run.path), task, model, summary,
                             Batcher(predict, executor, limits.max_batch, limits.wait)))
    return served
