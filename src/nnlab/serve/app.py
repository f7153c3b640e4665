"""The HTTP API and the try-it page of `nnlab serve`, for any task (each run's task reads its
requests and makes its predictions; nothing here knows one task from another).

    GET  /healthz                      liveness, and how many models are loaded (never guarded)
    GET  /v1/models                    each model: task, outputs (classes, tags, score range),
                                       validation metric, request format, requests and batches
    POST /v1/models/{name}/predict     the same JSON as `nnlab predict --json`
    GET  /                             a page to try each model (no external assets; it reads the
                                       models from /v1/models, so it holds no data itself)
    GET  /openapi.json                 the API's OpenAPI description (FastAPI's)
    GET  /docs                         a pointer to /openapi.json (Swagger UI needs a CDN)

Every client mistake is a 4xx answer with a JSON body {"error": "..."}: malformed JSON, JSON
nested deeper than `max_depth`, a lone UTF-16 surrogate, a body over the size cap, a content
type other than JSON (or a multipart form for images), a file that is not an image, an image
or a request over the pixel limits, an empty or over-long text, a request over the word limit,
an unknown model, another task's input. A fault of the server is a 500 with a JSON body and no
traceback at the client.

Guards, before any route runs: a request whose Host header is not the bound address (or an
`allowed_hosts` name) gets 400, which stops DNS rebinding against a tokenless loopback server;
with a token every route but /healthz and the page's empty shell needs `Authorization: Bearer
TOKEN`; JSON routes take only `application/json`, so a web page cannot post to a tokenless
server without a CORS preflight (`text/plain` needs none).
"""

from __future__ import annotations

import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
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
from nnlab import ensemble
from nnlab.errors import NnlabError, TooLarge, short
from nnlab.fileio import read_json
from nnlab.serve.batcher import Batcher
from nnlab.tasks import PredictOptions, RequestLimits, Task
from nnlab.tasks.capabilities import Servable, require
from nnlab.tasks.loading import load_model, open_run

PAGE = Path(__file__).with_name("page.html")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
OPEN_PATHS = {"/healthz", "/"}  # with a token: liveness, and the page's shell (it holds no data)


@dataclass
class Limits(RequestLimits):
    """The server's limits: a request's size and cost (`RequestLimits`), and batching."""

    max_body: int = 20 << 20  # bytes of a request body
    max_inputs: int = 64  # images, texts or pairs in one request
    max_depth: int = 32  # nesting of a JSON body (a deeper one is malformed, not a request)
    max_batch: int = 32  # inputs per forward pass; a larger request is split over several
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
    model_name: str  # the run's model, or "ensemble of 3 (...)"

    def describe(self) -> dict[str, Any]:
        task, metric = self.task, self.task.main_metric
        return {"name": self.name, "task": task.name, "model": self.model_name,
                "outputs": task.public_info(), "metric": metric, "metric_label": task.label(metric),
                "validation": (self.summary.get("val") or {}).get(metric),
                "request": task.request_help, "widget": task.page_widget, "kind": task.request_kind,
                "requests": self.batcher.requests, "batches": self.batcher.batches}


async def _send_error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def host_name(header: str) -> str:
    """The name in a Host header, without its port: 'a.b:80' -> 'a.b', '[::1]:80' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    """Before any route: the Host header (400), the token (401), the body's size (413).

    The Host check stops DNS rebinding: a web page of another site whose name was re-pointed
    at 127.0.0.1 reaches the server with its own name in Host. The body is counted as it
    arrives, whether or not the client said its length."""

    def __init__(self, app: ASGIApp, limit: int, hosts: set[str], token: str | None):
        self.app, self.limit, self.hosts, self.token = app, limit, hosts, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = host_name(headers.get(b"host", b"").decode("latin-1"))
        if host not in self.hosts:
            await _send_error(send, 400, f"Host {short(host, 80)!r} is not served here (allowed: "
                              f"{', '.join(sorted(self.hosts))}; see --allowed-host)")
            return
        if self.token is not None and scope["path"] not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            if not secrets.compare_digest(given, f"Bearer {self.token}".encode()):
                await _send_error(send, 401, "missing or wrong token (send `Authorization: Bearer TOKEN`)")
                return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _send_error(send, 413, f"request body over the server's limit of {self.limit:,} bytes")
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


def create_app(served: list[Served], limits: Limits, token: str | None = None,
               allowed_hosts: list[str] | tuple[str, ...] = LOOPBACK_NAMES) -> FastAPI:
    """The server's app. `allowed_hosts`: the names a client may use in its Host header (the
    bound address and loopback names by default)."""
    if token is not None and not token.strip():
        raise NnlabError("--token: empty or only whitespace; give a real secret")
    by_name = {s.name: s for s in served}
    app = FastAPI(title="nnlab", version=nnlab.__version__, docs_url=None, redoc_url=None,
                  description="Trained nnlab runs: `POST /v1/models/{name}/predict`.")
    app.add_middleware(Guard, limit=limits.max_body, hosts={host_name(h) for h in allowed_hosts},
                       token=token)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": short(message, 1000)}, status_code=status)

    @app.exception_handler(NnlabError)
    async def user_mistake(_request: Request, e: NnlabError) -> JSONResponse:
        return error(413 if isinstance(e, TooLarge) else 400, str(e))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, e: HTTPException) -> JSONResponse:
        return error(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, e: RequestValidationError) -> JSONResponse:
        return error(422, "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()))

    @app.exception_handler(Exception)
    async def fault(_request: Request, e: Exception) -> JSONResponse:
        # a bug or a broken model, not the client's doing: a JSON 500, the traceback in the log
        return error(500, f"internal error ({type(e).__name__}); the server log has the details")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "models": len(served)}

    @app.get("/v1/models")
    async def list_models() -> list[dict[str, Any]]:
        return [s.describe() for s in served]

    @app.post("/v1/models/{name}/predict")
    async def predict(name: str, request: Request) -> JSONResponse:
        model = by_name.get(name)
        if model is None:
            raise HTTPException(404, f"no model {short(name, 80)!r} (models: {', '.join(by_name)})")
        body, files = await _read_request(request, limits)
        inputs = await run_in_threadpool(model.task.request_inputs, body, files, limits)
        if len(inputs) > limits.max_inputs:
            raise TooLarge(f"{len(inputs)} inputs in one request, more than the server's limit of "
                           f"{limits.max_inputs}")
        return JSONResponse(await model.batcher.submit(inputs))

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        config = json.dumps({"token": token is not None})
        return HTMLResponse(PAGE.read_text().replace("__CONFIG__", config))

    @app.get("/docs", response_class=HTMLResponse)
    async def docs() -> HTMLResponse:
        return HTMLResponse('<!doctype html><meta charset="utf-8"><title>nnlab API</title>'
                            '<p>The API is described at <a href="openapi.json">/openapi.json</a> '
                            "(OpenAPI 3; Swagger UI is not served: it loads from a CDN).</p>")

    return app


def check_json(value: Any, max_depth: int) -> None:
    """Refuse what would break later: nesting past `max_depth`, and strings with a lone UTF-16
    surrogate (valid JSON escapes, but no text: encoding the answer would fail)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as e:
                raise NnlabError(f"a string holds a lone UTF-16 surrogate at character {e.start} "
                                 "(not text)") from None
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise NnlabError(f"JSON nested deeper than {max_depth} levels")
            children = list(item.items()) if isinstance(item, dict) else item
            for child in children:
                stack.extend((c, depth + 1) for c in (child if isinstance(item, dict) else (child,)))


