"""The routing proxy end to end on loopback: real tiny-estimator checkpoint, real uvicorn servers
(the proxy and two OpenAI-compatible table backends), real HTTP. Nothing here is mocked."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import aiohttp
import numpy as np
import pytest
from router_helpers import EASY, HARD, chat, fetch, metric_values, proxy_for, serving

from data_prep.common import boxed_prompt
from recipe.depo.router.table_backend import create_app


def _predict(estimator, text: str) -> float:
    return float(estimator.predict([text])[0])


@pytest.fixture(scope="module")
def proxy(estimator, backends):
    with proxy_for(estimator, small=backends["small_url"], large=backends["large_url"], threshold=0.5) as (p, url):
        yield p, url


def _answer(body: bytes) -> str:
    return json.loads(body)["choices"][0]["message"]["content"]


# ----------------------------------------------------------------------------- routing
def test_routes_by_threshold_both_ways(estimator, backends, proxy):
    _, url = proxy
    p_easy, p_hard = _predict(estimator, EASY[0]), _predict(estimator, HARD[0])
    assert p_hard < 0.5 < p_easy

    sent = json.dumps(chat(EASY[0], temperature=0.7)).encode()
    status, headers, body = fetch("POST", f"{url}/v1/chat/completions", raw=sent)
    assert status == 200 and _answer(body).startswith("[small]")
    assert headers["X-DEPO-Route"] == "small" and headers["X-DEPO-Decided-By"] == "score"
    assert float(headers["X-DEPO-Predicted-Accuracy"]) == pytest.approx(p_easy, abs=1e-5)
    assert backends["small"].state.received[-1][1] == sent  # forwarded byte for byte

    status, headers, body = fetch("POST", f"{url}/v1/chat/completions", body=chat(HARD[0]))
    assert status == 200 and _answer(body).startswith("[large]")
    assert headers["X-DEPO-Route"] == "large"
    assert float(headers["X-DEPO-Predicted-Accuracy"]) == pytest.approx(p_hard, abs=1e-5)


def test_threshold_is_inclusive_on_the_small_side(estimator, backends):
    """predicted >= tau stays small: tau exactly at the (rounded-down) prediction keeps it small,
    a hair above sends the same query large."""
    p_easy = _predict(estimator, EASY[1])
    at = float(np.floor(p_easy * 1e6) / 1e6)
    for tau, expected in ((at, "small"), (min(1.0, p_easy + 1e-4), "large")):
        settings = dict(small=backends["small_url"], large=backends["large_url"], threshold=tau)
        with proxy_for(estimator, **settings) as (_, url):
            status, headers, _ = fetch("POST", f"{url}/v1/chat/completions", body=chat(EASY[1]))
        assert (status, headers["X-DEPO-Route"]) == (200, expected), tau


def test_completions_route_on_the_hardest_prompt(estimator, proxy):
    _, url = proxy
    status, headers, body = fetch("POST", f"{url}/v1/completions", body={"model": "m", "prompt": EASY[2]})
    assert status == 200 and headers["X-DEPO-Route"] == "small"
    assert json.loads(body)["choices"][0]["text"].startswith("[small]")
    status, headers, _ = fetch("POST", f"{url}/v1/completions", body={"model": "m", "prompt": [EASY[2], HARD[1]]})
    assert status == 200 and headers["X-DEPO-Route"] == "large"
    assert float(headers["X-DEPO-Predicted-Accuracy"]) == pytest.approx(_predict(estimator, HARD[1]), abs=1e-5)


def test_scores_the_last_user_message_without_training_instructions(estimator, proxy):
    """The training text: the last user message, less data_prep's answer instruction."""
    _, url = proxy
    messages = [
        {"role": "system", "content": HARD[0]},
        {"role": "user", "content": HARD[1]},
        {"role": "assistant", "content": "Let me think."},
        {"role": "user", "content": [{"type": "text", "text": boxed_prompt(EASY[3])}]},
    ]
    status, headers, _ = fetch("POST", f"{url}/v1/chat/completions", body={"model": "m", "messages": messages})
    assert status == 200 and headers["X-DEPO-Route"] == "small"
    assert float(headers["X-DEPO-Predicted-Accuracy"]) == pytest.approx(_predict(estimator, EASY[3]), abs=1e-5)


