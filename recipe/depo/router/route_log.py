"""One JSON line per routing decision, written by a background thread (never on the event loop)."""

from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Any

logger = logging.getLogger("recipe.depo.router.routes")


class RouteLog:
    """Appends decisions to ``path`` (opened now, so a bad path fails at start) and/or echoes them
    to the ``recipe.depo.router.routes`` logger. ``write`` only enqueues."""

    def __init__(self, path: str | None, *, echo: bool = False) -> None:
        self.path = path
        self.echo = echo
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 -- closed by close()
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self._file is not None or self.echo

    def start(self) -> None:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="depo-router-route-log", daemon=True)
            self._thread.start()

    def write(self, record: dict[str, Any]) -> None:
        if self._thread is not None:
            self._queue.put(json.dumps(record, ensure_ascii=False, sort_keys=True))

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def _drain(self) -> None:
        while True:
            line = self._queue.get()
            if line is None:
                return
            try:
                if self._file is not None:
                    # Flushed per line: whoever tails the file sees each decision when it is made.
                    self._file.write(line + "\n")
                    self._file.flush()
                if self.echo:
                    logger.info("%s", line)
            except Exception:  # a full disk must not stop routing; say so and keep draining
                logger.exception("could not write a route log line to %s", self.path)
