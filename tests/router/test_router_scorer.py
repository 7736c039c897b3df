"""MicroBatchScorer with plain-Python predict functions: batching, ordering, errors, and that the
event loop keeps running while the encoder works. (The real estimator behind it: test_router_serve.)"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from recipe.depo.router.scorer import MicroBatchScorer


def _length_score(texts):
    return [len(t) / 100 for t in texts]


def test_concurrent_requests_share_encoder_calls_and_keep_their_own_results():
    calls = []

    def predict(texts):
        calls.append(list(texts))
        time.sleep(0.02)  # an encoder call takes time, so later arrivals queue up behind it
        return _length_score(texts)

    async def main():
        scorer = MicroBatchScorer(predict, window_s=0.01, max_batch_size=16)
        await scorer.start()
        try:
            requests = [["x" * i] if i % 3 else ["x" * i, "y" * (i + 1)] for i in range(1, 61)]
            results = await asyncio.gather(*(scorer.score(r) for r in requests))
        finally:
            await scorer.close()
        return requests, results

    requests, results = asyncio.run(main())
    for request, result in zip(requests, results):
        np.testing.assert_allclose(result, _length_score(request))
    flat = [t for call in calls for t in call]
    assert sorted(flat) == sorted(t for r in requests for t in r)  # every text scored exactly once
    assert len(calls) < len(requests)
    assert max(len(call) for call in calls) <= 16
    # arrival order is kept across batches (a request that did not fit goes first next time)
    assert flat == [t for r in requests for t in r]


def test_a_request_larger_than_the_batch_limit_is_scored_alone():
    calls = []

    async def main():
        scorer = MicroBatchScorer(lambda t: calls.append(len(t)) or _length_score(t), window_s=0.0, max_batch_size=4)
        await scorer.start()
        try:
            return await scorer.score(["a"] * 10)
        finally:
            await scorer.close()

    assert len(asyncio.run(main())) == 10 and calls == [10]


def test_scoring_does_not_block_the_event_loop():
    release = threading.Event()

    def slow_predict(texts):
        release.wait(5)
        return _length_score(texts)

    async def main():
        scorer = MicroBatchScorer(slow_predict, window_s=0.0)
        await scorer.start()
        ticks = 0
        try:
            pending = asyncio.ensure_future(scorer.score(["abc"]))
            # The loop must tick while the encoder is busy; a blocked loop would leave ticks at 0.
            while ticks < 20:
                await asyncio.sleep(0.005)
                ticks += 1
            assert not pending.done()
            release.set()
            return await asyncio.wait_for(pending, 5), ticks
        finally:
            await scorer.close()

    result, ticks = asyncio.run(main())
    assert ticks == 20 and result.tolist() == [0.03]


def test_a_failing_batch_fails_its_requests_and_the_scorer_lives_on():
    def predict(texts):
        if "boom" in texts:
            raise RuntimeError("encoder exploded")
        return _length_score(texts)

    async def main():
        scorer = MicroBatchScorer(predict, window_s=0.0)
        await scorer.start()
        try:
            with pytest.raises(RuntimeError, match="encoder exploded"):
                await scorer.score(["boom"])
            return await scorer.score(["fine"])
        finally:
            await scorer.close()

    assert asyncio.run(main()).tolist() == [0.04]


@pytest.mark.parametrize(
    "predict, message",
    [(lambda t: [0.5], "shape"), (lambda t: [float("nan")] * len(t), "non-finite")],
)
def test_bad_estimator_output_is_an_error_not_a_route(predict, message):
    async def main():
        scorer = MicroBatchScorer(predict, window_s=0.0)
        await scorer.start()
        try:
            await scorer.score(["a", "b"] if message == "shape" else ["a"])
        finally:
            await scorer.close()

    with pytest.raises(RuntimeError, match=message):
        asyncio.run(main())


def test_texts_are_cut_to_max_chars_before_scoring():
    seen = []

    async def main():
        scorer = MicroBatchScorer(lambda t: seen.extend(t) or _length_score(t), window_s=0.0, max_chars=5)
        await scorer.start()
        try:
            return await scorer.score(["abcdefghij"])
        finally:
            await scorer.close()

    assert asyncio.run(main()).tolist() == [0.05] and seen == ["abcde"]


def test_score_before_start_is_an_error():
    async def main():
        await MicroBatchScorer(_length_score).score(["a"])

    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(main())


def test_a_text_that_fails_the_encoder_fails_only_its_own_request():
    """The batch that fails is scored again request by request: the other requests batched with
    the bad one get their scores; only the bad one gets the error."""
    calls = []

    def predict(texts):
        calls.append(list(texts))
        if any("\ud800" in t for t in texts):
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return _length_score(texts)

    async def main():
        scorer = MicroBatchScorer(predict, window_s=0.2, max_batch_size=64)
        await scorer.start()
        try:
            requests = [["a" * i] for i in range(1, 6)] + [["ok", "\ud800"]] + [["b" * i] for i in range(1, 6)]
            return requests, await asyncio.gather(*(scorer.score(r) for r in requests), return_exceptions=True)
        finally:
            await scorer.close()

    requests, results = asyncio.run(main())
    assert isinstance(results[5], UnicodeEncodeError)
    for request, result in list(zip(requests, results))[:5] + list(zip(requests, results))[6:]:
        np.testing.assert_allclose(result, _length_score(request))
    assert len(calls[0]) == 12  # one encoder call for all eleven requests, then one per request
    assert len(calls) == 1 + 11