def test_override_header_forces_a_route(estimator, backends, proxy):
    _, url = proxy
    status, headers, body = fetch(
        "POST", f"{url}/v1/chat/completions", body=chat(EASY[0]), headers={"X-DEPO-Route": "LARGE"}
    )
    assert status == 200 and _answer(body).startswith("[large]")
    assert headers["X-DEPO-Decided-By"] == "override" and "X-DEPO-Predicted-Accuracy" not in headers
    assert "x-depo-route" not in backends["large"].state.received[-1][0]  # the override stays with the proxy
    # token ids cannot be scored, but an override routes them
    status, headers, _ = fetch(
        "POST", f"{url}/v1/completions", body={"model": "m", "prompt": [1, 2, 3]}, headers={"X-DEPO-Route": "small"}
    )
    assert status == 200 and headers["X-DEPO-Route"] == "small"


# ----------------------------------------------------------------------------- streaming
def test_streaming_passes_through_chunk_by_chunk(estimator):
    """The backend sends event i+1 only once the client has received event i *through the proxy*:
    a proxy that buffered the stream would never deliver event 0, and this test would time out."""
    gates = [threading.Event() for _ in range(16)]
    gates[0].set()

    async def before_chunk(i: int) -> None:
        if not await asyncio.to_thread(gates[i].wait, 20):
            raise RuntimeError(f"the client never received event {i - 1}")

    paced = create_app("large", before_chunk=before_chunk)
    direct = create_app("large")

    async def client(url: str, paced_stream: bool) -> tuple[list[bytes], dict]:
        body = chat(HARD[2], stream=True, stream_options={"include_usage": True})
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                assert response.status == 200
                events = []
                while True:
                    event = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 10)
                    if not event:
                        break
                    events.append(event)
                    if paced_stream:
                        gates[len(events)].set()
                return events, response.headers.copy()

    with serving(paced) as paced_url, serving(direct) as direct_url:
        with proxy_for(estimator, small=direct_url, large=paced_url, threshold=0.5) as (proxy, url):
            events, headers = asyncio.run(client(url, paced_stream=True))
            expected, _ = asyncio.run(client(direct_url, paced_stream=False))
            metrics = fetch("GET", f"{url}/metrics")[2].decode()

    assert headers["Content-Type"].startswith("text/event-stream") and headers["X-DEPO-Route"] == "large"
    assert events[-1] == b"data: [DONE]\n\n"

    # Same events as straight from a backend, but for the id/created fields that differ per request.
    def strip(event):
        return (
            event
            if event.startswith(b"data: [")
            else {k: v for k, v in json.loads(event[6:]).items() if k not in ("id", "created")}
        )

    assert [strip(e) for e in events] == [strip(e) for e in expected]
    text = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content", "") for e in events[:-3])
    assert text == "[large] ok from large"
    tokens = metric_values(metrics, "depo_router_tokens_total")
    assert tokens[(("kind", "completion"), ("route", "large"))] == 4.0  # from the stream's usage chunk


# ----------------------------------------------------------------------------- failures
@pytest.mark.parametrize(
    "path, raw, message",
    [
        ("/v1/chat/completions", b"{not json", "not valid JSON"),
        ("/v1/chat/completions", b"[" * 100_000, "not valid JSON"),
        ("/v1/chat/completions", b'["a list"]', "must be a JSON object"),
        ("/v1/chat/completions", b'{"model": "m"}', "no 'messages'"),
        ("/v1/chat/completions", b'{"messages": []}', "non-empty list"),
        ("/v1/chat/completions", b'{"messages": [{"role": "system", "content": "x"}]}', "no message with role 'user'"),
        ("/v1/completions", b'{"model": "m"}', "no 'prompt'"),
        ("/v1/completions", b'{"prompt": [1, 2]}', "token ids cannot be scored"),
    ],
)
def test_bad_requests_get_400_with_a_message(proxy, path, raw, message):
    _, url = proxy
    status, _, body = fetch("POST", url + path, raw=raw)
    assert status == 400
    assert message in json.loads(body)["error"]["message"]


