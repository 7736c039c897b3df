"""The pre-rollout selection core: exact expected decisions on small hand-made populations."""

import json

import numpy as np
import pytest

from recipe.depo.filter import EXPLORE, FILL, WARMUP, WINDOW, Candidate, DifficultyFilter, FilterConfig, scan_stats


class Source:
    """A dataloader stand-in: yields candidates with the given predictions, in chunks."""

    def __init__(self, predictions, chunk=4):
        self.predictions = list(predictions)
        self.chunk = chunk
        self.pos = 0
        self.calls = []

    def __call__(self, at_least):
        self.calls.append(at_least)
        out = []
        while len(out) < at_least:
            for _ in range(self.chunk):
                i = self.pos % len(self.predictions)
                out.append(Candidate(f"p{self.pos}", self.predictions[i]))
                self.pos += 1
        return out


def make(**kw):
    base = dict(low=0.2, high=0.8, warmup_steps=2, explore_rate=0.0, max_scan=100, seed=0)
    base.update(kw)
    window = (base.pop("low"), base.pop("high"))
    return DifficultyFilter(FilterConfig(window=window, **base))


def test_warmup_keeps_everything_drawn():
    f = make()
    src = Source([0.0, 1.0, 0.5, 0.99], chunk=4)
    sel = f.select(8, step=1, draw=src)
    assert sel.keys == [f"p{i}" for i in range(8)]
    assert all(a.reason == WARMUP for a in sel.kept)
    assert sel.rejected == [] and f.carry == []
    # Step 2 is still warm-up (steps 1..warmup_steps).
    assert all(a.reason == WARMUP for a in f.select(4, step=2, draw=src).kept)


def test_after_warmup_only_window_exact_size_and_carry_over():
    f = make()
    preds = [0.1, 0.5, 0.9, 0.3, 0.95, 0.7, 0.05, 0.6]  # in window: 0.5 0.3 0.7 0.6
    src = Source(preds, chunk=4)
    sel = f.select(3, step=3, draw=src)
    assert len(sel.kept) == 3
    assert all(0.2 <= a.prediction <= 0.8 and a.reason == WINDOW for a in sel.kept)
    assert sel.keys == ["p1", "p3", "p5"]
    # p7 (0.6) was kept beyond the batch: carried, not discarded.
    assert [a.key for a in f.carry] == ["p7"]
    assert sel.rejected == ["p0", "p2", "p4", "p6"]
    sel2 = f.select(2, step=4, draw=src)
    assert sel2.keys[0] == "p7" and sel2.carried_in == 1
    assert len(sel2.kept) == 2
    assert f.counters["kept"] == 5 and f.counters["scanned"] == 12


def test_carry_exceeding_need_stays_queued_in_order():
    f = make(warmup_steps=0)
    src = Source([0.5], chunk=5)
    assert f.select(1, step=1, draw=src).keys == ["p0"]
    assert [a.key for a in f.carry] == ["p1", "p2", "p3", "p4"]
    sel = f.select(2, step=2, draw=src)
    assert sel.keys == ["p1", "p2"] and sel.scanned == []
    assert [a.key for a in f.carry] == ["p3", "p4"]


def test_warmup_carry_is_refiltered_after_warmup():
    f = make(warmup_steps=1)
    src = Source([0.5, 0.95, 0.4], chunk=3)
    f.select(1, step=1, draw=src)  # p0 kept, p1 (0.95) and p2 carried under warm-up
    assert [a.reason for a in f.carry] == [WARMUP, WARMUP]
    sel = f.select(1, step=2, draw=src)
    assert "p1" in sel.rejected  # out of window now that the filter is on
    assert sel.keys == ["p2"] and sel.kept[0].reason == WINDOW


def test_explore_rate_admits_out_of_window_at_that_rate_and_is_seeded():
    preds = [0.0, 1.0]  # all out of window
    f = make(warmup_steps=0, explore_rate=0.25, max_scan=10**9, seed=7)
    sel = f.select(400, step=1, draw=Source(preds, chunk=50))
    assert all(a.reason == EXPLORE for a in sel.kept) and len(sel.kept) == 400
    rate = 400 / len(sel.scanned)
    assert 0.2 < rate < 0.3
    again = make(warmup_steps=0, explore_rate=0.25, max_scan=10**9, seed=7).select(400, 1, Source(preds, chunk=50))
    assert again.keys == sel.keys


