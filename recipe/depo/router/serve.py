"""``python -m recipe.depo.router serve``: put the router in front of two OpenAI-compatible servers.

    python -m recipe.depo.router serve --estimator CKPT/global_step_N/depo/estimator \\
        --small http://127.0.0.1:8001 --large http://127.0.0.1:8002 --threshold 0.75

Every setting can also come from ``--config router.yaml`` (keys: ``ServeConfig``'s fields); the
command line wins over the file. How to pick the threshold and run it with vLLM: docs/router.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recipe.depo.fsutil import unwritable_dir_reason
from recipe.depo.router.estimator_checkpoint import load_estimator
from recipe.depo.router.serve_config import API_KEY_ENV, ConfigError, ServeConfig

logger = logging.getLogger("recipe.depo.router")

# Texts are cut to this many characters per estimator token before tokenising: the encoder reads
# at most max_length tokens, and one token is almost never longer than this.
CHARS_PER_TOKEN_CAP = 64


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recipe.depo.router serve",
        description="OpenAI-compatible proxy routing each query to a small or a large model by DEPO's "
        "predicted accuracy (>= threshold: small).",
    )
    add = parser.add_argument
    add("--config", type=Path, help="YAML file of settings (any ServeConfig key); flags override it")
    add("--estimator", help="estimator checkpoint directory (OnlineEstimator.save)")
    add("--small", help="small model's OpenAI-compatible server, e.g. http://127.0.0.1:8001")
    add("--large", help="large model's OpenAI-compatible server")
    add("--threshold", type=float, help="predicted accuracy >= threshold stays on the small model (default 0.75)")
    add("--host", help="address to listen on (default 127.0.0.1: loopback only)")
    add("--port", type=int, help="port to listen on (default 8000; 0 = a free one, printed)")
    add("--api-key", help=f"bearer token required on every route but /health (or env {API_KEY_ENV})")
    add("--backend-timeout", type=float, help="seconds a backend may stay silent before 504 (default 600)")
    add("--dry-run", action="store_const", const=True, help="score and log each request, forward nothing")
    add("--route-log", help="append one JSON line per routing decision to this file")
    add("--batch-window-ms", type=float, help="how long a request waits to share an encoder call (default 2)")
    add("--max-batch-size", type=int, help="texts per encoder call (default 64)")
    add("--device", choices=("auto", "cpu", "cuda"), help="where the estimator runs (default auto)")
    add("--torch-threads", type=int, help="torch CPU threads for the estimator (default 1 on CPU)")
    add("--log-level", choices=("debug", "info", "warning", "error"))
    return parser


def read_config_file(path: Path) -> Any:
    import yaml

    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML: {exc}") from None
    return {} if values is None else values


def route_log_problem(path: str | None) -> str | None:
    """Why ``path`` cannot be opened for appending (a directory, a missing or unwritable folder), or None."""
    if path is None:
        return None
    if os.path.isdir(path):
        return "Is a directory"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"no folder {folder}"
    return unwritable_dir_reason(folder)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli = {k: v for k, v in vars(args).items() if k != "config"}
    try:
        file_values = read_config_file(args.config) if args.config else None
        config = ServeConfig.build(file_values, cli, source=str(args.config))
    except ConfigError as exc:
        print(f"depo-router: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not config.binds_loopback and not config.api_key:
        logger.warning("listening on %s without an api_key: anyone who can reach it can use both models", config.host)

    import prometheus_client

    # The *_created series (one per counter label set) double /metrics for nothing a dashboard uses.
    prometheus_client.disable_created_metrics()

    from recipe.depo.router.core import DifficultyRouter
    from recipe.depo.router.listen import bind, make_server, url_of
    from recipe.depo.router.proxy import RouterProxy

    # What can be checked in a moment is checked before the estimator loads (seconds, more on a
    # busy machine): the route log can be opened, and the port is free (bound now, served later).
    reason = route_log_problem(config.route_log)
    if reason:
        print(f"depo-router: route_log: cannot open {config.route_log}: {reason}", file=sys.stderr)
        return 2
    try:
        sock = bind(config.host, config.port)
    except OSError as exc:
        print(f"depo-router: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        estimator = load_estimator(config.estimator, config.device)
    except (OSError, ValueError) as exc:
        sock.close()
        print(f"depo-router: estimator: {exc}", file=sys.stderr)
        return 2
    router = DifficultyRouter(estimator, threshold=config.threshold)
    if config.torch_threads is not None or estimator.device.type == "cpu":
        import torch

        # One thread by default on CPU, because an OpenMP team that must share its cores with other
        # busy processes collapses: on the 2-core dev box, with other jobs running, the tiny encoder
        # added ~320 ms (p50) with 2 threads vs ~7-13 ms with 1. On a quiet or dedicated machine more
        # threads pay (2 threads: ~2x MiniLM throughput there); see docs/router.md.
        torch.set_num_threads(config.torch_threads or 1)
    url = url_of(sock)

    def ready() -> None:
        backends = "dry run, forwarding nothing" if config.dry_run else f"small={config.small} large={config.large}"
        print(f"depo-router: listening on {url} ({backends}, threshold {config.threshold:g})", flush=True)

    try:
        proxy = RouterProxy(
            config, router.predict, max_chars=CHARS_PER_TOKEN_CAP * estimator.max_length, on_ready=ready
        )
    except OSError as exc:
        sock.close()
        print(f"depo-router: route_log: cannot open {config.route_log}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    make_server(proxy.app, log_level=config.log_level, max_connections=config.max_connections).run(sockets=[sock])
    return 0
