"""The routing proxy: an OpenAI-compatible front for a small and a large model's servers.

Each ``/v1/chat/completions`` or ``/v1/completions`` request is scored by the DEPO estimator on
its problem text (``problem_text``), micro-batched with concurrent requests (``scorer``), and
forwarded byte for byte to the small backend when the predicted accuracy is >= the threshold,
else to the large one. The backend's answer, streamed (SSE) or not, comes back unchanged, with
the decision in ``X-DEPO-*`` response headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import aiohttp
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from recipe.depo.router.core import route
from recipe.depo.router.metrics import ROUTES, RouterMetrics
from recipe.depo.router.problem_text import BadRequest, chat_problem_text, completion_problem_texts
from recipe.depo.router.route_log import RouteLog
from recipe.depo.router.scorer import MicroBatchScorer
from recipe.depo.router.serve_config import ServeConfig

logger = logging.getLogger("recipe.depo.router")

OVERRIDE_HEADER = "X-DEPO-Route"
ROUTE_HEADER = "X-DEPO-Route"
PREDICTED_HEADER = "X-DEPO-Predicted-Accuracy"
DECIDED_BY_HEADER = "X-DEPO-Decided-By"
THRESHOLD_HEADER = "X-DEPO-Threshold"

# Hop-by-hop headers (RFC 9110 7.6.1) and those the HTTP client recomputes; never forwarded.
_REQUEST_HEADERS_DROPPED = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "accept-encoding",  # the client library negotiates compression with the backend itself
    "authorization",  # replaced, see _forward_headers
    OVERRIDE_HEADER.lower(),
}
_RESPONSE_HEADERS_DROPPED = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-encoding",  # the body is handed on decompressed
    "date",
    "server",
}
_SSE_MAX_LINE = 1 << 20
_HEALTH_PROBE_TIMEOUT_S = 5.0
_MODELS_TIMEOUT_S = 30.0  # a model list is quick to give; backend_timeout is sized for generations
_CLIENT_CLOSED = 499  # nginx's convention for "the client went away first"


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error in the OpenAI API's shape, so clients surface the message."""
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status, headers=headers)


def _sse_error(status: int, message: str, kind: str) -> bytes:
    event = {"error": {"message": message, "type": kind, "code": status}}
    return b"data: " + json.dumps(event).encode() + b"\n\n"


class UsageSniffer:
    """Finds the last ``usage`` object in an OpenAI SSE stream fed chunk by chunk (bounded memory).

    Chunks are not lines: a line may span chunks, so at most ``_SSE_MAX_LINE`` bytes of an
    unfinished line are kept; a longer line is skipped, not buffered.
    """

    def __init__(self) -> None:
        self._partial = bytearray()
        self._skipping = False
        self.usage: dict | None = None

    def feed(self, chunk: bytes) -> None:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if not self._skipping:
                    self._partial += chunk[start:]
                    if len(self._partial) > _SSE_MAX_LINE:
                        self._partial.clear()
                        self._skipping = True
                return
            if self._skipping:
                self._skipping = False
            else:
                self._line(bytes(self._partial) + chunk[start:end])
            self._partial.clear()
            start = end + 1

    def _line(self, line: bytes) -> None:
        line = line.strip()
        if not line.startswith(b"data:") or b'"usage"' not in line:
            return
        try:
            event = json.loads(line[len(b"data:") :])
        except ValueError:
            return
        if isinstance(event, dict) and isinstance(event.get("usage"), dict):
            self.usage = event["usage"]


@dataclass
class Backend:
    name: str
    url: str  # server root, without /v1
    api_key: str | None


@dataclass
class Decision:
    route: str
    predicted: float | None  # None when nothing was scored (override, fallback)
    decided_by: str  # score | override | fallback

    def headers(self, threshold: float) -> dict[str, str]:
        out = {ROUTE_HEADER: self.route, DECIDED_BY_HEADER: self.decided_by, THRESHOLD_HEADER: f"{threshold:g}"}
        if self.predicted is not None:
            out[PREDICTED_HEADER] = f"{self.predicted:.6f}"
        return out


