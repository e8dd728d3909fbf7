"""The HTTP API (FastAPI), in the style of Hugging Face text-embeddings-inference (TEI).

Routes (JSON in, JSON out; the bodies are what the Python pipelines return for the same
inputs, numpy arrays as lists of floats):

- `POST /embed` `{"inputs": str | [str], "normalize": true, "pooling": "mean" | "cls"}`
  -> a list of vectors (one per input, also for a single string, as TEI).
- `POST /v1/embeddings` (OpenAI) `{"input": str | [str], "model", "encoding_format":
  "float" | "base64"}` -> `{"object": "list", "data": [{"object": "embedding", "embedding",
  "index"}], "model", "usage": {"prompt_tokens", "total_tokens"}}` (mean pooling,
  normalised; an unknown `model` name is the embedding model when only one is loaded).
- `POST /fill-mask` `{"inputs", "top_k": 5, "targets": null, "linguistic": false}`
  (`linguistic`: LERT's POS / NER / DEP labels per mask, a LERT model on torch);
  `POST /predict` (text classification;
  `inputs`: a text, `[text]`, a pair `[a, b]`, or a list of those: `["a", ["b", "c"]]`;
  `top_k`: null = every label, as TEI); `POST /ner` `{"inputs", "aggregation_strategy"}`;
  `POST /qa` `{"question", "context"}`, a list of such objects, or `{"inputs": [...]}`;
  `POST /rtd` `{"inputs", "threshold"}`; `POST /tokenize` `{"inputs",
  "add_special_tokens"}` -> per input a list of `{"id", "text", "special", "start", "stop"}`.
- `GET /health`, `GET /info` (models, tasks, backends, dtypes, limits), `GET /metrics`
  (Prometheus text).
- `GET /`: a browser widget (one card per model: an example input, Compute, the result
  drawn as bars / highlighted spans and the raw JSON), its assets under `/static/`.

Every request body may name a model (`"model": NAME`, from `--model NAME=DIR`); without it
the first model serving the route's task answers. A route whose task no loaded model serves
is a 422 that names the models loaded.

Errors are `{"error": str, "error_type": str}` with TEI's codes:
- 422 `Validation`: malformed JSON, a field of the wrong type, an empty input, more inputs
  in one request than `--max-client-batch-size` (TEI's choice: too *many inputs* is a
  validation error), an input longer than `--max-input-length` under `--no-truncate`, an
  input the pipeline refuses (e.g. no [MASK]: the pipeline's message), an unknown model;
- 413 `PayloadTooLarge`: a body over `--payload-limit` bytes (too many *bytes*);
- 429 `Overloaded`: more than `--max-concurrent-requests` requests in flight;
- 401 `Unauthorized`: `--api-key` set and no `Authorization: Bearer KEY` (every route but
  `/health`, which stays open for load balancers and probes, and the widget's `/`,
  `/static/*`, which carry no data: the page asks for the key);
- 503 `Unhealthy`: the server is shutting down; 500 `Backend`: the model failed.

Over-long inputs are truncated to `--max-input-length` tokens (default: the model's
positions) and the response carries the header `X-Truncated: true`.

Inference runs in one batch worker thread per model (`batching.BatchQueue`); handlers await
its futures, so `/health` and `/metrics` answer while a model computes.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Body, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from zhplm.errors import InputError
from zhplm.serving.batching import BatchQueue, QueueClosed
from zhplm.serving.metrics import CONTENT_TYPE, Registry
from zhplm.serving.models import ServedModel, Settings

logger = logging.getLogger("zhplm")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ROUTES = {"/embed": "feature-extraction", "/v1/embeddings": "feature-extraction",
          "/fill-mask": "fill-mask", "/predict": "text-classification",
          "/ner": "token-classification", "/qa": "question-answering",
          "/rtd": "replaced-token-detection", "/tokenize": None, "/health": None,
          "/info": None, "/metrics": None}
OPEN_ROUTES = {"/health", "/"}  # no API key needed
OPEN_PREFIX = "/static/"  # the widget's assets: no API key either
STATIC_DIR = Path(__file__).parent / "static"
UNCOUNTED_ROUTES = {"/health", "/metrics", "/info"}  # outside --max-concurrent-requests
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)
INLINE_MEASURE_CHARS = 4096  # smaller requests are tokenized on the event loop
ERROR_TYPES = {401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed",
               413: "PayloadTooLarge", 422: "Validation", 429: "Overloaded",
               500: "Backend", 503: "Unhealthy"}


class ApiError(Exception):
    """An error answered as `{"error", "error_type"}` with an HTTP status."""

    def __init__(self, status: int, message: str, error_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or ERROR_TYPES.get(status, "Error")


def error_response(status: int, message: str, error_type: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error body every failure returns."""
    return JSONResponse({"error": message,
                         "error_type": error_type or ERROR_TYPES.get(status, "Error")},
                        status_code=status, headers=headers)


