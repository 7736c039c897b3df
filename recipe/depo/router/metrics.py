"""The router's Prometheus metrics (``GET /metrics``), one registry per proxy instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

ROUTES = ("small", "large")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_ACCURACY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))


class RouterMetrics:
    """Counters and histograms of one proxy; ``render()`` gives the Prometheus text format.

    A private registry (not prometheus_client's global one) so that several proxies in one
    process, as in the tests, never share or double-register series.
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "depo_router_requests",
            "Routed requests by endpoint, route (small, large, or none when refused before routing) and HTTP status",
            ["endpoint", "route", "code"],
            registry=r,
        )
        self.decisions = Counter(
            "depo_router_decisions",
            "Route decisions by how they were made: score, override (X-DEPO-Route) or fallback (scoring failed)",
            ["route", "decided_by"],
            registry=r,
        )
        self.tokens = Counter(
            "depo_router_tokens",
            "Tokens per route as reported by the backends' usage (streams: only when the backend sends usage)",
            ["route", "kind"],
            registry=r,
        )
        self.backend_errors = Counter(
            "depo_router_backend_errors",
            "Backend failures: refused (connection), timeout, disconnected, http_5xx, oversized, stream_broken",
            ["backend", "kind"],
            registry=r,
        )
        self.scoring_errors = Counter(
            "depo_router_scoring_errors", "Requests whose scoring failed or timed out (routed large)", registry=r
        )
        self.scoring_seconds = Histogram(
            "depo_router_scoring_seconds", "Encoder time per micro-batch", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.score_wait_seconds = Histogram(
            "depo_router_score_wait_seconds",
            "Per request: time from arrival at the scorer to its prediction (batching window + queue + encoder)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "depo_router_scoring_batch_size", "Texts per encoder call", buckets=_BATCH_BUCKETS, registry=r
        )
        self.predicted_accuracy = Histogram(
            "depo_router_predicted_accuracy",
            "Predicted accuracy of scored requests (its distribution is what tau cuts)",
            buckets=_ACCURACY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("depo_router_in_flight", "Requests being routed or forwarded now", registry=r)
        self.backend_up = Gauge(
            "depo_router_backend_up", "1 if the backend answered its last health probe", ["backend"], registry=r
        )

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.scoring_seconds.observe(seconds)

    def add_usage(self, route: str, usage: dict | None) -> None:
        if not isinstance(usage, dict):
            return
        for kind in ("prompt_tokens", "completion_tokens"):
            value = usage.get(kind)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                self.tokens.labels(route=route, kind=kind.removesuffix("_tokens")).inc(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