def test_scan_cap_fills_with_closest_to_centre_and_never_stalls():
    f = make(warmup_steps=0, max_scan=8)
    preds = [0.0, 0.95, 0.1, 0.9, 0.15, 1.0, 0.99, 0.05]  # nothing in [0.2, 0.8]
    sel = f.select(3, step=1, draw=Source(preds, chunk=4))
    assert sel.scan_cap_hit and len(sel.scanned) == 8
    # centre 0.5: distances .5 .45 .4 .4 .35 .5 .49 .45 -> p4, p2, p3 (kept in draw order).
    assert sel.keys == ["p2", "p3", "p4"]
    assert all(a.reason == FILL for a in sel.kept)
    assert sorted(sel.rejected) == sorted(["p0", "p1", "p5", "p6", "p7"])
    assert f.counters["cap_hits"] == 1 and f.counters["filled"] == 3


def test_scan_cap_keeps_drawing_until_fill_is_possible():
    f = make(warmup_steps=0, max_scan=1)
    sel = f.select(6, step=1, draw=Source([0.99], chunk=2))
    assert len(sel.kept) == 6 and sel.scan_cap_hit


def test_state_round_trip_through_json_restores_future_decisions():
    cfg = dict(warmup_steps=0, explore_rate=0.5, max_scan=10**6, seed=3)
    f = make(**cfg)
    src = Source([0.1, 0.5, 0.95, 0.6, 0.7], chunk=3)
    f.select(2, step=1, draw=src)
    state = json.loads(json.dumps(f.state_dict()))
    g = make(**cfg)
    g.load_state_dict(state)
    assert g.carry == f.carry and g.counters == f.counters
    src_f = Source([0.1, 0.5, 0.95, 0.6, 0.7], chunk=3)
    src_g = Source([0.1, 0.5, 0.95, 0.6, 0.7], chunk=3)
    src_f.pos = src_g.pos = src.pos
    assert f.select(5, step=2, draw=src_f).kept == g.select(5, step=2, draw=src_g).kept


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match="empty"):
        FilterConfig(window=(0.5, 0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        FilterConfig(window=(-0.1, 0.5))
    with pytest.raises(ValueError, match="explore_rate"):
        FilterConfig(explore_rate=1.5)
    with pytest.raises(ValueError, match="max_scan"):
        DifficultyFilter(FilterConfig())  # null max_scan must be resolved first
    f = make(warmup_steps=0)
    with pytest.raises(ValueError, match="finite"):
        f.select(1, step=1, draw=lambda k: [Candidate("x", float("nan"))])
    with pytest.raises(RuntimeError, match="empty"):
        f.select(1, step=1, draw=lambda k: [])
    assert make().select(0, step=1, draw=Source([0.5])).kept == []
    assert np.isclose(FilterConfig(window=(0.15, 0.85)).centre, 0.5)


def test_payloads_ride_along_into_kept_and_carry_over():
    f = make(warmup_steps=0)

    def draw(k):  # a chunk of 4, two in the window; the payload is the "row"
        return [Candidate(f"k{i}", p, payload={"row": i}) for i, p in enumerate([0.5, 0.9, 0.6, 0.1])]

    sel = f.select(1, step=1, draw=draw)
    assert [(a.key, a.payload) for a in sel.kept] == [("k0", {"row": 0})]
    # the surplus in-window prompt is carried with its row: the queue is the only record of it
    assert [(a.key, a.payload) for a in f.carry] == [("k2", {"row": 2})]
    state = json.loads(json.dumps(f.state_dict()))  # payloads are not part of the JSON state
    g = make(warmup_steps=0)
    g.load_state_dict(state, payloads=[{"row": 2}])
    assert [(a.key, a.payload) for a in g.carry] == [("k2", {"row": 2})]
    assert g.select(1, step=2, draw=draw).kept[0].payload == {"row": 2}
    with pytest.raises(ValueError, match="1 carried"):
        make().load_state_dict(state, payloads=[])


def test_scan_stats_over_every_scanned_prediction_by_hand():
    stats = scan_stats([0.1, 0.5, 0.9, 0.3], low=0.2, high=0.8)
    # mean 0.45; deviations -0.35, 0.05, 0.45, -0.15: variance (0.1225+0.0025+0.2025+0.0225)/4 = 0.0875
    assert stats["mean"] == pytest.approx(0.45) and stats["std"] == pytest.approx(0.0875**0.5)
    assert stats["in_window"] == 0.5  # 0.5 and 0.3; bounds are inclusive
    assert scan_stats([0.2, 0.8], 0.2, 0.8)["in_window"] == 1.0
    assert all(np.isnan(v) for v in scan_stats([], 0.2, 0.8).values())


def test_null_max_scan_resolves_to_eight_batches():
    assert FilterConfig().resolved(16).max_scan == 128
    assert FilterConfig(max_scan=20).resolved(16).max_scan == 20
    assert DifficultyFilter(FilterConfig().resolved(4)).config.max_scan == 32