class _Outcome:
    """Counts one routed request exactly once, whenever and however it ends."""

    def __init__(self, metrics: RouterMetrics, endpoint: str) -> None:
        self.metrics = metrics
        self.endpoint = endpoint
        self.route = "none"
        self.done = False
        metrics.in_flight.inc()

    def finish(self, code: int) -> None:
        if self.done:
            return
        self.done = True
        self.metrics.requests.labels(endpoint=self.endpoint, route=self.route, code=str(code)).inc()
        self.metrics.in_flight.dec()


class _RequestTooLarge(Exception):
    pass


class _ResponseTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


def _end(response: aiohttp.ClientResponse, complete: bool) -> None:
    """Hand a finished response's connection back to the pool; close an unfinished one, which
    is how the backend learns to stop generating."""
    if complete:
        response.release()
    else:
        response.close()


class _RelayedStream(StreamingResponse):
    """A StreamingResponse that runs ``on_close`` however the stream ends: finished, broken, or
    cancelled because the client left (then the generator may never have started)."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


class RouterProxy:
    """The proxy as a FastAPI app (``.app``) around ``predict`` (list of texts -> accuracies).

    ``max_chars`` cuts each problem text before scoring; ``on_ready`` is called once the app has
    started (scorer running, backends probed).
    """

    def __init__(
        self,
        config: ServeConfig,
        predict: Callable[[list[str]], Sequence[float]],
        *,
        max_chars: int | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.metrics = RouterMetrics()
        self.scorer = MicroBatchScorer(
            predict,
            window_s=config.batch_window_ms / 1000.0,
            max_batch_size=config.max_batch_size,
            max_chars=max_chars,
            on_batch=self.metrics.observe_batch,
        )
        self.backends = {
            name: Backend(name, getattr(config, name), getattr(config, f"{name}_api_key"))
            for name in ROUTES
            if getattr(config, name) is not None
        }
        self.route_log = RouteLog(config.route_log, echo=config.dry_run)
        self._instructions = config.instruction_texts
        self._on_ready = on_ready
        self.session: aiohttp.ClientSession | None = None

        app = FastAPI(title="depo-router", lifespan=self._lifespan, docs_url=None, redoc_url=None, openapi_url=None)
        app.add_api_route("/v1/chat/completions", self._chat, methods=["POST"])
        app.add_api_route("/v1/completions", self._completions, methods=["POST"])
        app.add_api_route("/v1/models", self._models, methods=["GET"])
        app.add_api_route("/health", self._health, methods=["GET"])
        app.add_api_route("/metrics", self._metrics, methods=["GET"])
        self.app = app

    # ------------------------------------------------------------------ lifecycle
    @contextlib.asynccontextmanager
    async def _lifespan(self, app: FastAPI):
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.config.backend_timeout, sock_read=self.config.backend_timeout
        )
        connector = aiohttp.TCPConnector(limit=self.config.max_connections)
        self.session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        await self.scorer.start()
        self.route_log.start()
        try:
            for name, state in (await self._probe_all()).items():
                if state["state"] != "up":
                    logger.warning("the %s backend (%s) is not up yet: %s", name, state["url"], state["detail"])
            if self._on_ready is not None:
                self._on_ready()
            yield
        finally:
            await self.scorer.close()
            await self.session.close()
            self.route_log.close()

    # ------------------------------------------------------------------ helpers
    def _authorized(self, request: Request) -> bool:
        if not self.config.api_key:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.config.api_key.encode())

    @staticmethod
    def _unauthorized() -> JSONResponse:
        return _error(401, "missing or wrong bearer token (Authorization: Bearer <api key>)", "unauthorized")

    async def _read_body(self, request: Request) -> bytes:
        cap = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise _RequestTooLarge
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise _RequestTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    def _forward_headers(self, request: Request, backend: Backend) -> list[tuple[str, str]]:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _REQUEST_HEADERS_DROPPED]
        # The backend's own key when configured; the client's token only when the proxy does not
        # check one itself (then it is meant for the backend, not for us).
        if backend.api_key:
            headers.append(("Authorization", f"Bearer {backend.api_key}"))
        elif not self.config.api_key and "authorization" in request.headers:
            headers.append(("Authorization", request.headers["authorization"]))
        return headers

    @staticmethod
    def _response_headers(response: aiohttp.ClientResponse, extra: dict[str, str]) -> dict[str, str]:
        headers = {k: v for k, v in response.headers.items() if k.lower() not in _RESPONSE_HEADERS_DROPPED}
        headers.update(extra)
        return headers

    async def _until_disconnect(self, request: Request, awaitable):
        """Await ``awaitable`` unless the client disconnects first (then cancel it: closing the
        backend connection is how vLLM learns to stop generating for nobody)."""
        work = asyncio.ensure_future(awaitable)
        gone = asyncio.ensure_future(self._wait_disconnect(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                return work.result()
            work.cancel()
            await asyncio.wait({work})  # let it close its connection; its CancelledError stays inside
            raise _ClientGone
        finally:
            if not work.done():
                work.cancel()
            gone.cancel()

    @staticmethod
    async def _wait_disconnect(request: Request) -> None:
        while True:  # the body is consumed, so the next message can only be the disconnect
            if (await request.receive())["type"] == "http.disconnect":
                return

    # ------------------------------------------------------------------ routes
    async def _chat(self, request: Request) -> Response:
        return await self._route_and_forward(request, "chat", "/v1/chat/completions")

    async def _completions(self, request: Request) -> Response:
        return await self._route_and_forward(request, "completions", "/v1/completions")

    async def _route_and_forward(self, request: Request, endpoint: str, path: str) -> Response:
        outcome = _Outcome(self.metrics, endpoint)
        try:
            response = await self._handle(request, endpoint, path, outcome)
        except asyncio.CancelledError:
            outcome.finish(_CLIENT_CLOSED)
            raise
        except Exception:  # the proxy answers 500 and lives on
            logger.exception("unexpected error while routing a %s request", endpoint)
            response = _error(500, "internal error in the router (see its log)", "internal_error")
        if not isinstance(response, _RelayedStream):
            outcome.finish(response.status_code)
        return response

    async def _handle(self, request: Request, endpoint: str, path: str, outcome: _Outcome) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        try:
            raw = await self._read_body(request)
        except _RequestTooLarge:
            return _error(413, f"request body over {self.config.max_body_bytes} bytes (max_body_bytes)", "too_large")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            return _error(400, f"request body is not valid JSON: {exc}", "invalid_request_error")
        override = request.headers.get(OVERRIDE_HEADER)
        if override is not None and override.strip().lower() not in ROUTES:
            return _error(
                400, f"{OVERRIDE_HEADER} must be 'small' or 'large', got {override!r}", "invalid_request_error"
            )
        override = None if override is None else override.strip().lower()
        try:
            if endpoint == "chat":
                texts = [chat_problem_text(body, self._instructions)]
            else:
                texts = completion_problem_texts(body, self._instructions)
        except BadRequest as exc:
            return _error(400, str(exc), "invalid_request_error")
        if texts is None and override is None:
            return _error(
                400,
                f"a prompt given as token ids cannot be scored: send text, or choose the model with {OVERRIDE_HEADER}",
                "invalid_request_error",
            )
        if override is not None and override not in self.backends and not self.config.dry_run:
            return _error(400, f"{OVERRIDE_HEADER}: no {override} backend is configured", "invalid_request_error")

        decision = await self._decide(texts, override)
        outcome.route = decision.route
        self._log_decision(endpoint, texts, decision)
        headers = decision.headers(self.config.threshold)
        if self.config.dry_run:
            return JSONResponse(
                {
                    "object": "depo.route",
                    "dry_run": True,
                    "route": decision.route,
                    "decided_by": decision.decided_by,
                    "predicted_accuracy": decision.predicted,
                    "threshold": self.config.threshold,
                },
                headers=headers,
            )
        return await self._forward(request, path, raw, decision, headers, outcome)

    async def _decide(self, texts: list[str] | None, override: str | None) -> Decision:
        if override is not None:
            decision = Decision(override, None, "override")
        else:
            started = time.perf_counter()
            try:
                predicted = await asyncio.wait_for(self.scorer.score(texts), self.config.scoring_timeout)
                # Several prompts in one request go to one backend: the hardest one decides.
                hardest = float(np.min(predicted))
                stays_small = bool(route([hardest], self.config.threshold)[0])
            except Exception as exc:
                # Unknown difficulty: the large model is the safe choice, and a router that cannot
                # score should cost accuracy-neutral compute, not failed requests.
                self.metrics.scoring_errors.inc()
                logger.warning("scoring failed (%s: %s); routing to the large model", type(exc).__name__, exc)
                decision = Decision("large", None, "fallback")
            else:
                self.metrics.score_wait_seconds.observe(time.perf_counter() - started)
                for value in predicted:
                    self.metrics.predicted_accuracy.observe(float(value))
                decision = Decision("small" if stays_small else "large", hardest, "score")
        self.metrics.decisions.labels(route=decision.route, decided_by=decision.decided_by).inc()
        return decision

    def _log_decision(self, endpoint: str, texts: list[str] | None, decision: Decision) -> None:
        if not self.route_log.enabled:
            return
        record: dict[str, Any] = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "endpoint": endpoint,
            "route": decision.route,
            "decided_by": decision.decided_by,
            "predicted_accuracy": decision.predicted,
            "threshold": self.config.threshold,
            "dry_run": self.config.dry_run,
        }
        if texts is not None:
            joined = "\n".join(texts)
            record["prompts"] = len(texts)
            record["chars"] = len(joined)
            if self.config.log_text:
                record["text"] = texts[0] if len(texts) == 1 else texts
            else:
                record["text_sha256"] = hashlib.sha256(joined.encode()).hexdigest()[:16]
        self.route_log.write(record)

    async def _forward(
        self, request: Request, path: str, raw: bytes, decision: Decision, headers: dict[str, str], outcome: _Outcome
    ) -> Response:
        backend = self.backends[decision.route]
        name = backend.name
        try:
            response, data = await self._until_disconnect(
                request, self._exchange(backend.url + path, raw, self._forward_headers(request, backend))
            )
        except _ClientGone:
            return Response(status_code=_CLIENT_CLOSED)
        except asyncio.TimeoutError:  # aiohttp's connect and read timeouts are TimeoutErrors too
            self.metrics.backend_errors.labels(backend=name, kind="timeout").inc()
            message = f"the {name} backend did not answer within {self.config.backend_timeout:g} s (backend_timeout)"
            return _error(504, message, "backend_timeout", headers)
        except aiohttp.ClientConnectorError as exc:
            self.metrics.backend_errors.labels(backend=name, kind="refused").inc()
            reason = exc.os_error.strerror or str(exc.os_error)
            return _error(
                502, f"cannot connect to the {name} backend at {backend.url}: {reason}", "backend_error", headers
            )
        except _ResponseTooLarge:
            self.metrics.backend_errors.labels(backend=name, kind="oversized").inc()
            message = f"the {name} backend's answer is over {self.config.max_response_bytes} bytes (max_response_bytes)"
            return _error(502, message, "backend_error", headers)
        except aiohttp.ClientError as exc:
            self.metrics.backend_errors.labels(backend=name, kind="disconnected").inc()
            return _error(502, f"the {name} backend failed: {type(exc).__name__}: {exc}", "backend_error", headers)

        if response.status >= 500:
            self.metrics.backend_errors.labels(backend=name, kind="http_5xx").inc()
        out_headers = self._response_headers(response, headers)
        if data is None:
            return self._relay_stream(response, out_headers, decision.route, name, outcome)
        if response.status == 200 and b'"usage"' in data:
            with contextlib.suppress(ValueError, RecursionError):
                parsed = json.loads(data)
                self.metrics.add_usage(decision.route, parsed.get("usage") if isinstance(parsed, dict) else None)
        return Response(content=data, status_code=response.status, headers=out_headers)

    async def _exchange(
        self, url: str, raw: bytes, headers: list[tuple[str, str]]
    ) -> tuple[aiohttp.ClientResponse, bytes | None]:
        """POST and read the answer; for an event stream, return the open response (data None)."""
        assert self.session is not None
        response = await self.session.post(url, data=raw, headers=headers)
        if response.content_type == "text/event-stream":
            return response, None
        try:
            return response, await self._read_capped(response)
        finally:
            response.release()

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        cap, size, chunks = self.config.max_response_bytes, 0, []
        while chunk := await response.content.readany():
            size += len(chunk)
            if size > cap:
                raise _ResponseTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    def _relay_stream(
        self, response: aiohttp.ClientResponse, headers: dict[str, str], route_name: str, name: str, outcome: _Outcome
    ) -> _RelayedStream:
        sniffer = UsageSniffer()
        state = {"complete": False, "broken": False}

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while chunk := await response.content.readany():
                    sniffer.feed(chunk)
                    yield chunk
                state["complete"] = True
            except asyncio.TimeoutError:
                state["broken"] = True
                self.metrics.backend_errors.labels(backend=name, kind="timeout").inc()
                message = f"the {name} backend went silent for {self.config.backend_timeout:g} s mid-stream"
                yield _sse_error(504, message, "backend_timeout")
            except aiohttp.ClientError as exc:
                state["broken"] = True
                self.metrics.backend_errors.labels(backend=name, kind="stream_broken").inc()
                yield _sse_error(502, f"the {name} backend's stream broke: {type(exc).__name__}", "backend_error")
            finally:
                _end(response, state["complete"])

        def on_close() -> None:
            _end(response, state["complete"])  # also when the generator never ran
            self.metrics.add_usage(route_name, sniffer.usage)
            ended = response.status if state["complete"] or state["broken"] else _CLIENT_CLOSED
            outcome.finish(ended)

        return _RelayedStream(chunks(), on_close, status_code=response.status, headers=headers)

    async def _get_json(self, backend: Backend, path: str, timeout_s: float) -> tuple[int, Any]:
        assert self.session is not None
        headers = {"Authorization": f"Bearer {backend.api_key}"} if backend.api_key else {}
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with self.session.get(backend.url + path, headers=headers, timeout=timeout) as response:
            data = await self._read_capped(response)
            return response.status, (json.loads(data) if response.content_type == "application/json" else None)

    async def _probe(self, backend: Backend) -> dict[str, Any]:
        started = time.perf_counter()
        state: dict[str, Any] = {"url": backend.url}
        try:
            status, _ = await self._get_json(
                backend, self.config.health_path, min(_HEALTH_PROBE_TIMEOUT_S, self.config.backend_timeout)
            )
        except asyncio.TimeoutError:
            state.update(state="down", detail="no answer to the health probe")
        except aiohttp.ClientConnectorError as exc:
            state.update(state="down", detail=f"connection failed: {exc.os_error.strerror or exc.os_error}")
        except (aiohttp.ClientError, ValueError) as exc:
            state.update(state="down", detail=f"{type(exc).__name__}: {exc}")
        else:
            up = 200 <= status < 300
            state.update(state="up" if up else "down", detail=f"{self.config.health_path} answered {status}")
        state["latency_s"] = round(time.perf_counter() - started, 4)
        self.metrics.backend_up.labels(backend=backend.name).set(1.0 if state["state"] == "up" else 0.0)
        return state

    async def _probe_all(self) -> dict[str, dict[str, Any]]:
        names = list(self.backends)
        states = await asyncio.gather(*(self._probe(self.backends[n]) for n in names))
        return dict(zip(names, states))

    async def _health(self, request: Request) -> JSONResponse:
        backends = await self._probe_all()
        all_up = all(s["state"] == "up" for s in backends.values())
        body = {
            "status": "ok" if all_up else "degraded",
            "dry_run": self.config.dry_run,
            "threshold": self.config.threshold,
            "backends": backends,
            "scorer": {"encoder_calls": self.scorer.batches},
        }
        # A dry run forwards nothing, so a backend being down does not make it unhealthy.
        return JSONResponse(body, 200 if all_up or self.config.dry_run else 503)

    async def _models(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        names = list(self.backends)
        results = await asyncio.gather(
            *(
                self._get_json(self.backends[n], "/v1/models", min(_MODELS_TIMEOUT_S, self.config.backend_timeout))
                for n in names
            ),
            return_exceptions=True,
        )
        models, seen, answered = [], set(), 0
        for result in results:
            if isinstance(result, BaseException) or result[0] != 200 or not isinstance(result[1], dict):
                continue
            answered += 1
            for model in result[1].get("data") or []:
                if isinstance(model, dict) and model.get("id") not in seen:
                    seen.add(model.get("id"))
                    models.append(model)
        if names and not answered:
            return _error(502, "no backend answered GET /v1/models", "backend_error")
        return JSONResponse({"object": "list", "data": models})

    async def _metrics(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        return Response(self.metrics.render(), media_type=self.metrics.content_type)