# -- request bodies ----------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="a served model's name (default: the first "
                                                "serving the route's task)")


class EmbedRequest(_Body):
    inputs: str | list[str]
    normalize: bool = True
    pooling: Literal["mean", "cls"] = "mean"


class OpenAIEmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send `user`, `dimensions`
    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"


class FillMaskRequest(_Body):
    inputs: str | list[str]
    top_k: int = Field(5, ge=1, le=1000)
    targets: str | list[str] | None = Field(None, description="score only these tokens")
    linguistic: bool = Field(False, description="LERT models: each mask's POS / NER / DEP "
                                                "labels too")


class PredictRequest(_Body):
    inputs: str | list[str | list[str]]
    top_k: int | None = Field(None, ge=1)


class NerRequest(_Body):
    inputs: str | list[str]
    aggregation_strategy: Literal["none", "simple", "first", "max", "average"] = "simple"


class QAItem(_Body):
    question: str
    context: str


class QABatch(_Body):
    inputs: list[QAItem]


class RtdRequest(_Body):
    inputs: str | list[str]
    threshold: float = Field(0.5, ge=0.0, le=1.0)


class TokenizeRequest(_Body):
    inputs: str | list[str]
    add_special_tokens: bool = True


# -- server state ------------------------------------------------------------------------
class ServerState:
    """Models, their batch queues, settings and metrics of one app."""

    def __init__(self, models: list[ServedModel], settings: Settings) -> None:
        if not models:
            raise ValueError("create_app needs at least one model")
        self.models = models
        self.settings = settings
        self.in_flight = 0
        self.registry = Registry()
        r = self.registry
        self.requests = r.counter("zhplm_requests_total", "HTTP requests answered, by route "
                                  "and status", ("route", "status"))
        self.errors = r.counter("zhplm_errors_total", "requests answered with an error "
                                "(status >= 400), by route and error type",
                                ("route", "status"))
        self.latency = r.histogram("zhplm_request_duration_seconds", "time from request to "
                                   "response, by route", LATENCY_BUCKETS, ("route",))
        self.batch_requests = r.histogram("zhplm_batch_requests", "requests run together in "
                                          "one model call", SIZE_BUCKETS, ("model",))
        self.batch_inputs = r.histogram("zhplm_batch_inputs", "inputs run together in one "
                                        "model call", SIZE_BUCKETS, ("model",))
        self.batch_tokens = r.histogram("zhplm_batch_tokens", "tokens in one model call",
                                        TOKEN_BUCKETS, ("model",))
        self.batch_seconds = r.histogram("zhplm_batch_duration_seconds", "time of one model "
                                         "call", LATENCY_BUCKETS, ("model",))
        self.queue_depth = r.gauge("zhplm_queue_depth", "requests waiting for a batch, by "
                                   "model", ("model",))
        self.in_flight_gauge = r.gauge("zhplm_requests_in_flight", "requests being answered")
        self.truncated = r.counter("zhplm_truncated_requests_total", "requests with an input "
                                   "cut to --max-input-length", ("route",))
        self.queues = {m.name: BatchQueue(m.run, max_batch_tokens=settings.max_batch_tokens,
                                          max_batch_requests=settings.max_batch_requests,
                                          name=m.name, on_batch=self._observer(m.name))
                       for m in models}

    def _observer(self, name: str) -> Callable[[int, int, int, float], None]:
        def observe(requests: int, inputs: int, tokens: int, seconds: float) -> None:
            self.batch_requests.observe(requests, model=name)
            self.batch_inputs.observe(inputs, model=name)
            self.batch_tokens.observe(tokens, model=name)
            self.batch_seconds.observe(seconds, model=name)
        return observe

    def loaded(self) -> str:
        return ", ".join(f"{m.name} ({m.task})" for m in self.models)

    def pick(self, task: str | None, name: str | None) -> ServedModel:
        """The model named `name` (it must serve `task`), or the first serving `task`."""
        if name is not None:
            found = next((m for m in self.models if m.name == name), None)
            if found is None:
                raise ApiError(422, f"no model named {name!r}; loaded: {self.loaded()}")
            if task is not None and found.task != task:
                raise ApiError(422, f"model {name!r} serves {found.task}, not {task}; "
                                    f"loaded: {self.loaded()}")
            return found
        found = next((m for m in self.models if task is None or m.task == task), None)
        if found is None:
            raise ApiError(422, f"no loaded model serves {task}; loaded: {self.loaded()}")
        return found

    def check_count(self, inputs: list[Any]) -> None:
        if not inputs:
            raise ApiError(422, "inputs is empty; send at least one input", "Empty")
        limit = self.settings.max_client_batch_size
        if len(inputs) > limit:
            raise ApiError(422, f"{len(inputs)} inputs in one request; this server takes at "
                                f"most {limit} (--max-client-batch-size): split the request")

    async def infer(self, task: str, name: str | None, inputs: list[Any],
                    options: dict[str, Any]) -> tuple[ServedModel, list[Any], bool, int]:
        """Measure, queue and await `inputs` on the model for `task`: (model, one result
        per input, whether any input was truncated, tokens)."""
        model = self.pick(task, name)
        self.check_count(inputs)
        try:
            if _characters(inputs) <= INLINE_MEASURE_CHARS:  # ~0.1 ms: cheaper than a thread
                costs, truncated = model.measure(inputs)
            else:
                costs, truncated = await asyncio.to_thread(model.measure, inputs)
            future = self.queues[model.name].submit(inputs, sum(costs), options)
            results = await asyncio.wrap_future(future)
        except InputError as exc:  # the pipeline refused the input (e.g. no [MASK])
            raise ApiError(422, str(exc)) from None
        except QueueClosed as exc:
            raise ApiError(503, str(exc)) from None
        except Exception as exc:
            logger.exception("model %s failed", model.name)
            raise ApiError(500, f"{model.name}: {type(exc).__name__}: {exc}") from None
        return model, results, truncated, sum(costs)


