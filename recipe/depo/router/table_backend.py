"""A tiny OpenAI-compatible server that answers from a fixed table: no model, no GPU.

It stands in for ``vllm serve`` where only the router is under test or measured (the tests, the
overhead benchmark, a smoke test of a router config). Each answer is ``[<name>] <text>``, so a
client can see which backend answered. Speaks ``/v1/chat/completions`` and ``/v1/completions``
(streamed as SSE when ``stream`` is true, with a usage chunk when
``stream_options.include_usage``), ``/v1/models`` and ``/health``.

    python -m recipe.depo.router.table_backend --name small --port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from recipe.depo.prompt_text import user_message_text


def create_app(
    name: str,
    *,
    answers: Mapping[str, str] | None = None,
    model: str = "depo-routed",
    latency_s: float = 0.0,
    before_chunk: Callable[[int], Awaitable[None]] | None = None,
) -> FastAPI:
    """The server's app. ``answers`` maps a problem (last user message or prompt) to its answer
    (default: ``"ok from <name>"``); ``latency_s`` is waited before answering (a slow model);
    ``before_chunk(i)`` is awaited before the i-th event of a stream (tests pace streams with it).
    ``app.state.received`` lists ``(headers, raw body)`` of every completion request, in arrival order.
    """
    table = dict(answers or {})
    app = FastAPI(title=f"table backend {name}", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.received = []

    def answer_for(question: str) -> str:
        return f"[{name}] {table.get(question, f'ok from {name}')}"

    async def completion(request: Request, chat: bool) -> Response:
        raw = await request.body()
        app.state.received.append((dict(request.headers), raw))
        try:
            body = json.loads(raw)
            if chat:
                question = user_message_text(body["messages"])
            else:
                question = body["prompt"] if isinstance(body["prompt"], str) else str(body["prompt"][0])
        except Exception as exc:
            return JSONResponse({"error": {"message": f"bad request: {exc}", "code": 400}}, 400)
        if latency_s:
            await asyncio.sleep(latency_s)
        text = answer_for(question)
        created = int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        usage = {"prompt_tokens": len(question.split()), "completion_tokens": len(text.split())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        base = {"id": f"{name}-{len(app.state.received)}", "created": created, "model": body.get("model", model)}

        if not body.get("stream"):
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            else:
                choice = {"index": 0, "text": text, "finish_reason": "stop"}
            return JSONResponse({**base, "object": kind, "choices": [choice], "usage": usage})

        words = text.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]

        def event(piece: str | None, finish: str | None = None) -> dict:
            if chat:
                delta = {} if piece is None else {"content": piece}
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": piece or "", "finish_reason": finish}
            return {**base, "object": f"{kind}.chunk", "choices": [choice]}

        events = [event(p) for p in pieces] + [event(None, "stop")]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**base, "object": f"{kind}.chunk", "choices": [], "usage": usage})

        async def stream():
            for i, item in enumerate([*events, None]):
                if before_chunk is not None:
                    await before_chunk(i)
                yield b"data: [DONE]\n\n" if item is None else b"data: " + json.dumps(item).encode() + b"\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await completion(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await completion(request, chat=False)

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model, "object": "model", "owned_by": name}]}

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    return app


def main(argv: Sequence[str] | None = None) -> int:
    from recipe.depo.router.listen import bind, make_server, url_of

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="shown in every answer, e.g. small or large")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to wait before each answer")
    parser.add_argument("--model", default="depo-routed", help="model id in answers and /v1/models")
    args = parser.parse_args(argv)
    sock = bind(args.host, args.port)
    print(f"table backend {args.name}: listening on {url_of(sock)}", flush=True)
    make_server(create_app(args.name, model=args.model, latency_s=args.latency)).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
