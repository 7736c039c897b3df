"""Settings of ``python -m recipe.depo.router serve``: defaults < ``--config`` YAML < command line."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

API_KEY_ENV = "DEPO_ROUTER_API_KEY"
_DEVICES = ("auto", "cpu", "cuda")
_LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """A setting is invalid; the message names the setting (and the file it came from)."""


@dataclass
class ServeConfig:
    estimator: str = ""  # OnlineEstimator.save directory (e.g. CKPT/global_step_N/depo/estimator)
    small: str | None = None  # base URL of the small model's OpenAI-compatible server
    large: str | None = None  # base URL of the large model's
    threshold: float = 0.75  # predicted accuracy >= threshold stays on the small model (paper, Table 3)
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 8000  # 0 picks a free port (printed at start)
    api_key: str | None = None  # bearer token required on every route but /health (or env DEPO_ROUTER_API_KEY)
    small_api_key: str | None = None  # bearer token the proxy sends to the small backend
    large_api_key: str | None = None  # ... to the large backend
    backend_timeout: float = 600.0  # seconds a backend may stay silent (connect, first byte, between chunks)
    dry_run: bool = False  # score and log every request, forward nothing
    route_log: str | None = None  # JSONL file, one line per routing decision (appended)
    log_text: bool = False  # put the problem text in route_log (default: its sha256 prefix only)
    # How long a request waits for others to share its encoder call; 0 batches only what queued up
    # while the encoder was busy with the previous batch.
    batch_window_ms: float = 2.0
    max_batch_size: int = 64  # texts per encoder call
    scoring_timeout: float = 30.0  # a request whose score takes longer goes to the large model
    max_body_bytes: int = 32 * 2**20  # larger requests get 413
    max_response_bytes: int = 256 * 2**20  # larger non-streamed backend answers get 502
    max_connections: int = 1024  # concurrent connections; more get 503 (uvicorn limit_concurrency)
    health_path: str = "/health"  # probed on each backend by GET /health
    instructions: list[str] | None = None  # removed from the user message before scoring; None = data_prep's
    device: str = "auto"  # estimator device; a bfloat16 checkpoint is read as float32 on CPU
    torch_threads: int | None = None  # torch CPU threads; None: 1 when the estimator runs on CPU (see serve.py)
    log_level: str = "info"

    def __post_init__(self) -> None:
        if not isinstance(self.estimator, str) or not self.estimator:
            raise ConfigError("estimator: the estimator checkpoint directory is required (--estimator)")
        for name in ("small", "large"):
            url = getattr(self, name)
            if url is None:
                if not self.dry_run:
                    raise ConfigError(f"{name}: the {name} backend's URL is required (--{name}) unless dry_run")
                continue
            setattr(self, name, _base_url(name, url))
        self.threshold = _number("threshold", self.threshold, 0.0, 1.0)
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"host: must be a non-empty string, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(f"port: must be an int in [0, 65535], got {self.port!r}")
        for name in ("api_key", "small_api_key", "large_api_key", "route_log"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{name}: must be a non-empty string when set, got {value!r}")
        for name in ("dry_run", "log_text"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: must be true or false, got {getattr(self, name)!r}")
        self.backend_timeout = _number("backend_timeout", self.backend_timeout, 0.0, math.inf, lo_open=True)
        self.scoring_timeout = _number("scoring_timeout", self.scoring_timeout, 0.0, math.inf, lo_open=True)
        self.batch_window_ms = _number("batch_window_ms", self.batch_window_ms, 0.0, 1000.0)
        for name in ("max_batch_size", "max_body_bytes", "max_response_bytes", "max_connections"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: must be a positive int, got {value!r}")
        if not isinstance(self.health_path, str) or not self.health_path.startswith("/"):
            raise ConfigError(f"health_path: must start with '/', got {self.health_path!r}")
        if self.instructions is not None:
            if not isinstance(self.instructions, list) or not all(isinstance(i, str) for i in self.instructions):
                raise ConfigError(f"instructions: must be a list of strings, got {self.instructions!r}")
        if self.torch_threads is not None and (
            isinstance(self.torch_threads, bool) or not isinstance(self.torch_threads, int) or self.torch_threads < 1
        ):
            raise ConfigError(f"torch_threads: must be a positive int, got {self.torch_threads!r}")
        if self.device not in _DEVICES:
            raise ConfigError(f"device: must be one of {_DEVICES}, got {self.device!r}")
        if self.log_level not in _LOG_LEVELS:
            raise ConfigError(f"log_level: must be one of {_LOG_LEVELS}, got {self.log_level!r}")

    @property
    def instruction_texts(self) -> tuple[str, ...]:
        # imported here: problem_text reads recipe.depo.labels, which imports verl (~6 s), and the
        # settings are checked before any of that
        from recipe.depo.router.problem_text import DEFAULT_INSTRUCTIONS

        return DEFAULT_INSTRUCTIONS if self.instructions is None else tuple(self.instructions)

    @property
    def binds_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def build(cls, file_values: Mapping[str, Any] | None, cli_values: Mapping[str, Any], source: str = "--config"):
        """Defaults, then the YAML file's values, then the command line's (None = not given)."""
        values: dict[str, Any] = {}
        if file_values is not None:
            if not isinstance(file_values, Mapping):
                raise ConfigError(f"{source}: must be a mapping of settings, got {type(file_values).__name__}")
            unknown = sorted(set(file_values) - set(cls.keys()))
            if unknown:
                raise ConfigError(f"{source}: unknown key {unknown[0]!r}; valid keys: {', '.join(cls.keys())}")
            values.update(file_values)
        values.update({k: v for k, v in cli_values.items() if v is not None})
        if values.get("api_key") is None and os.environ.get(API_KEY_ENV):
            values["api_key"] = os.environ[API_KEY_ENV]
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}" if file_values is not None else str(exc)) from None


def _number(name: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}: must be a finite number, got {value!r}")
    if (value <= lo if lo_open else value < lo) or value > hi:
        raise ConfigError(f"{name}: must lie in {'(' if lo_open else '['}{lo}, {hi}], got {value!r}")
    return float(value)


def _base_url(name: str, url: Any) -> str:
    """The server root: OpenAI clients' ``.../v1`` base is accepted and its ``/v1`` dropped."""
    if not isinstance(url, str):
        raise ConfigError(f"{name}: must be a URL string, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}: must be an http(s) URL such as http://127.0.0.1:8001, got {url!r}")
    try:
        parts.port  # noqa: B018 -- parsing the port is what validates it
    except ValueError:
        raise ConfigError(f"{name}: bad port in {url!r}") from None
    if parts.query or parts.fragment:
        raise ConfigError(f"{name}: must not have a query or fragment, got {url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{parts.scheme}://{parts.netloc}{path}"
