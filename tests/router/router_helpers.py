"""Helpers of the serving tests: serve an app on 127.0.0.1, build the real proxy, make requests."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp

# The estimator fixture is trained to predict ~1 for EASY and ~0 for HARD: the routes are far apart.
EASY = ["what is 1 + 1", "what is 2 + 2", "compute 3 + 4", "what is 5 + 1"]
HARD = [
    "prove that there are infinitely many primes of the form 4 n + 3",
    "find the greatest integer n such that the product of all primes less than n is divisible by n",
    "how many triangles with integer sides have perimeter 1000",
    "evaluate the sum over all positive integers of one over n squared",
]


@contextlib.contextmanager
def serving(app):
    from recipe.depo.router.listen import ServerThread

    with ServerThread(app) as url:
        yield url


@contextlib.contextmanager
def proxy_for(estimator, **settings):
    """The real proxy (RouterProxy, uvicorn) around ``estimator`` with ServeConfig ``settings``."""
    from recipe.depo.router.proxy import RouterProxy
    from recipe.depo.router.serve_config import ServeConfig

    config = ServeConfig(estimator="(loaded in-process)", **settings)
    proxy = RouterProxy(config, estimator.predict, max_chars=64 * estimator.max_length)
    with serving(proxy.app) as url:
        yield proxy, url


def fetch(method: str, url: str, *, body=None, raw: bytes | None = None, headers=None, timeout: float = 30.0):
    """One HTTP request -> (status, headers, body bytes); ``body`` is sent as JSON."""

    async def go():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            send_headers = {"Content-Type": "application/json", **(headers or {})}
            async with session.request(method, url, data=data, headers=send_headers) as response:
                return response.status, response.headers, await response.read()

    return asyncio.run(go())


def chat(text: str, **extra) -> dict:
    return {"model": "depo-routed", "messages": [{"role": "user", "content": text}], **extra}


def metric_values(text: str, name: str) -> dict[tuple, float]:
    """``{sorted label pairs: value}`` of one Prometheus metric family in /metrics text."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out
