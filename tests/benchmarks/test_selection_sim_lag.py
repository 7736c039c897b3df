"""benchmarks/selection_sim.py --lag: the asynchronous pipeline and the predict-ahead remedy, by hand."""

import math

import numpy as np
import pytest


class Recording:
    """A selector that records when it chose each batch and when each was learnt from."""

    uses_estimator = False

    def __init__(self, sim, batch):
        self.sim, self.batch = sim, batch
        self.stream = sim.PromptStream(100, 0)
        self.chosen_at, self.observed = [], []

    def choose(self, step):
        ids = np.full(self.batch, len(self.chosen_at), dtype=np.int64)  # the id says which choice it was
        self.chosen_at.append(step)
        return self.sim.Choice(ids=ids, scanned=self.batch)

    def observe(self, step, ids, mean_k, avg_logprob):
        self.observed.append((step, int(ids[0])))
        return 0.0


@pytest.mark.parametrize("lag, chosen_at", [(0, [1, 2, 3, 4, 5]), (2, [1, 1, 1, 2, 3, 4, 5])])
def test_batches_are_chosen_lag_steps_before_they_are_rolled_out(sim, lag, chosen_at):
    from test_selection_sim import tiny_world

    _, _, policy = tiny_world(sim, [0.5] * 100)
    selector = Recording(sim, batch=2)
    settings = sim.SimSettings(steps=5, batch=2, n=4, warmup=0, pool_size=100, lag=lag)
    rec = sim.run_selector(selector, policy, settings)
    # the first step fills the pipeline (verl's warm-up batches), then one batch a step
    assert selector.chosen_at == chosen_at
    # the batch learnt from at step t is the one chosen at step t - lag (t <= lag: at step 1)
    assert [(s, selector.chosen_at[c]) for s, c in selector.observed] == [(s, max(1, s - lag)) for s in range(1, 6)]
    assert rec["groups"] == [2] * 5


def test_ahead_shifts_predictions_by_the_outcomes_residual(sim):
    class Fixed:
        def predict(self, texts):
            return np.full(len(texts), 0.5)

    filter_config = sim.FilterConfig(warmup_steps=0, max_scan=8, seed=0)
    plain = sim.DepoSelector("d", sim.PromptStream(10, 0), 2, filter_config, Fixed(), ["q"] * 10)
    ahead = sim.DepoSelector("d", sim.PromptStream(10, 0), 2, filter_config, Fixed(), ["q"] * 10, ahead=True)
    for s in (plain, ahead):
        # outcomes came out at 0.75 where 0.5 was predicted: the residual is logit(0.75) = log 3
        s.observe_predictions(np.array([0.5, 0.5]), np.array([0.5, 1.0]))
    assert plain.offset == 0.0 and plain._predict(np.array([0, 1]), 1).tolist() == [0.5, 0.5]
    assert ahead.offset == pytest.approx(0.2 * math.log(3))
    expected = 1 / (1 + math.exp(-0.2 * math.log(3)))
    np.testing.assert_allclose(ahead._predict(np.array([0, 1]), 1), [expected, expected])