# -- the gate: API key, concurrency, payload size, metrics (plain ASGI) -------------------
class Gate:
    """ASGI middleware in front of the app: API key (401), in-flight limit (429), payload
    limit (413, by Content-Length or by counting a streamed body), and per-request
    metrics."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in ROUTES else "other"
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self._handle(scope, receive, send_status, path)
        finally:
            code = str(status[0])
            self.state.requests.inc(route=route, status=code)
            if status[0] >= 400:
                self.state.errors.inc(route=route, status=code)
            self.state.latency.observe(time.perf_counter() - started, route=route)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        settings = self.state.settings
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        if settings.api_key and path not in OPEN_ROUTES and \
                not path.startswith(OPEN_PREFIX):
            given = headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(  # header bytes
                    token.strip().encode("latin-1"), settings.api_key.encode()):
                response = error_response(401, "missing or wrong API key; send the header "
                                               "Authorization: Bearer KEY",
                                          headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        counted = path not in UNCOUNTED_ROUTES
        if counted:
            if self.state.in_flight >= settings.max_concurrent_requests:
                response = error_response(429, f"more than {settings.max_concurrent_requests}"
                                               f" requests in flight "
                                               f"(--max-concurrent-requests); retry later")
                await response(scope, receive, send)
                return
            self.state.in_flight += 1
        try:
            limit = settings.payload_limit
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                response = error_response(413, f"the body has {length} bytes, more than "
                                               f"{limit} (--payload-limit)")
                await response(scope, receive, send)
                return
            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise HTTPException(413, f"the body has more than {limit} bytes "
                                                 f"(--payload-limit)")
                return message

            await self.app(scope, limited_receive, send)
        finally:
            if counted:
                self.state.in_flight -= 1


# -- the app -----------------------------------------------------------------------------
def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error.get("loc", ()))
        if error.get("type") == "json_invalid":
            detail = (error.get("ctx") or {}).get("error", "")
            parts.append(f"the body is not valid JSON ({detail} at {loc})")
        else:
            parts.append(f"{loc}: {error.get('msg')}")
    return "; ".join(parts) or "invalid request"


def _characters(inputs: list[Any]) -> int:
    """The characters of a request's inputs (texts, pairs or QA items)."""
    return sum(len(x) if isinstance(x, str) else sum(len(v) for v in x.values())
               for x in inputs)


