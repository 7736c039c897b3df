"""The side products' own dependencies: setup.py's extras (it reads ``EXTRAS`` from this file, so
the two cannot drift) and the one-line refusal when one runs without its extra. Stdlib only."""

from __future__ import annotations

import importlib.util

# extra -> {distribution: the module it provides}. Training needs none of them.
EXTRAS: dict[str, dict[str, str]] = {
    # the live routing proxy (python -m recipe.depo.router serve)
    "router": {
        "fastapi": "fastapi",
        "uvicorn": "uvicorn",
        "aiohttp": "aiohttp",
        "prometheus-client": "prometheus_client",
        "pyyaml": "yaml",
    },
    # the report's plots (python -m recipe.depo.report)
    "report": {"matplotlib": "matplotlib"},
}


def missing(extra: str) -> list[str]:
    """The distributions of ``extra`` whose module cannot be imported here."""
    return [dist for dist, module in EXTRAS[extra].items() if importlib.util.find_spec(module) is None]


def require(extra: str, command: str) -> None:
    """Exit with one line naming what to install when ``extra`` is not (fully) installed."""
    absent = missing(extra)
    if absent:
        raise SystemExit(
            f"depo: {command} needs the '{extra}' extra ({', '.join(absent)} not installed): "
            f"pip install 'depo-verl[{extra}]'"
        )
