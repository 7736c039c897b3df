"""Micro-batched scoring for the router: a burst of requests costs one encoder call per batch.

Requests ``await score(texts)``; one batcher task collects what arrives within a short window
(or until ``max_batch_size`` texts), and runs the estimator on a dedicated worker thread, so the
event loop keeps serving (streams, health checks, new requests) while the encoder runs. While a
batch is on the encoder, the next one fills up, so under load batches grow by themselves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future


class MicroBatchScorer:
    """Scores texts with ``predict`` (list of str -> array of probabilities, input order).

    ``window_s``: how long the first request of a batch waits for company. ``max_chars``: each
    text is cut to this many characters before tokenising (the encoder truncates to its
    ``max_length`` tokens anyway; the cut bounds the tokeniser's time and memory on huge inputs).
    ``on_batch(batch_size, seconds)`` is called on the event loop after each encoder call. When a
    call fails, each request in it is scored again alone: only a request whose own text fails
    gets the error.
    """

    def __init__(
        self,
        predict: Callable[[list[str]], Sequence[float]],
        *,
        window_s: float = 0.005,
        max_batch_size: int = 64,
        max_chars: int | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if window_s < 0:
            raise ValueError(f"window_s must be >= 0, got {window_s}")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self._predict = predict
        self.window_s = window_s
        self.max_batch_size = max_batch_size
        self.max_chars = max_chars
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._carry: _Pending | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.batches = 0

    async def start(self) -> None:
        """Start the batcher on the running loop (call once, from the loop that will score)."""
        if self._task is not None:
            raise RuntimeError("MicroBatchScorer already started")
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="depo-router-scorer")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="depo-router-batcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._executor is not None:
            # A batch already on the encoder finishes on its own; shutdown does not wait for it.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        pending = [self._carry] if self._carry else []
        while self._queue is not None and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for item in pending:
            if not item.future.done():
                item.future.set_exception(RuntimeError("the scorer was shut down"))

    async def score(self, texts: Sequence[str]) -> np.ndarray:
        """Predicted accuracy per text (input order)."""
        if self._queue is None or self._task is None or self._task.done():
            raise RuntimeError("MicroBatchScorer is not running")
        texts = list(texts)
        if not texts:
            raise ValueError("texts must not be empty")
        if self.max_chars is not None:
            texts = [t[: self.max_chars] for t in texts]
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(texts, future))
        return await future

    async def _collect(self) -> list[_Pending]:
        """Items for one encoder call: the first waiting one plus whatever joins within the window."""
        assert self._queue is not None
        if self._carry is not None:
            first, self._carry = self._carry, None
        else:
            first = await self._queue.get()
        batch, size = [first], len(first.texts)
        deadline = asyncio.get_running_loop().time() + self.window_s
        while size < self.max_batch_size:
            if self._queue.empty():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:  # not the builtin before Python 3.11
                    break
            else:
                item = self._queue.get_nowait()
            if size + len(item.texts) > self.max_batch_size:
                self._carry = item  # first in line for the next batch: arrival order is kept
                break
            batch.append(item)
            size += len(item.texts)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            # A request whose client left (cancelled future) is not worth an encoder call.
            batch = [item for item in batch if not item.future.done()]
            if not batch:
                continue
            texts = [t for item in batch for t in item.texts]
            started = time.perf_counter()
            try:
                predicted = await loop.run_in_executor(self._executor, self._predict_array, texts)
            except asyncio.CancelledError:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(RuntimeError("the scorer was shut down"))
                raise
            except Exception as exc:
                if len(batch) == 1:  # the batcher lives on
                    if not batch[0].future.done():
                        batch[0].future.set_exception(exc)
                    continue
                # One request's text can fail the whole call (a lone surrogate stops the tokeniser):
                # each request is scored again on its own, so only the bad one gets the error.
                await self._score_one_by_one(loop, batch)
                continue
            elapsed = time.perf_counter() - started
            self.batches += 1
            if self._on_batch is not None:
                self._on_batch(len(texts), elapsed)
            offset = 0
            for item in batch:
                n = len(item.texts)
                if not item.future.done():
                    item.future.set_result(predicted[offset : offset + n])
                offset += n

    async def _score_one_by_one(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        for item in batch:
            if item.future.done():
                continue
            started = time.perf_counter()
            try:
                predicted = await loop.run_in_executor(self._executor, self._predict_array, item.texts)
            except asyncio.CancelledError:
                for rest in batch:
                    if not rest.future.done():
                        rest.future.set_exception(RuntimeError("the scorer was shut down"))
                raise
            except Exception as exc:
                if not item.future.done():
                    item.future.set_exception(exc)
                continue
            self.batches += 1
            if self._on_batch is not None:
                self._on_batch(len(item.texts), time.perf_counter() - started)
            if not item.future.done():
                item.future.set_result(predicted)

    def _predict_array(self, texts: list[str]) -> np.ndarray:
        predicted = np.asarray(self._predict(texts), dtype=np.float64)
        if predicted.shape != (len(texts),):
            raise RuntimeError(f"the estimator returned shape {predicted.shape} for {len(texts)} texts")
        if not np.all(np.isfinite(predicted)):
            raise RuntimeError("the estimator returned a non-finite prediction")
        return predicted