def test_bad_override_and_oversized_body(estimator, backends):
    settings = dict(small=backends["small_url"], large=backends["large_url"], max_body_bytes=2000)
    with proxy_for(estimator, **settings) as (_, url):
        status, _, body = fetch("POST", f"{url}/v1/chat/completions", body=chat("x"), headers={"X-DEPO-Route": "mid"})
        assert status == 400 and "X-DEPO-Route" in json.loads(body)["error"]["message"]
        status, _, body = fetch("POST", f"{url}/v1/chat/completions", body=chat("x" * 5000))
        assert status == 413 and "max_body_bytes" in json.loads(body)["error"]["message"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_refused_backend_502_silent_backend_504_and_the_proxy_lives_on(estimator, backends):
    slow = create_app("large", latency_s=1.5)  # answers /health at once, completions after 1.5 s
    with serving(slow) as slow_url:
        dead_url = f"http://127.0.0.1:{_closed_port()}"
        settings = dict(small=dead_url, large=slow_url, threshold=0.5, backend_timeout=0.3)
        with proxy_for(estimator, **settings) as (_, url):
            status, headers, body = fetch("POST", f"{url}/v1/chat/completions", body=chat(EASY[0]))
            assert status == 502 and headers["X-DEPO-Route"] == "small"
            assert "cannot connect to the small backend" in json.loads(body)["error"]["message"]

            for stream in (False, True):
                status, headers, body = fetch("POST", f"{url}/v1/chat/completions", body=chat(HARD[0], stream=stream))
                assert status == 504 and headers["X-DEPO-Route"] == "large"
                assert "did not answer within 0.3 s" in json.loads(body)["error"]["message"]

            status, _, body = fetch("GET", f"{url}/health")
            health = json.loads(body)
            assert status == 503 and health["status"] == "degraded"
            assert health["backends"]["small"]["state"] == "down" and health["backends"]["large"]["state"] == "up"

            # a client that gives up before the backend answers is counted once, as 499, not as an error
            with pytest.raises(asyncio.TimeoutError):
                fetch("POST", f"{url}/v1/chat/completions", body=chat(HARD[0]), timeout=0.1)
            assert _wait_for_metric(url, "depo_router_requests_total", ("chat", "large", "499")) == 1.0

            status, _, body = fetch("GET", f"{url}/metrics")
            errors = metric_values(body.decode(), "depo_router_backend_errors_total")
            assert errors == {
                (("backend", "small"), ("kind", "refused")): 1.0,
                (("backend", "large"), ("kind", "timeout")): 2.0,
            }
            assert metric_values(body.decode(), "depo_router_in_flight")[()] == 0


def _wait_for_metric(url: str, name: str, labels: tuple[str, str, str], timeout_s: float = 5.0) -> float:
    """A requests_total sample, polled: the proxy counts a departed client when it notices."""
    key = (("code", labels[2]), ("endpoint", labels[0]), ("route", labels[1]))
    deadline = time.monotonic() + timeout_s
    while True:
        value = metric_values(fetch("GET", f"{url}/metrics")[2].decode(), name).get(key, 0.0)
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_a_client_leaving_mid_stream_closes_the_backend_stream(estimator):
    hold, backend_saw_close = threading.Event(), threading.Event()

    async def before_chunk(i: int) -> None:
        if i >= 1:
            try:
                await asyncio.to_thread(hold.wait, 10)
            except asyncio.CancelledError:  # starlette cancels the stream when its client leaves
                backend_saw_close.set()
                raise

    async def read_one_event_and_leave(url: str) -> bytes:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.post(f"{url}/v1/chat/completions", json=chat(HARD[0], stream=True)) as response:
                return await response.content.readuntil(b"\n\n")

    with serving(create_app("large", before_chunk=before_chunk)) as large_url:
        with proxy_for(estimator, small=large_url, large=large_url) as (_, url):
            first = asyncio.run(read_one_event_and_leave(url))
            assert backend_saw_close.wait(5)
            assert _wait_for_metric(url, "depo_router_requests_total", ("chat", "large", "499")) == 1.0
            assert metric_values(fetch("GET", f"{url}/metrics")[2].decode(), "depo_router_in_flight")[()] == 0
        hold.set()
    assert first.startswith(b"data: {")


def test_backend_silent_mid_stream_ends_the_stream_with_an_error_event(estimator):
    stuck = threading.Event()

    async def before_chunk(i: int) -> None:
        if i >= 2:  # two events, then silence
            await asyncio.to_thread(stuck.wait, 10)

    with serving(create_app("large", before_chunk=before_chunk)) as large_url:
        with proxy_for(estimator, small=large_url, large=large_url, backend_timeout=0.5) as (_, url):
            status, _, body = fetch("POST", f"{url}/v1/chat/completions", body=chat(HARD[0], stream=True), timeout=10)
        stuck.set()
    events = [e for e in body.split(b"\n\n") if e]
    assert status == 200 and len(events) == 3
    assert json.loads(events[-1][6:])["error"]["code"] == 504


# ----------------------------------------------------------------------------- load
def test_burst_of_200_concurrent_requests_is_batched_and_counted_once(estimator, backends):
    forwards = []
    hook = estimator.model.register_forward_hook(lambda *_: forwards.append(1))
    n = 200
    texts = [(EASY + HARD)[i % 8] for i in range(n)]
    expected = ["small" if i % 8 < 4 else "large" for i in range(n)]

    async def burst(url):
        connector = aiohttp.TCPConnector(limit=n)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

            async def one(i):
                if i % 2:
                    body, path = {"model": "m", "prompt": texts[i]}, "/v1/completions"
                else:
                    body, path = chat(texts[i]), "/v1/chat/completions"
                async with session.post(url + path, json=body) as response:
                    await response.read()
                    return response.status, response.headers["X-DEPO-Route"]

            return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 90)

    try:
        settings = dict(small=backends["small_url"], large=backends["large_url"], threshold=0.5)
        with proxy_for(estimator, **settings) as (proxy, url):
            results = asyncio.run(burst(url))
            metrics = fetch("GET", f"{url}/metrics")[2].decode()
    finally:
        hook.remove()

    assert [r[0] for r in results] == [200] * n
    assert [r[1] for r in results] == expected
    requests = metric_values(metrics, "depo_router_requests_total")
    assert sum(requests.values()) == n
    assert requests[(("code", "200"), ("endpoint", "chat"), ("route", "small"))] == 50
    assert requests[(("code", "200"), ("endpoint", "completions"), ("route", "large"))] == 50
    batches = metric_values(metrics, "depo_router_scoring_batch_size_count")[()]
    print(f"burst of {n}: {batches:g} encoder calls")
    assert batches == proxy.scorer.batches == len(forwards) < n
    assert metric_values(metrics, "depo_router_scoring_batch_size_sum")[()] == n  # every text scored once
    assert metric_values(metrics, "depo_router_in_flight")[()] == 0