def _not_json(name: str) -> Any:
    """Python's json reads NaN and Infinity, which JSON does not have: refuse them."""
    raise ValueError(f"{name} is not JSON")


async def _read_request(request: Request, limits: Limits) -> tuple[Any, list[tuple[str, bytes]]]:
    """(JSON body, uploaded files): a multipart form's `file` fields, or a JSON body; any other
    content type is 415."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        try:
            form = await request.form(max_files=limits.max_inputs, max_fields=limits.max_inputs)
        except HTTPException:
            raise
        except Exception as e:  # a malformed multipart body
            raise NnlabError(f"unreadable multipart body ({short(e, 200)})") from None
        files = [(value.filename or "upload", await value.read())
                 for key, value in form.multi_items() if key == "file" and isinstance(value, UploadFile)]
        if len(files) > limits.max_inputs:
            raise TooLarge(f"{len(files)} files in one request, more than the server's limit of "
                           f"{limits.max_inputs}")
        check_json([name for name, _ in files], 2)
        return None, files
    if kind != "application/json":
        raise HTTPException(415, f"content type {short(kind, 60) or '(none)'!r}: send application/json "
                                 "(or multipart/form-data files for images)")
    raw = await request.body()
    try:
        body = json.loads(raw, parse_constant=_not_json)
    except RecursionError:
        raise NnlabError(f"JSON nested deeper than {limits.max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise NnlabError(f"the body is not valid JSON ({short(e, 200)})") from None
    check_json(body, limits.max_depth)
    return body, []


def load_served(specs: list[str], device: str, limits: Limits) -> list[Served]:
    """Each `RUN_DIR` or `NAME=RUN_DIR` loaded, with a batcher on a worker thread of its own
    (so one model's long batch never queues another model's requests; the model's ops use
    torch's threads)."""
    served, names = [], set()
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        combined = ensemble.load(path, device) if ensemble.is_ensemble(path) else None
        if combined is not None:  # its members' forward passes run on each batch in turn
            task, folder, summary = combined.task, combined.path, ensemble.summary(path)
            model: Any = combined
        else:
            run, _cfg, task = open_run(path, device)
            folder, summary = run.path, read_json(run.path / "summary.json") if run.finished else {}
        require(task, Servable)
        name = name or folder.name
        if name in names:
            raise NnlabError(f"{spec}: two runs served as {name!r}; name them: NAME=RUN_DIR")
        names.add(name)
        if combined is None:
            model = load_model(run, task)
        taken = {f.name for f in fields(task.predict_options)}
        options = task.predict_options(**({"top_k": limits.top_k} if "top_k" in taken else {}))

        def predict(inputs: list[Any], task: Task = task, model: Any = model,
                    options: PredictOptions = options) -> list[Any]:
            if isinstance(model, ensemble.Ensemble):
                return model.predict(inputs, options)
            return task.predict(model, inputs, options)

        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"nnlab-{len(served)}")
        served.append(Served(name, str(folder), task, model, summary,
                             Batcher(predict, executor, limits.max_batch, limits.wait),
                             combined.name if combined else task.cfg.model.name))
    return served