def _texts(inputs: str | list[str]) -> tuple[list[str], bool]:
    return ([inputs], True) if isinstance(inputs, str) else (list(inputs), False)


def _pair(sequence: list[str], index: int) -> str | dict[str, str]:
    """TEI's sequence: `[text]` or `[text, text_pair]`."""
    if len(sequence) == 1:
        return sequence[0]
    if len(sequence) == 2:
        return {"text": sequence[0], "text_pair": sequence[1]}
    raise ApiError(422, f"input {index} has {len(sequence)} texts; a sequence is [text] or "
                        f"[text, text_pair]")


def _predict_items(inputs: str | list[str | list[str]]) -> tuple[list[Any], bool]:
    """TEI's /predict inputs: a text, one sequence `[text]` / `[a, b]`, or a batch whose
    items are texts or sequences."""
    if isinstance(inputs, str):
        return [inputs], True
    if inputs and all(isinstance(x, str) for x in inputs):
        return [_pair(list(inputs), 0)], True  # type: ignore[arg-type]
    return [x if isinstance(x, str) else _pair(x, i) for i, x in enumerate(inputs)], False


def _json(content: Any, truncated: bool) -> JSONResponse:
    return JSONResponse(content, headers={"X-Truncated": "true"} if truncated else None)


def create_app(models: list[ServedModel], settings: Settings | None = None) -> FastAPI:
    """The FastAPI app over loaded models. Its lifespan starts one batch worker per model
    and, at shutdown, waits until every queued request has been answered."""
    settings = settings or Settings()
    state = ServerState(models, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for queue in state.queues.values():
            queue.start()
        yield
        drained = await asyncio.to_thread(
            lambda: [q.close(settings.shutdown_timeout) for q in state.queues.values()])
        if not all(drained):
            logger.warning("shut down with requests still queued")

    app = FastAPI(title="zhplm", lifespan=lifespan, docs_url=None, redoc_url=None,  # CDN
                  description="BERT-family models served in the style of "
                              "text-embeddings-inference")
    app.state.zhplm = state

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.error_type)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = _validation_message(exc)
        if "json" not in request.headers.get("content-type", "json"):
            message += "; send the body as JSON (Content-Type: application/json)"
        return error_response(422, message)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, f"{type(exc).__name__}: {exc}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.post("/embed")
    async def embed(body: EmbedRequest) -> JSONResponse:
        """A pooled vector per input: `pipeline("feature-extraction")(inputs, pooling,
        normalize)` as a list of lists."""
        texts, _ = _texts(body.inputs)
        _, results, truncated, _ = await state.infer(
            "feature-extraction", body.model, texts,
            {"pooling": body.pooling, "normalize": body.normalize})
        return _json(results, truncated)

    @app.post("/v1/embeddings")
    async def openai_embeddings(body: OpenAIEmbeddingRequest) -> JSONResponse:
        """OpenAI's embeddings API: mean-pooled, normalised vectors."""
        texts, _ = _texts(body.input)
        name = body.model
        embedders = [m for m in state.models if m.task == "feature-extraction"]
        if name is not None and len(embedders) == 1 and \
                not any(m.name == name for m in state.models):
            name = None  # OpenAI clients send their own model names: one embedder is it
        model, results, truncated, tokens = await state.infer(
            "feature-extraction", name, texts, {"pooling": "mean", "normalize": True})
        data = []
        for i, vector in enumerate(results):
            embedding: Any = vector
            if body.encoding_format == "base64":
                embedding = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
            data.append({"object": "embedding", "embedding": embedding, "index": i})
        return _json({"object": "list", "data": data, "model": model.name,
                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, truncated)

    @app.post("/fill-mask")
    async def fill_mask(body: FillMaskRequest) -> JSONResponse:
        """`pipeline("fill-mask")(inputs, top_k=top_k, targets=targets, linguistic=...)`."""
        texts, single = _texts(body.inputs)
        options: dict[str, Any] = {"top_k": body.top_k}
        if body.targets is not None:
            options["targets"] = body.targets
        if body.linguistic:
            options["linguistic"] = True
        _, results, truncated, _ = await state.infer("fill-mask", body.model, texts, options)
        return _json(results[0] if single else results, truncated)

    @app.post("/predict")
    async def predict(body: PredictRequest) -> JSONResponse:
        """`pipeline("text-classification")(inputs, top_k=top_k)`; a pair `[a, b]` is
        `{"text": a, "text_pair": b}`."""
        items, single = _predict_items(body.inputs)
        _, results, truncated, _ = await state.infer("text-classification", body.model,
                                                     items, {"top_k": body.top_k})
        if single:  # as the pipeline answers one input
            return _json(results if body.top_k == 1 else results[0], truncated)
        return _json(results, truncated)

    @app.post("/ner")
    async def ner(body: NerRequest) -> JSONResponse:
        """`pipeline("token-classification")(inputs, aggregation_strategy=...)`."""
        texts, single = _texts(body.inputs)
        _, results, truncated, _ = await state.infer(
            "token-classification", body.model, texts,
            {"aggregation_strategy": body.aggregation_strategy})
        return _json(results[0] if single else results, truncated)

    @app.post("/qa")
    async def qa(body: Annotated[QAItem | QABatch | list[QAItem], Body()]) -> JSONResponse:
        """`pipeline("question-answering")`: one `{"question", "context"}` -> one answer;
        a list (or `{"inputs": [...]}`) -> a list of answers."""
        if isinstance(body, QAItem):
            items, single, name = [body], True, body.model
        elif isinstance(body, QABatch):
            items, single, name = body.inputs, False, body.model
        else:
            items, single, name = body, False, body[0].model if body else None
        inputs = [{"question": x.question, "context": x.context} for x in items]
        _, results, _, _ = await state.infer("question-answering", name, inputs, {})
        return _json(results[0] if single else results, False)

    @app.post("/rtd")
    async def rtd(body: RtdRequest) -> JSONResponse:
        """`pipeline("replaced-token-detection")(inputs, threshold=threshold)`."""
        texts, single = _texts(body.inputs)
        _, results, truncated, _ = await state.infer(
            "replaced-token-detection", body.model, texts, {"threshold": body.threshold})
        return _json(results[0] if single else results, truncated)

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> JSONResponse:
        """The tokenizer's tokens of each input (a list per input, as TEI)."""
        model = state.pick(None, body.model)
        texts, _ = _texts(body.inputs)
        state.check_count(texts)
        tokens = await asyncio.to_thread(model.tokenize, texts, body.add_special_tokens)
        return JSONResponse(tokens)

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 while every batch worker runs (no API key needed)."""
        dead = [name for name, q in state.queues.items() if not q.alive]
        if dead:
            return error_response(503, f"batch worker stopped: {', '.join(dead)}")
        return JSONResponse({"status": "ok"})

    @app.get("/info")
    async def info() -> JSONResponse:
        """The models (name, task, backend, dtype, input length) and the server's limits."""
        from zhplm import __version__

        limits = {k: getattr(settings, k) for k in (
            "max_batch_tokens", "max_batch_requests", "max_client_batch_size",
            "max_input_length", "truncate", "payload_limit", "max_concurrent_requests")}
        return JSONResponse({"version": __version__, "models": [m.describe() for m in models],
                             "limits": limits, "auth": bool(settings.api_key)})

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text: requests, errors, latency, batch sizes, queue depth."""
        for name, queue in state.queues.items():
            state.queue_depth.set(queue.depth, model=name)
        state.in_flight_gauge.set(state.in_flight)
        return Response(state.registry.render(), media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    async def widget() -> FileResponse:
        """The browser widget (static/index.html; no API key needed)."""
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    app.add_middleware(Gate, state=state)
    return app


def serve(specs: list[str], settings: Settings, host: str = "127.0.0.1", port: int = 8000,
          access_log: bool = False) -> None:
    """Load the models and run uvicorn until Ctrl-C / SIGTERM (graceful: in-flight requests
    are answered, then the batch queues drain)."""
    import uvicorn

    from zhplm.serving.models import load_models

    models = load_models(specs, settings)
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        logger.warning("serving on %s without --api-key: anyone who reaches it can use it",
                       host)
    for model in models:
        print(json.dumps({"model": model.name, "task": model.task,
                          "backend": model.pipeline.backend.name,
                          "dtype": model.pipeline.dtype}, ensure_ascii=False), flush=True)
    uvicorn.run(create_app(models, settings), host=host, port=port, log_level="info",
                access_log=access_log)