# ----------------------------------------------------------------------------- modes
def test_api_key_is_required_everywhere_but_health(estimator, backends):
    settings = dict(small=backends["small_url"], large=backends["large_url"], api_key="s3cret")
    with proxy_for(estimator, **settings) as (_, url):
        for method, path, body in (
            ("POST", "/v1/chat/completions", chat(EASY[0])),
            ("POST", "/v1/completions", {"prompt": EASY[0]}),
            ("GET", "/v1/models", None),
            ("GET", "/metrics", None),
        ):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                assert fetch(method, url + path, body=body, headers=headers)[0] == 401, (path, headers)
            assert fetch(method, url + path, body=body, headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert fetch("GET", f"{url}/health")[0] == 200
    # the proxy's own key is not passed on to the backend
    assert "authorization" not in backends["small"].state.received[-1][0]


def test_dry_run_scores_and_logs_without_forwarding(estimator, backends, tmp_path):
    log = tmp_path / "routes.jsonl"
    before = len(backends["small"].state.received) + len(backends["large"].state.received)
    settings = dict(
        small=backends["small_url"], large=backends["large_url"], dry_run=True, route_log=str(log), threshold=0.5
    )
    with proxy_for(estimator, **settings) as (_, url):
        status, headers, body = fetch("POST", f"{url}/v1/chat/completions", body=chat(EASY[0]))
        assert status == 200 and headers["X-DEPO-Route"] == "small"
        answer = json.loads(body)
        assert answer["object"] == "depo.route" and answer["dry_run"] is True
        assert answer["predicted_accuracy"] == pytest.approx(_predict(estimator, EASY[0]), abs=1e-5)
        status, _, body = fetch("POST", f"{url}/v1/completions", body={"prompt": HARD[0]})
        assert status == 200 and json.loads(body)["route"] == "large"
    after = len(backends["small"].state.received) + len(backends["large"].state.received)
    assert after == before
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["endpoint"], r["route"], r["dry_run"]) for r in lines] == [
        ("chat", "small", True),
        ("completions", "large", True),
    ]
    assert "text" not in lines[0] and len(lines[0]["text_sha256"]) == 16


def test_dry_run_needs_no_backends(estimator):
    with proxy_for(estimator, dry_run=True) as (_, url):
        assert fetch("POST", f"{url}/v1/chat/completions", body=chat(HARD[0]))[0] == 200
        status, _, body = fetch("GET", f"{url}/health")
        assert status == 200 and json.loads(body)["backends"] == {}


def test_models_lists_both_backends(proxy):
    _, url = proxy
    status, _, body = fetch("GET", f"{url}/v1/models")
    assert status == 200
    assert sorted(m["id"] for m in json.loads(body)["data"]) == ["large-model", "small-model"]
    status, _, body = fetch("GET", f"{url}/health")
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_one_request_with_text_the_tokenizer_refuses_does_not_fail_the_requests_batched_with_it(estimator, backends):
    """A lone surrogate is valid JSON but stops the real tokenizer. Batched (a 300 ms window holds
    all eleven requests in one encoder call) with ten ordinary requests, it sends only itself to
    the fallback: the ten are scored and routed as they would be alone."""
    bad = b'{"model": "m", "messages": [{"role": "user", "content": "what is \\ud800 + 1"}]}'
    texts = [(EASY + HARD)[i % 8] for i in range(10)]

    async def burst(url):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

            async def one(raw):
                headers = {"Content-Type": "application/json"}
                async with session.post(url + "/v1/chat/completions", data=raw, headers=headers) as response:
                    await response.read()
                    return response.status, response.headers["X-DEPO-Decided-By"], response.headers["X-DEPO-Route"]

            bodies = (
                [json.dumps(chat(t)).encode() for t in texts[:5]]
                + [bad]
                + [json.dumps(chat(t)).encode() for t in texts[5:]]
            )
            return await asyncio.gather(*(one(raw) for raw in bodies))

    settings = dict(small=backends["small_url"], large=backends["large_url"], threshold=0.5, batch_window_ms=300)
    with proxy_for(estimator, **settings) as (_, url):
        results = asyncio.run(burst(url))
    assert results[5] == (200, "fallback", "large")
    ordinary = results[:5] + results[6:]
    assert [r[1] for r in ordinary] == ["score"] * 10
    assert [r[2] for r in ordinary] == ["small" if i % 8 < 4 else "large" for i in range(10)]
